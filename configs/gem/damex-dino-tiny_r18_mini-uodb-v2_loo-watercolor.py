# Copyright (c) mmgem contributors. All rights reserved.
# damex-dino-tiny_r18_mini-uodb-v2_dataset-unknown.py with watercolor as an unseen
# domain (leave-one-domain-out, configs/_base_/datasets/mini_uodb_v2_loo-watercolor.py):
# trained on the ten other v2 domains, tested on watercolor alone with the
# dataset unknown (labels by class name in the ten's unified space). It
# resolves to that dataset-unknown config but for the held-out domain's keys
# (tests/tools/test_loo_configs.py); the base says why it is built beside the
# v1 config rather than on that one.
#
#   python tools/benchmark/mini_uodb_loo.py --holdout watercolor
_base_ = ['./damex-dino-tiny_r18_mini-uodb.py', '../_base_/datasets/mini_uodb_v2_loo-watercolor.py']

train_dataloader = {{_base_.mini_uodb_v2_loo_train_dataloader}}
val_dataloader = test_dataloader = {{_base_.mini_uodb_v2_loo_test_dataloader}}
model = {{_base_.mini_uodb_v2_loo_model}}
val_evaluator = test_evaluator = {{_base_.mini_uodb_v2_loo_evaluator}}
