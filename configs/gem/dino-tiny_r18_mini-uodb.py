# Copyright (c) mmgem contributors. All rights reserved.
# Dense DINO (mixed training) on mini-UODB: the tiny DINO of
# configs/_base_/models/dino_tiny.py on all six mini-UODB domains at once,
# one concatenated label space, evaluated per domain. This is the "DINO
# (mixed)" row of the comparison: GEMDINO without MoE layers, so it trains
# with the same dataset-aware losses and is tested under the same protocol
# as the GEM / DAMEX / MoE configs, which inherit it and change only the
# MoE part. dino-plain-tiny_r18_mini-uodb.py trains mmdet's DINO unchanged.
#
#   python tools/misc/make_mini_uodb.py --out data/mini_uodb --scale small
#   mim train mmdet configs/gem/dino-tiny_r18_mini-uodb.py
_base_ = [
    '../_base_/models/dino_tiny.py', '../_base_/datasets/mini_uodb.py',
    'mmdet::_base_/default_runtime.py', '../_base_/models/gem_dino_dense.py'
]
custom_imports = dict(imports=['mmgem'], allow_failed_imports=False)
# mmgem's Runner and CheckpointHook (README, "Safety"): checkpoints are read
# with weights_only=True and an allow-list, written atomically, and
# auto-resume skips an incomplete last checkpoint
runner_type = 'GEMRunner'
# per-dataset folders and unprefixed class names in drawn images (all datasets
# name their images 000000.jpg, ...): browse_dataset.py, test.py --show-dir
visualizer = dict(type='UODBLocalVisualizer')

# 4 + 3 + 3 + 3 + 4 + 1 classes of natural, aerial, signs, icons, clipart,
# medical (uodb_classes of the data base; tests/models/test_configs.py
# checks both against it).
num_classes = 18
label_offsets = [0, 4, 7, 10, 13, 17, 18]
# mmdet's DINO on this label space, which dino-plain-tiny_r18_mini-uodb.py
# trains as it is
dino_model = dict(
    _base_.model, bbox_head=dict(_base_.model.bbox_head, num_classes=num_classes))
model = dict(
    _base_.gem_dense_model,
    num_datasets=6,
    label_offsets=label_offsets,
    dataset_classes=_base_.uodb_dataset_classes,
    bbox_head=dict(type='DatasetAwareDINOHead', num_classes=num_classes))

# a few hundred iterations: CPU-sized, enough for the tiny model to learn
max_iters = 400
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.1,
        by_epoch=False,
        begin=0,
        end=50),
    dict(
        type='MultiStepLR',
        by_epoch=False,
        begin=0,
        end=max_iters,
        milestones=[300],
        gamma=0.1)
]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(
        type='GEMCheckpointHook', by_epoch=False, interval=max_iters,
        max_keep_ckpts=1))
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
