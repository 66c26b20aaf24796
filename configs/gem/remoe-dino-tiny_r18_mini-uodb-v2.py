# Copyright (c) mmgem contributors. All rights reserved.
# moe-dino-tiny_r18_mini-uodb-v2.py with ReMoE's ReLU router (adaptive L1 towards
# 1 active expert per token, mmgem/models/routers/README.md): only the router differs.
_base_ = './moe-dino-tiny_r18_mini-uodb-v2.py'

model = dict(router=dict(type='ReMoERouter', num_active=1))
