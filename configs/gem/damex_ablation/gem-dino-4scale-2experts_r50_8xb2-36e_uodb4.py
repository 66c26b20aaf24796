# Copyright (c) mmgem contributors. All rights reserved.
# Ablation: GEM-DINO with 2 experts on Clipart, DOTA, KITTI, VOC.
_base_ = './gem-dino-4scale-4experts_r50_8xb2-36e_uodb4.py'

model = dict(num_experts=2)
