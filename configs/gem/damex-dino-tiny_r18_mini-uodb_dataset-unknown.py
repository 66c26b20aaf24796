# Copyright (c) mmgem contributors. All rights reserved.
# damex-dino-tiny_r18_mini-uodb.py tested with the dataset of each image unknown
# (the dataset-unknown protocol): no dataset decision on the labels -- the
# scores of same-named classes are merged by their maximum and the detections
# are labelled in the unified space by class name; UODBMetric maps every
# predicted name to each dataset's class of that name (names a dataset does
# not annotate are dropped). GEM's domain classifier only picks the plan row
# that routes the image. Training is damex-dino-tiny_r18_mini-uodb.py's.
_base_ = './damex-dino-tiny_r18_mini-uodb.py'

model = dict(test_dataset_known=False)
val_evaluator = dict(label_mapping='name')
test_evaluator = dict(label_mapping='name')
