# Copyright (c) mmgem contributors. All rights reserved.
# mini-UODB v2: eleven generated domains, one per UODB dataset they stand for
# (see mmgem/datasets/mini_uodb_v2_meta.py), for the statistical benchmark.
#
#   python tools/misc/make_mini_uodb.py --version 2 --scale small
#
# writes data/mini_uodb_v2/<domain>/{Annotations,JPEGImages,ImageSets} and
# the COCO JSON data/mini_uodb_v2/<domain>/annotations/{train,test}.json.
#
# This file is a *second base* beside a v1 tiny config
# (configs/gem/*-tiny_r18_mini-uodb.py, whose data base is mini_uodb.py): every
# name starts with `mini_uodb_v2_` (mmengine refuses bases that define the
# same keys), and its dataloaders hold only what differs from v1's, so they
# merge into v1's (pipelines, sampler, batch size and evaluator stay):
#   train_dataloader = {{_base_.mini_uodb_v2_train_dataloader}}
#   val_dataloader = {{_base_.mini_uodb_v2_test_dataloader}}
#   test_dataloader = {{_base_.mini_uodb_v2_test_dataloader}}
#   model = {{_base_.mini_uodb_v2_model}}      # GEM-DINO: datasets, offsets, classes
# The names, classes and splits mirror mmgem/datasets/mini_uodb_v2_meta.py
# (tests/tools/test_make_mini_uodb_v2.py checks that they agree).
mini_uodb_v2_data_root = 'data/mini_uodb_v2/'

mini_uodb_v2_dataset_names = [
    'photo_full', 'photo_part', 'street', 'aerial', 'crowd', 'signs', 'medical',
    'kitchen', 'comic', 'watercolor', 'clipart'
]
mini_uodb_v2_classes = dict(
    photo_full=('person', 'car', 'dog', 'bird', 'cat', 'bicycle', 'bottle', 'chair', 'umbrella',
                'clock'),
    photo_part=('person', 'car', 'dog', 'bird', 'cat', 'bicycle', 'bottle', 'chair'),
    street=('car', 'pedestrian', 'cyclist'),
    aerial=('plane', 'ship', 'small-vehicle', 'storage-tank'),
    crowd=('face', ),
    signs=('stop', 'speedlimit', 'warning', 'noturn'),
    medical=('lesion', ),
    kitchen=('cereal_box', 'soda_can', 'sauce_jar', 'chips_tube', 'soap_bottle'),
    comic=('person', 'car', 'dog', 'bird', 'cat', 'bicycle'),
    watercolor=('person', 'car', 'dog', 'bird', 'cat', 'bicycle'),
    clipart=('person', 'car', 'dog', 'bird', 'cat', 'bicycle', 'bottle', 'chair'))
mini_uodb_v2_splits = {name: ('train', 'test') for name in mini_uodb_v2_dataset_names}
mini_uodb_v2_display_names = dict(
    photo_full='Photo-full', photo_part='Photo-part', street='Street', aerial='Aerial',
    crowd='Crowd', signs='Signs', medical='Medical', kitchen='Kitchen', comic='Comic',
    watercolor='Watercolor', clipart='Clipart')
mini_uodb_v2_num_datasets = len(mini_uodb_v2_dataset_names)
mini_uodb_v2_num_classes = sum(len(mini_uodb_v2_classes[n]) for n in mini_uodb_v2_dataset_names)
# dataset d owns labels [offsets[d], offsets[d + 1]) of the concatenated space
mini_uodb_v2_label_offsets = [
    sum(len(mini_uodb_v2_classes[n]) for n in mini_uodb_v2_dataset_names[:i])
    for i in range(mini_uodb_v2_num_datasets + 1)
]

# the label space of the models (GEMDINO; mmdet's DINO takes only the head's)
mini_uodb_v2_model = dict(
    num_datasets=mini_uodb_v2_num_datasets,
    label_offsets=mini_uodb_v2_label_offsets,
    dataset_classes=[mini_uodb_v2_classes[n] for n in mini_uodb_v2_dataset_names],
    bbox_head=dict(num_classes=mini_uodb_v2_num_classes))


def _datasets(split):
    return [
        dict(
            type='CocoDataset',
            ann_file=f'{name}/annotations/{mini_uodb_v2_splits[name][split]}.json',
            data_prefix=dict(img=f'{name}/JPEGImages/'),
            metainfo=dict(classes=mini_uodb_v2_classes[name]))
        for name in mini_uodb_v2_dataset_names
    ]


mini_uodb_v2_train_dataloader = dict(
    dataset=dict(
        data_root=mini_uodb_v2_data_root,
        datasets=_datasets(0),
        dataset_names=mini_uodb_v2_dataset_names,
        display_names=mini_uodb_v2_display_names))
mini_uodb_v2_test_dataloader = dict(
    dataset=dict(
        data_root=mini_uodb_v2_data_root,
        datasets=_datasets(1),
        dataset_names=mini_uodb_v2_dataset_names,
        display_names=mini_uodb_v2_display_names))
