# Copyright (c) mmgem contributors. All rights reserved.
# GEM-DINO-4scale R-50 on UODB: 8-expert MoE FFNs in decoder layers 0, 2
# and 4, every image routed by the global expert plan that GEMPlannerHook
# solves before training (LP + capacity-aware rounding; gem_plan.json and
# gem_plan.png in the work dir, the plan saved in every checkpoint).
#
#   bash tools/dist_train.sh configs/gem/gem-dino-4scale_r50_8xb2-36e_uodb.py 8
#
# Upcycling: set model.upcycle_from='<dense DINO UODB checkpoint>' to start
# every expert from the dense model's decoder FFN (all other weights are
# loaded from it as well).
_base_ = './dino-4scale_r50_8xb2-36e_uodb.py'

model = dict(
    type='GEMDINO',
    router=dict(type='GEMRouter'),
    num_experts=8,
    num_datasets=11,
    moe_layers=(0, 2, 4),
    label_offsets={{_base_.label_offsets}},
    upcycle_from=None)

custom_hooks = [
    dict(
        type='GEMPlannerHook',
        capacity_factor=1.25,
        beta=0.0,
        similarity=dict(sources=dict(labels=0.5, features=0.5), prior=None),
        num_probe_images=8,
        solver='ECOS'),
    # exact resume: random states and the data position in every checkpoint
    dict(type='ResumeStateHook')
]
