# Copyright (c) mmgem contributors. All rights reserved.
# moe-dino-tiny_r18_mini-uodb-v2.py with Soft MoE (25 slots per expert): only the router differs.
_base_ = './moe-dino-tiny_r18_mini-uodb-v2.py'

model = dict(router=dict(type='SoftMoERouter', num_slots=25))
