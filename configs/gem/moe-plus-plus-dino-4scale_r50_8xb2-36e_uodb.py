# Copyright (c) mmgem contributors. All rights reserved.
# moe-dino-4scale_r50_8xb2-36e_uodb.py with MoE++ (the FFN experts plus 2 constant, 1 copy
# and 1 zero expert, top-2, gating residuals; mmgem/models/routers/README.md): only the router
# differs.
_base_ = './moe-dino-4scale_r50_8xb2-36e_uodb.py'

model = dict(router=dict(type='MoEPlusPlusRouter'))
