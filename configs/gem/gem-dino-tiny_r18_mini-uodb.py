# Copyright (c) mmgem contributors. All rights reserved.
# GEM-DINO on mini-UODB: the tiny DINO with 4-expert MoE FFNs in decoder
# layers 0 and 2, routed by the global expert plan that GEMPlannerHook
# solves before training (LP over the datasets' loads and similarities,
# rounded to a capacity-aware map). No router, no auxiliary loss.
#
#   mim train mmdet configs/gem/gem-dino-tiny_r18_mini-uodb.py
_base_ = './dino-tiny_r18_mini-uodb.py'

model = dict(
    type='GEMDINO',
    router=dict(type='GEMRouter'),
    num_experts=4,
    num_datasets=6,
    moe_layers=(0, 2),
    label_offsets={{_base_.label_offsets}})

custom_hooks = [
    dict(
        type='GEMPlannerHook',
        capacity_factor=1.25,
        beta=0.0,
        similarity=dict(sources=dict(labels=0.5, features=0.5), prior=None),
        num_probe_images=8,
        solver='ECOS'),
    # dataset x expert routing heat maps at every validation (visualizer)
    dict(type='MoERoutingVisualizationHook', score_thr=0.3)
]
