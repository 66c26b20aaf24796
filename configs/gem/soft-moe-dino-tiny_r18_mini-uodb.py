# Copyright (c) mmgem contributors. All rights reserved.
# moe-dino-tiny_r18_mini-uodb.py with Soft MoE (mmgem/models/routers/README.md): only the
# router differs. 25 slots per expert: 4 experts x 25 = the 100 matching queries (vmoe's
# capacity factor 1); denoising groups are separate sequences sharing the slots' parameters.
_base_ = './moe-dino-tiny_r18_mini-uodb.py'

model = dict(router=dict(type='SoftMoERouter', num_slots=25))
