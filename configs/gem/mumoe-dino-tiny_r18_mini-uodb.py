# Copyright (c) mmgem contributors. All rights reserved.
# moe-dino-tiny_r18_mini-uodb.py with μMoE (CP-μMoE, entmax-1.5 gates, GELU between the two
# factorised layers; mmgem/models/routers/README.md): only the router differs. The router owns
# the experts' CP factors; rank=None matches the parameters of the 4 FFN experts.
_base_ = './moe-dino-tiny_r18_mini-uodb.py'

model = dict(router=dict(type='MuMoERouter'))
