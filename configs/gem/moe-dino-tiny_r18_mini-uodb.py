# Copyright (c) mmgem contributors. All rights reserved.
# Vanilla MoE (DINO-MoE of the DAMEX paper) on mini-UODB: learned noisy
# top-1 token routers (gate noise 1.0, capacity factor 1.25) with Tutel's
# importance + load balancing loss (weight 0.1, mean over the MoE layers). It needs no plan, so no
# GEMPlannerHook; the label offsets come from the config.
_base_ = './dino-tiny_r18_mini-uodb.py'

model = dict(
    type='GEMDINO',
    router=dict(type='Top1Router'),
    num_experts=4,
    num_datasets=6,
    moe_layers=(0, 2),
    gate_noise=1.0,
    aux_loss_weight=0.1,
    capacity_factor=1.25,
    label_offsets={{_base_.label_offsets}})

# dataset x expert routing heat maps at every validation (visualizer)
custom_hooks = [dict(type='MoERoutingVisualizationHook', score_thr=0.3)]
