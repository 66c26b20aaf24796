# Copyright (c) mmgem contributors. All rights reserved.
# Debug override of the full-UODB GEM config (gem-dino-4scale_r50_8xb2-36e_uodb.py):
# the same 11 datasets, sampler, label space, dataset-aware losses, GEM planner hook
# and test protocol, but a tiny model (ResNet-18 from scratch: nothing is downloaded;
# 2 encoder + 3 decoder layers with MoE FFNs in decoder layers 0 and 2, FFN 512),
# 30 queries (two-stage DINO picks its queries among the encoder's tokens, and an
# image of about 160 px has a few hundred; the R-50 config's 900 stop it with
# "selected index k out of range"), images at about 1/8 of the full size, 2
# iterations and a validation after them. It checks a data tree and a set-up
# end to end on CPU in about a minute (trained on tests' native fixture tree):
#
#   python tools/dataset_converters/uodb2coco.py data/uodb_src --from native --out data/uodb
#   python tools/train.py configs/gem/gem-dino-4scale_r18_debug-2it_uodb.py \
#       --cfg-options train_dataloader.dataset.data_root=data/uodb/ \
#       val_dataloader.dataset.data_root=data/uodb/ test_dataloader.dataset.data_root=data/uodb/
#
# The other full-UODB configs (dense DINO, MoE, DAMEX) take the same model,
# data and schedule keys below as an override of their own.
_base_ = './gem-dino-4scale_r50_8xb2-36e_uodb.py'

model = dict(
    num_queries=30,
    backbone=dict(
        depth=18,
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[128, 256, 512]),
    encoder=dict(num_layers=2, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=512))),
    decoder=dict(num_layers=3, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=512))),
    moe_layers=(0, 2),  # the decoder has 3 layers
    test_cfg=dict(max_per_img=30))

# smaller images, one random resize (these lists replace the full config's)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoiceResize', scales=[(60, 166), (80, 166), (100, 166)],
         keep_ratio=True),
    dict(type='PackDetInputs', meta_keys={{_base_.uodb_train_meta_keys}})
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(166, 100), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys={{_base_.uodb_test_meta_keys}})
]
train_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2, val_interval=2)
param_scheduler = []
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=2), logger=dict(interval=1))
log_processor = dict(by_epoch=False)
