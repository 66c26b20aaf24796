# Copyright (c) mmgem contributors. All rights reserved.
# Few-shot scenario: GEM-DINO on UODB where KITTI keeps only its first 50
# training images (the other ten datasets, Kitchen with its few hundred
# images among them, are unchanged). The planner sees KITTI's small load, so
# with beta=0 it still gets an expert of its own or a group of similar
# datasets instead of being merged into a large neighbour.
_base_ = '../gem-dino-4scale_r50_8xb2-36e_uodb.py'

train_dataloader = dict(dataset=dict(dataset_indices=dict(kitti=50)))
