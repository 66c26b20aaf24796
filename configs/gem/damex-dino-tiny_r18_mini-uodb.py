# Copyright (c) mmgem contributors. All rights reserved.
# DAMEX on mini-UODB: learned top-1 token routers (gate noise 1.0, capacity
# factor 1.25, as DAMEX) trained with the cross-entropy to the expert each
# token's dataset is mapped to (weight 0.1, mean over the MoE layers). The
# map is the GEM plan (GEMPlannerHook); the router alone routes at test time.
_base_ = './gem-dino-tiny_r18_mini-uodb.py'

model = dict(
    router=dict(type='DAMEXRouter'),
    aux_loss_weight=0.1,
    capacity_factor=1.25)
