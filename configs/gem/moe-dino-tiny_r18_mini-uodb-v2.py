# Copyright (c) mmgem contributors. All rights reserved.
# moe-dino-tiny_r18_mini-uodb.py on mini-UODB v2 (eleven domains standing for UODB's
# eleven datasets, 56 classes): only the data and the label space differ.
#
#   python tools/misc/make_mini_uodb.py --version 2 --scale small
#   python tools/train.py configs/gem/moe-dino-tiny_r18_mini-uodb-v2.py
_base_ = ['./moe-dino-tiny_r18_mini-uodb.py', '../_base_/datasets/mini_uodb_v2.py']

train_dataloader = {{_base_.mini_uodb_v2_train_dataloader}}
val_dataloader = {{_base_.mini_uodb_v2_test_dataloader}}
test_dataloader = {{_base_.mini_uodb_v2_test_dataloader}}
model = {{_base_.mini_uodb_v2_model}}
