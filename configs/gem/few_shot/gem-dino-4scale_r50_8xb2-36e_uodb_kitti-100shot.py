# Copyright (c) mmgem contributors. All rights reserved.
# Few-shot scenario: GEM-DINO on UODB where KITTI keeps only its first 100
# training images (the other ten datasets, Kitchen with its few hundred
# images among them, are unchanged). The planner sees KITTI's small load, so
# with beta=0 it still gets an expert of its own or a group of similar
# datasets instead of being merged into a large neighbour.
_base_ = '../gem-dino-4scale_r50_8xb2-36e_uodb.py'

from mmgem.datasets.uodb_meta import (UODB_CLASSES, UODB_DATASETS,  # noqa
                                      UODB_SPLITS)

kitti_shots = 100
train_dataloader = dict(
    dataset=dict(datasets=[
        dict(
            type='CocoDataset',
            ann_file=f'{name}/annotations/{UODB_SPLITS[name][0]}.json',
            data_prefix=dict(img=f'{name}/JPEGImages/'),
            metainfo=dict(classes=UODB_CLASSES[name]),
            **(dict(indices=kitti_shots) if name == 'kitti' else {}))
        for name in UODB_DATASETS
    ]))
del UODB_CLASSES, UODB_DATASETS, UODB_SPLITS
