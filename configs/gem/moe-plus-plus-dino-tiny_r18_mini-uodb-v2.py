# Copyright (c) mmgem contributors. All rights reserved.
# moe-dino-tiny_r18_mini-uodb-v2.py with MoE++ (the FFN experts plus 2 constant, 1 copy
# and 1 zero expert, top-2, gating residuals; mmgem/models/routers/README.md): only the router
# differs.
_base_ = './moe-dino-tiny_r18_mini-uodb-v2.py'

model = dict(router=dict(type='MoEPlusPlusRouter'))
