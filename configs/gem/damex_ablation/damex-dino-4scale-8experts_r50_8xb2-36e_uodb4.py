# Copyright (c) mmgem contributors. All rights reserved.
# Ablation: DAMEX (learned top-1 routers + cross-entropy to the map, weight
# 0.1, capacity factor 1.25) with 8 experts on Clipart, DOTA, KITTI, VOC.
# The map is GEM's plan (labels + features similarity).
_base_ = './gem-dino-4scale-8experts_r50_8xb2-36e_uodb4.py'

model = dict(router=dict(type='DAMEXRouter'))
