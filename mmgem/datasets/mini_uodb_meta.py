# Copyright (c) mmgem contributors. All rights reserved.
"""The domains of the generated mini-UODB, in one place.

``tools/misc/make_mini_uodb.py`` draws these domains and
``configs/_base_/datasets/mini_uodb.py`` mirrors the names, classes and
splits (a test checks that they agree). Pure Python, no torch or mmdet.

Each domain mirrors a difficulty of UODB:

=========  ===================  ==========================================
domain     mirrors              look and label set
=========  ===================  ==========================================
natural    VOC / COCO           textured natural-like scenes; the largest
clipart    Clipart              flat clip-art colours with black outlines;
                                the same labels as ``natural``
icons      Comic / Kitchen      the same flat clip-art look as ``clipart``,
                                but a disjoint label set
aerial     DOTA                 top-down ground, roads and water, many small
                                objects; ``car`` overlaps ``natural``'s
signs      LISA                 street scenes with small traffic signs
medical    DeepLesion           grey-scale body slices with lesion blobs;
                                the rarest (``natural`` : ``medical`` is
                                50 : 1 in the ``small`` scale)
=========  ===================  ==========================================
"""
from typing import Dict, Tuple

#: Domain names, largest first.
MINI_UODB_DATASETS: Tuple[str, ...] = (
    'natural', 'aerial', 'signs', 'icons', 'clipart', 'medical')

#: Class list of each domain, in label order.
MINI_UODB_CLASSES: Dict[str, Tuple[str, ...]] = {
    'natural': ('person', 'car', 'dog', 'bird'),
    'aerial': ('plane', 'ship', 'car'),
    'signs': ('stop', 'warning', 'speedlimit'),
    'icons': ('star', 'heart', 'arrow'),
    'clipart': ('person', 'car', 'dog', 'bird'),
    'medical': ('lesion', ),
}

#: (train split, test split) of each domain, as ImageSets/Main names.
MINI_UODB_SPLITS: Dict[str, Tuple[str, str]] = {
    name: ('train', 'test')
    for name in MINI_UODB_DATASETS
}

#: Images per (train, test) split of each domain, for each scale.
MINI_UODB_SIZES: Dict[str, Dict[str, Tuple[int, int]]] = {
    'tiny': {
        'natural': (48, 8),
        'aerial': (36, 8),
        'signs': (30, 8),
        'icons': (24, 8),
        'clipart': (20, 8),
        'medical': (12, 8),
    },
    'small': {
        'natural': (2000, 200),
        'aerial': (500, 100),
        'signs': (300, 100),
        'icons': (250, 100),
        'clipart': (120, 100),
        'medical': (40, 40),
    },
}

#: Column titles for result tables.
MINI_UODB_DISPLAY_NAMES: Dict[str, str] = {
    'natural': 'Natural',
    'aerial': 'Aerial',
    'signs': 'Signs',
    'icons': 'Icons',
    'clipart': 'Clipart',
    'medical': 'Medical',
}

__all__ = [
    'MINI_UODB_DATASETS', 'MINI_UODB_CLASSES', 'MINI_UODB_SPLITS',
    'MINI_UODB_SIZES', 'MINI_UODB_DISPLAY_NAMES'
]
