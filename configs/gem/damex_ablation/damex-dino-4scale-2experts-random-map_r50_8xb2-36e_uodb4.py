# Copyright (c) mmgem contributors. All rights reserved.
# Map ablation, random map: as the human-prior map, but with the fixed
# random grouping {clipart, dota}, {kitti, voc} (each group mixes a VOC-class
# dataset with an unrelated one).
_base_ = './damex-dino-4scale-2experts_r50_8xb2-36e_uodb4.py'

custom_hooks = [
    dict(
        type='GEMPlannerHook',
        capacity_factor=None,
        beta=0.0,
        similarity=dict(
            sources=dict(prior=1.0), prior=[['clipart', 'dota'],
                                            ['kitti', 'voc']]),
        solver='ECOS'),
    # exact resume: random states and the data position in every checkpoint
    dict(type='ResumeStateHook')
]
