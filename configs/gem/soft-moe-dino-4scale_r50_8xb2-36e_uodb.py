# Copyright (c) mmgem contributors. All rights reserved.
# moe-dino-4scale_r50_8xb2-36e_uodb.py with Soft MoE: only the router differs. 112 slots per
# expert: 8 x 112 ~ the 900 matching queries (vmoe's capacity factor 1).
_base_ = './moe-dino-4scale_r50_8xb2-36e_uodb.py'

model = dict(router=dict(type='SoftMoERouter', num_slots=112))
