# Copyright (c) mmgem contributors. All rights reserved.
# DAMEX (Jain et al., NeurIPS 2023) on UODB in GEM's code: learned top-1
# token routers in decoder layers 0, 2, 4 (8 experts) trained with the
# cross-entropy to DAMEX's hand-made dataset-to-expert map (weight 0.1, mean
# over the MoE layers), with DAMEX's Tutel settings as MoEFFN's defaults:
# gate noise 1.0, capacity factor 1.25, overflow kept by gate score
# (batch-prioritized routing). The map is built by GEMPlannerHook from DAMEX's groups as a
# prior with no capacity limit, which reproduces DAMEX's assignment up to a
# permutation of experts. The router alone routes at test time.
_base_ = './gem-dino-4scale_r50_8xb2-36e_uodb.py'

model = dict(
    router=dict(type='DAMEXRouter'),
    aux_loss_weight=0.1,
    capacity_factor=1.25)

damex_groups = [['clipart'], ['coco', 'voc', 'comic'], ['deeplesion'],
                ['dota'], ['kitchen'], ['kitti', 'lisa'], ['watercolor'],
                ['widerface']]
custom_hooks = [
    dict(
        type='GEMPlannerHook',
        capacity_factor=None,
        beta=0.0,
        similarity=dict(sources=dict(prior=1.0), prior=damex_groups),
        solver='ECOS'),
    # exact resume: random states and the data position in every checkpoint
    dict(type='ResumeStateHook')
]
