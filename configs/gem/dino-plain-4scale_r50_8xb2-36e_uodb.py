# Copyright (c) mmgem contributors. All rights reserved.
# Reference: mmdet's DINO-4scale R-50, unchanged, on UODB (same data,
# schedule and runtime as dino-4scale_r50_8xb2-36e_uodb.py). Its losses treat
# every other dataset's classes as negatives of an image, its denoising noise
# and top-k use all 167 classes, and its test predictions are not restricted
# to the image's dataset: it shows what the dataset-aware training of the
# comparison's rows changes. Not one of the compared rows.
#
#   bash tools/dist_train.sh configs/gem/dino-plain-4scale_r50_8xb2-36e_uodb.py 8
_base_ = './dino-4scale_r50_8xb2-36e_uodb.py'

model = dict(_delete_=True, **_base_.dino_model)
