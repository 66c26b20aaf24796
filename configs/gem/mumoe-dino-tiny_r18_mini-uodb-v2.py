# Copyright (c) mmgem contributors. All rights reserved.
# moe-dino-tiny_r18_mini-uodb-v2.py with μMoE (CP rank matched to the 4 FFN experts): only the
# router differs.
_base_ = './moe-dino-tiny_r18_mini-uodb-v2.py'

model = dict(router=dict(type='MuMoERouter'))
