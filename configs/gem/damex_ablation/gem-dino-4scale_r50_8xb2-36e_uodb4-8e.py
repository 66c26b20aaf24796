# Copyright (c) mmgem contributors. All rights reserved.
# Ablation: GEM-DINO with 8 experts on Clipart, DOTA, KITTI, VOC.
_base_ = './gem-dino-4scale_r50_8xb2-36e_uodb4-4e.py'

model = dict(num_experts=8)
