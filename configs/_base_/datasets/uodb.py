# Copyright (c) mmgem contributors. All rights reserved.
# UODB: the 11 datasets of the Universal Object Detection Benchmark, each
# with its own label set, trained together and evaluated one by one.
#
# Layout: data/uodb/<name>/annotations/<split>.json and <name>/JPEGImages/,
# written from the 11 datasets' own downloads by
#   python tools/dataset_converters/uodb2coco.py data/uodb_src --from native \
#       --out data/uodb --check
# (see the README's Data section: what to download, how each dataset is
# split), or from UODB's VOC-style layout (<name>/Annotations/*.xml,
# JPEGImages/, ImageSets/Main/*.txt) by
#   python tools/dataset_converters/uodb2coco.py data/uodb
#
# Splits are DAMEX's: clipart, comic, watercolor, kitchen, lisa train/test;
# deeplesion, kitti trainval/test; voc 07+12 trainval / 07 test; dota,
# widerface train/val; coco 2014 valminusminival / minival. The names,
# classes and splits mirror mmgem/datasets/uodb_meta.py (a test checks
# that they agree); dataset order is DAMEX Table 1's column order.
#
# Augmentation is DINO's (mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py),
# batch 2 per GPU.
#
# Every name here starts with `uodb_`, so this file can be a second base
# beside `mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py` (mmengine refuses
# bases that define the same keys). A config takes the data over with
#   train_dataloader = {{_base_.uodb_train_dataloader}}
# and likewise val/test dataloaders and evaluators; each carries
# `_delete_=True`, so it replaces COCO's instead of merging into it
# (see configs/gem/dino-4scale_r50_8xb2-36e_uodb.py).
uodb_dataset_type = 'UODBDataset'
uodb_data_root = 'data/uodb/'
uodb_backend_args = None

uodb_dataset_names = ['kitti', 'voc', 'widerface', 'lisa', 'kitchen', 'coco', 'dota',
                      'deeplesion', 'comic', 'clipart', 'watercolor']
uodb_classes = dict(
    kitti=('pedestrian', 'cyclist', 'car'),
    voc=('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
         'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
         'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor'),
    widerface=('face',),
    lisa=('stop', 'speedlimit', 'warning', 'noturn'),
    kitchen=('coca_cola_glass_bottle', 'coffee_mate_french_vanilla',
             'honey_bunches_of_oats_honey_roasted', 'hunts_sauce',
             'mahatma_rice',
             'nature_valley_soft_baked_oatmeal_squares_cinnamon_brown_sugar',
             'nature_valley_sweet_and_salty_nut_almond', 'palmolive_orange',
             'pop_secret_light_butter', 'pringles_bbq', 'red_bull'),
    coco=('person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train',
          'truck', 'boat', 'traffic light', 'fire hydrant', 'stop sign',
          'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep',
          'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
          'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis',
          'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove',
          'skateboard', 'surfboard', 'tennis racket', 'bottle', 'wine glass',
          'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
          'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza',
          'donut', 'cake', 'chair', 'couch', 'potted plant', 'bed',
          'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
          'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
          'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear',
          'hair drier', 'toothbrush'),
    dota=('plane', 'baseball-diamond', 'bridge', 'ground-track-field',
          'small-vehicle', 'large-vehicle', 'ship', 'tennis-court',
          'basketball-court', 'storage-tank', 'soccer-ball-field',
          'roundabout', 'harbor', 'swimming-pool', 'helicopter'),
    deeplesion=('lesion',),
    comic=('bicycle', 'bird', 'car', 'cat', 'dog', 'person'),
    clipart=('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car',
             'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike',
             'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor'),
    watercolor=('bicycle', 'bird', 'car', 'cat', 'dog', 'person'),
)
uodb_splits = dict(
    kitti=('trainval', 'test'),
    voc=('trainval', 'test'),
    widerface=('train', 'val'),
    lisa=('train', 'test'),
    kitchen=('train', 'test'),
    coco=('valminusminival', 'minival'),
    dota=('train', 'val'),
    deeplesion=('trainval', 'test'),
    comic=('train', 'test'),
    clipart=('train', 'test'),
    watercolor=('train', 'test'),
)
# Synonyms of the unified label space by class name (normalised names: lower
# case, '_'/'-' as spaces), which the dataset-unknown protocol reads a key as
# its value: VOC's names as COCO's. Edit freely; the model
# (label_merge_table) and UODBMetric (merge_table) must get the same table,
# and the merges are logged once.
uodb_label_merge_table = dict(
    aeroplane='airplane', diningtable='dining table', motorbike='motorcycle',
    pottedplant='potted plant', sofa='couch', tvmonitor='tv')
# the class names of every dataset in id order: the models' unified label space
uodb_dataset_classes = [uodb_classes[n] for n in uodb_dataset_names]
uodb_num_classes = sum(len(uodb_classes[n]) for n in uodb_dataset_names)

# what the model reads from DetDataSample.metainfo
uodb_train_meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor', 'flip', 'flip_direction',
                        'dataset_id', 'dataset_name')
uodb_test_meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape',
                       'scale_factor', 'dataset_id', 'dataset_name')

uodb_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=uodb_backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(480, 1333), (512, 1333), (544, 1333), (576, 1333),
                            (608, 1333), (640, 1333), (672, 1333), (704, 1333),
                            (736, 1333), (768, 1333), (800, 1333)],
                    keep_ratio=True)
            ],
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(400, 4200), (500, 4200), (600, 4200)],
                    keep_ratio=True),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True),
                dict(
                    type='RandomChoiceResize',
                    scales=[(480, 1333), (512, 1333), (544, 1333), (576, 1333),
                            (608, 1333), (640, 1333), (672, 1333), (704, 1333),
                            (736, 1333), (768, 1333), (800, 1333)],
                    keep_ratio=True)
            ]
        ]),
    dict(type='PackDetInputs', meta_keys=uodb_train_meta_keys)
]
uodb_test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=uodb_backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=uodb_test_meta_keys)
]

uodb_train_datasets = [
    dict(
        type='CocoDataset',
        ann_file=f'{name}/annotations/{uodb_splits[name][0]}.json',
        data_prefix=dict(img=f'{name}/JPEGImages/'),
        metainfo=dict(classes=uodb_classes[name]))
    for name in uodb_dataset_names
]
uodb_test_datasets = [
    dict(
        type='CocoDataset',
        ann_file=f'{name}/annotations/{uodb_splits[name][1]}.json',
        data_prefix=dict(img=f'{name}/JPEGImages/'),
        metainfo=dict(classes=uodb_classes[name]))
    for name in uodb_dataset_names
]

uodb_train_dataloader = dict(
    _delete_=True,
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='UODBSampler', mode='proportional', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=uodb_dataset_type,
        data_root=uodb_data_root,
        datasets=uodb_train_datasets,
        dataset_names=uodb_dataset_names,
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=uodb_train_pipeline,
        backend_args=uodb_backend_args))
uodb_val_dataloader = dict(
    _delete_=True,
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=uodb_dataset_type,
        data_root=uodb_data_root,
        datasets=uodb_test_datasets,
        dataset_names=uodb_dataset_names,
        test_mode=True,
        pipeline=uodb_test_pipeline,
        backend_args=uodb_backend_args))
uodb_test_dataloader = uodb_val_dataloader

uodb_val_evaluator = dict(
    _delete_=True, type='UODBMetric', merge_table=uodb_label_merge_table,
    backend_args=uodb_backend_args)
uodb_test_evaluator = uodb_val_evaluator
