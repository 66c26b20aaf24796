# Copyright (c) mmgem contributors. All rights reserved.
# Map ablation, human prior: DAMEX with 2 experts on Clipart, DOTA, KITTI,
# VOC, the map putting the datasets that share VOC's classes together
# ({clipart, voc}) and the two others together ({dota, kitti}); no capacity
# limit, so the planner reproduces exactly these groups.
_base_ = './damex-dino-4scale-2experts_r50_8xb2-36e_uodb4.py'

custom_hooks = [
    dict(
        type='GEMPlannerHook',
        capacity_factor=None,
        beta=0.0,
        similarity=dict(
            sources=dict(prior=1.0), prior=[['clipart', 'voc'],
                                            ['dota', 'kitti']]),
        solver='ECOS'),
    # exact resume: random states and the data position in every checkpoint
    dict(type='ResumeStateHook')
]
