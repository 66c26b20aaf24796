# Copyright (c) mmgem contributors. All rights reserved.
# Vanilla MoE DINO ("DINO-MoE" of DAMEX Table 1) on UODB: learned noisy
# top-1 token routers in decoder layers 0, 2, 4 (8 experts, gate noise 1.0,
# capacity factor 1.25, overflow kept by gate score) with the importance +
# load balancing loss as DAMEX's code runs it (Tutel's load_importance_loss
# on the foreground tokens, mean over the MoE layers, weight 0.1;
# moe_cfg=dict(balance_loss='vmoe') gives the paper's eq. 4-8 instead). No
# plan is needed, so no planner hook.
_base_ = './dino-4scale_r50_8xb2-36e_uodb.py'

model = dict(
    type='GEMDINO',
    router=dict(type='Top1Router'),
    num_experts=8,
    num_datasets=11,
    moe_layers=(0, 2, 4),
    gate_noise=1.0,
    aux_loss_weight=0.1,
    capacity_factor=1.25,
    label_offsets={{_base_.label_offsets}})
