# Copyright (c) mmgem contributors. All rights reserved.
# The dense row of every comparison, and what all rows share: GEMDINO
# without MoE layers, trained dataset-aware and tested under one protocol
# (README: "Label space and dataset-aware training", "Test protocol"). The
# dense configs put it on top of a DINO model base (mmdet's DINO or
# dino_tiny.py) with their label space:
#
#   model = dict(_base_.gem_dense_model, num_datasets=K, label_offsets=...,
#                dataset_classes=[...],  # the unified label space by name
#                bbox_head=dict(type='DatasetAwareDINOHead', num_classes=C))
#
# and the MoE / DAMEX / GEM configs inherit a dense config, changing only
# the MoE part.
gem_dense_model = dict(
    type='GEMDINO',
    moe_layers=(),  # dense: no MoE layer (routing settings have no effect)
    # each image's classification losses, denoising label noise and
    # two-stage top-k see only its own dataset's classes
    dataset_aware=True,
    bbox_head=dict(type='DatasetAwareDINOHead'),
    # test protocol: the dataset of a test image is known (UODB's
    # per-dataset protocol) and its predictions keep its classes; with
    # test_dataset_known=False (the dataset-unknown protocol, the
    # *_dataset-unknown configs) predictions are labelled in the unified
    # space by class name (test_label_space) and scored with
    # UODBMetric(label_mapping='name'); GEM routes by the domain classifier
    test_dataset_known=True,
    restrict_test_labels=True,
    # predicts the dataset of each image (uodb/domain_acc) on detached
    # encoder features: no row gets an extra training signal from it
    domain_classifier=dict(
        type='DomainClassifier', hidden_dims=256, detach_input=True),
    domain_loss_weight=0.1)
