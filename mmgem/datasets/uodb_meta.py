# Copyright (c) mmgem contributors. All rights reserved.
"""Facts about the 11 UODB datasets: names, class lists, DAMEX's splits.

This module is pure Python (no torch, no mmdet) so that the converters in
``mmgem/datasets/converters/`` and the base config
``configs/_base_/datasets/uodb.py`` share one source of truth.

The dataset order is the column order of DAMEX Table 1 (KITTI, VOC,
WiderFace, LISA, Kitchen, COCO, DOTA, DeepLesion, Comic, Clipart,
Watercolor). Class names are lower case, as the UODB loaders compare them
(``name.lower().strip()``).
"""
from typing import Dict, Tuple

VOC_CLASSES: Tuple[str, ...] = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
    'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
    'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')

COCO_CLASSES: Tuple[str, ...] = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train',
    'truck', 'boat', 'traffic light', 'fire hydrant', 'stop sign',
    'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag',
    'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon',
    'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot',
    'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
    'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear',
    'hair drier', 'toothbrush')

DOTA_CLASSES: Tuple[str, ...] = (
    'plane', 'baseball-diamond', 'bridge', 'ground-track-field',
    'small-vehicle', 'large-vehicle', 'ship', 'tennis-court',
    'basketball-court', 'storage-tank', 'soccer-ball-field', 'roundabout',
    'harbor', 'swimming-pool', 'helicopter')

KITCHEN_CLASSES: Tuple[str, ...] = (
    'coca_cola_glass_bottle', 'coffee_mate_french_vanilla',
    'honey_bunches_of_oats_honey_roasted', 'hunts_sauce', 'mahatma_rice',
    'nature_valley_soft_baked_oatmeal_squares_cinnamon_brown_sugar',
    'nature_valley_sweet_and_salty_nut_almond', 'palmolive_orange',
    'pop_secret_light_butter', 'pringles_bbq', 'red_bull')

WATERCOLOR_CLASSES: Tuple[str, ...] = (
    'bicycle', 'bird', 'car', 'cat', 'dog', 'person')

#: The 11 UODB datasets in DAMEX Table 1's column order.
UODB_DATASETS: Tuple[str, ...] = (
    'kitti', 'voc', 'widerface', 'lisa', 'kitchen', 'coco', 'dota',
    'deeplesion', 'comic', 'clipart', 'watercolor')

#: Column titles of DAMEX Table 1.
UODB_DISPLAY_NAMES: Dict[str, str] = {
    'kitti': 'KITTI',
    'voc': 'VOC',
    'widerface': 'WiderFace',
    'lisa': 'LISA',
    'kitchen': 'Kitchen',
    'coco': 'COCO',
    'dota': 'DOTA',
    'deeplesion': 'DeepLesion',
    'comic': 'Comic',
    'clipart': 'Clipart',
    'watercolor': 'Watercolor',
}

#: Class list of each dataset (spec section 6), in label order.
UODB_CLASSES: Dict[str, Tuple[str, ...]] = {
    'kitti': ('pedestrian', 'cyclist', 'car'),
    'voc': VOC_CLASSES,
    'widerface': ('face', ),
    'lisa': ('stop', 'speedlimit', 'warning', 'noturn'),
    'kitchen': KITCHEN_CLASSES,
    'coco': COCO_CLASSES,
    'dota': DOTA_CLASSES,
    'deeplesion': ('lesion', ),
    'comic': WATERCOLOR_CLASSES,
    'clipart': VOC_CLASSES,
    'watercolor': WATERCOLOR_CLASSES,
}

#: The (train, test) image sets DAMEX used, as UODB's
#: ``ImageSets/Main/<split>.txt`` names. VOC's trainval is 07+12 and its test
#: is 07's; COCO's are 2014 valminusminival and minival (converted from
#: COCO's official JSON, see ``mmgem/datasets/converters/coco.py``).
UODB_SPLITS: Dict[str, Tuple[str, str]] = {
    'kitti': ('trainval', 'test'),
    'voc': ('trainval', 'test'),
    'widerface': ('train', 'val'),
    'lisa': ('train', 'test'),
    'kitchen': ('train', 'test'),
    'coco': ('valminusminival', 'minival'),
    'dota': ('train', 'val'),
    'deeplesion': ('trainval', 'test'),
    'comic': ('train', 'test'),
    'clipart': ('train', 'test'),
    'watercolor': ('train', 'test'),
}

#: Names in the annotation files that are folded into one of the dataset's
#: classes: KITTI's van, truck and tram count as car (UODB; DAMEX's converter
#: folds car, van and truck into its ``vehicle``), and KITTI's
#: person_sitting as pedestrian (DAMEX's converter; the KITTI importer's
#: ``person_sitting='ignore'`` drops them instead).
UODB_NAME_MAPS: Dict[str, Dict[str, str]] = {
    'kitti': {'van': 'car', 'truck': 'car', 'tram': 'car', 'person_sitting': 'pedestrian'},
}

#: Names in the annotation files that UODB does not train on; their boxes
#: are dropped (and counted) by the converters instead of being an error:
#: KITTI's ``dontcare`` regions and its ``misc`` objects.
UODB_IGNORED_NAMES: Dict[str, Tuple[str, ...]] = {
    'kitti': ('dontcare', 'misc'),
}

__all__ = [
    'UODB_DATASETS', 'UODB_DISPLAY_NAMES', 'UODB_CLASSES', 'UODB_SPLITS',
    'UODB_NAME_MAPS', 'UODB_IGNORED_NAMES', 'VOC_CLASSES', 'COCO_CLASSES',
    'DOTA_CLASSES', 'KITCHEN_CLASSES', 'WATERCOLOR_CLASSES'
]
