# Copyright (c) mmgem contributors. All rights reserved.
# Reference: mmdet's DINO, unchanged, on mini-UODB (same data, schedule and
# runtime as dino-tiny_r18_mini-uodb.py). Its losses treat every other
# domain's classes as negatives of an image, its denoising noise and top-k
# use all classes, and its test predictions are not restricted to the
# image's domain: it shows what the dataset-aware training of the
# comparison's rows changes. Not one of the compared rows.
#
#   mim train mmdet configs/gem/dino-plain-tiny_r18_mini-uodb.py
_base_ = './dino-tiny_r18_mini-uodb.py'

model = dict(_delete_=True, **_base_.dino_model)
