# Copyright (c) mmgem contributors. All rights reserved.
# moe-dino-4scale_r50_8xb2-36e_uodb.py with μMoE (CP rank matched to the 8 FFN experts): only
# the router differs.
_base_ = './moe-dino-4scale_r50_8xb2-36e_uodb.py'

model = dict(router=dict(type='MuMoERouter'))
