# Copyright (c) mmgem contributors. All rights reserved.
# Dense DINO-4scale R-50 trained on all 11 UODB datasets at once (the
# "DINO (mixed)" row of DAMEX Table 1): DAMEX's schedule, 36 epochs,
# AdamW lr 1.4e-4, 8 GPUs x 2 images. The GEM / DAMEX / MoE configs inherit
# this one and change only the model (and add the planner hook).
#
#   bash tools/dist_train.sh configs/gem/dino-4scale_r50_8xb2-36e_uodb.py 8
#
# The model is mmdet's DINO config's (see ../_base_/models/dino-4scale_r50.py
# for why it is not inherited from mmdet::dino/ directly); data is
# ../_base_/datasets/uodb.py (DINO's augmentation, DAMEX's splits).
_base_ = [
    '../_base_/models/dino-4scale_r50.py', '../_base_/datasets/uodb.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmgem'], allow_failed_imports=False)

# kitti 3, voc 20, widerface 1, lisa 4, kitchen 11, coco 80, dota 15,
# deeplesion 1, comic 6, clipart 20, watercolor 6 (uodb_classes of the data
# base; tests/models/test_configs.py checks both against it)
num_classes = 167
label_offsets = [0, 3, 23, 24, 28, 39, 119, 134, 135, 141, 161, 167]
model = dict(bbox_head=dict(num_classes=num_classes))

# as mmdet's DINO config, with DAMEX's 36 epochs and lr
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1.4e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
max_epochs = 36
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[30],
        gamma=0.1)
]
# NOTE: `auto_scale_lr` is for automatically scaling LR,
# USER SHOULD NOT CHANGE ITS VALUES.
# base_batch_size = (8 GPUs) x (2 samples per GPU)
auto_scale_lr = dict(base_batch_size=16)
