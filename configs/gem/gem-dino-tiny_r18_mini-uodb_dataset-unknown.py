# Copyright (c) mmgem contributors. All rights reserved.
# GEM-DINO on mini-UODB tested without the dataset of each image (DAMEX's
# protocol): the domain classifier predicts it, and the image is routed and
# label-restricted by the prediction. Training is gem-dino-tiny_r18_mini-uodb.py's.
_base_ = './gem-dino-tiny_r18_mini-uodb.py'

model = dict(test_dataset_known=False)
