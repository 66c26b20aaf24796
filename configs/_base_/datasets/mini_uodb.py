# Copyright (c) mmgem contributors. All rights reserved.
# mini-UODB: the generated stand-in for UODB (tests, demo, benchmarks).
#
#   python tools/misc/make_mini_uodb.py --out data/mini_uodb --scale small
#
# writes the VOC-style layout and converts it to
# data/mini_uodb/<domain>/annotations/{train,test}.json. Move everything to
# another root with one override per dataloader, e.g.
#   --cfg-options train_dataloader.dataset.data_root=/tmp/mini_uodb/ \
#       val_dataloader.dataset.data_root=/tmp/mini_uodb/ \
#       test_dataloader.dataset.data_root=/tmp/mini_uodb/
# (the evaluator reads the annotation files from the dataset's metainfo).
#
# The names, classes and splits mirror mmgem/datasets/mini_uodb_meta.py
# (tests/datasets/test_base_configs.py checks that they agree).
dataset_type = 'UODBDataset'
data_root = 'data/mini_uodb/'
backend_args = None

uodb_dataset_names = [
    'natural', 'aerial', 'signs', 'icons', 'clipart', 'medical'
]
uodb_classes = dict(
    natural=('person', 'car', 'dog', 'bird'),
    aerial=('plane', 'ship', 'car'),
    signs=('stop', 'warning', 'speedlimit'),
    icons=('star', 'heart', 'arrow'),
    clipart=('person', 'car', 'dog', 'bird'),
    medical=('lesion', ))
uodb_splits = {name: ('train', 'test') for name in uodb_dataset_names}
# the class names of every dataset in id order: the models' unified label space
uodb_dataset_classes = [uodb_classes[n] for n in uodb_dataset_names]
uodb_num_classes = sum(len(uodb_classes[n]) for n in uodb_dataset_names)

# what the model reads from DetDataSample.metainfo
uodb_train_meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor', 'flip', 'flip_direction',
                        'dataset_id', 'dataset_name')
uodb_test_meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape',
                       'scale_factor', 'dataset_id', 'dataset_name')

img_scale = (160, 160)  # the tiny DINO's input size
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs', meta_keys=uodb_train_meta_keys)
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
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

train_dataloader = dict(
    batch_size=4,
    num_workers=0,  # tiny images decode fast; raise on a bigger machine
    persistent_workers=False,
    sampler=dict(type='UODBSampler', mode='proportional', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        datasets=uodb_train_datasets,
        dataset_names=uodb_dataset_names,
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        datasets=uodb_test_datasets,
        dataset_names=uodb_dataset_names,
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(type='UODBMetric', backend_args=backend_args)
test_evaluator = val_evaluator
