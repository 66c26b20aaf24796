# Copyright (c) mmgem contributors. All rights reserved.
# Few-shot scenario: DAMEX (its hand-made map) on UODB where KITTI keeps only its first 50
# training images (the other ten datasets, Kitchen with its few hundred
# images among them, are unchanged); the baseline for the GEM config of the
# same name.
_base_ = '../damex-dino-4scale_r50_8xb2-36e_uodb.py'

train_dataloader = dict(dataset=dict(dataset_indices=dict(kitti=50)))
