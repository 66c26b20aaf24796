# Copyright (c) mmgem contributors. All rights reserved.
# mini-UODB v2 leave-one-domain-out (unseen domain, the GEM paper's
# out-of-distribution domains): train on ten domains without the held-out
# one, test on the held-out domain alone with the dataset unknown.
#
# Use it as mini_uodb_v2.py (a second base beside a v1 tiny config, every
# name prefixed `mini_uodb_v2_loo_`):
#   train_dataloader = {{_base_.mini_uodb_v2_loo_train_dataloader}}
#   val_dataloader = test_dataloader = {{_base_.mini_uodb_v2_loo_test_dataloader}}
#   model = {{_base_.mini_uodb_v2_loo_model}}
#   val_evaluator = test_evaluator = {{_base_.mini_uodb_v2_loo_evaluator}}
# The result is the method's *-v2_dataset-unknown.py config with these keys
# changed (tests/tools/test_loo_configs.py). It cannot inherit that config:
# this file needs mini_uodb_v2.py's names and classes, that config inherits
# them too, and MMEngine refuses two bases that define the same keys; and
# these keys, part of the configs' fingerprints, stay so that saved cells do.
#
# - training: UODBDataset(select=the ten) never builds the held-out domain, so
#   the model's dataset count, label space (offsets, classes), domain
#   classifier and GEM plan cover the ten (dataset ids 0..9 in this order);
# - test: UODBDataset(select=[held-out]); its samples' dataset_id (0) indexes
#   the *test* dataset only. The model is tested with test_dataset_known=False,
#   so it never reads that id: GEM routes each image by the domain
#   classifier's prediction (one of the ten: the nearest known domain) and
#   labels boxes in the unified space of the ten by class name; UODBMetric
#   reads them in the model's space (model_dataset_names / _classes) and maps
#   them to the held-out domain's classes by name (names it does not share
#   with a training domain never score).
# Another held-out domain: tools/benchmark/mini_uodb_loo.py --holdout <domain>
# applies the same change as config overrides (loo_overrides there; a test
# checks the two agree for watercolor).
_base_ = './mini_uodb_v2.py'

mini_uodb_v2_loo_holdout = 'watercolor'
mini_uodb_v2_loo_train_names = [
    n for n in _base_.mini_uodb_v2_dataset_names if n != mini_uodb_v2_loo_holdout
]
mini_uodb_v2_loo_train_classes = [
    _base_.mini_uodb_v2_classes[n] for n in mini_uodb_v2_loo_train_names
]
mini_uodb_v2_loo_label_offsets = [
    sum(len(c) for c in mini_uodb_v2_loo_train_classes[:i])
    for i in range(len(mini_uodb_v2_loo_train_names) + 1)
]

mini_uodb_v2_loo_model = dict(
    _base_.mini_uodb_v2_model,
    num_datasets=len(mini_uodb_v2_loo_train_names),
    label_offsets=mini_uodb_v2_loo_label_offsets,
    dataset_classes=mini_uodb_v2_loo_train_classes,
    bbox_head=dict(num_classes=mini_uodb_v2_loo_label_offsets[-1]),
    test_dataset_known=False)
mini_uodb_v2_loo_train_dataloader = dict(
    dataset=dict(_base_.mini_uodb_v2_train_dataloader.dataset,
                 select=mini_uodb_v2_loo_train_names))
mini_uodb_v2_loo_test_dataloader = dict(
    dataset=dict(_base_.mini_uodb_v2_test_dataloader.dataset,
                 select=[mini_uodb_v2_loo_holdout]))
mini_uodb_v2_loo_evaluator = dict(
    label_mapping='name',
    model_dataset_names=mini_uodb_v2_loo_train_names,
    model_dataset_classes=mini_uodb_v2_loo_train_classes)
