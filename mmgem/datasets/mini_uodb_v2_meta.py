# Copyright (c) mmgem contributors. All rights reserved.
"""The domains of mini-UODB v2, in one place.

``python tools/misc/make_mini_uodb.py --version 2`` draws these domains
(scenes in ``tools/misc/mini_uodb/v2_scenes.py``) and
``configs/_base_/datasets/mini_uodb_v2.py`` mirrors the names, classes and
splits (a test checks that they agree). Pure Python, no torch or mmdet.

v2 gives each of UODB's 11 datasets a synthetic stand-in with the property
of that dataset that matters for multi-dataset detection:

===========  ===========  ==========  ==========================================
domain       stands for   look        what it mirrors
===========  ===========  ==========  ==========================================
photo_full   COCO         photo       the largest domain, the most classes (10);
                                      cluttered textured scenes, overlapping
                                      and occluding objects
photo_part   VOC          photo       the *same look and scenes* as
                                      ``photo_full`` but only 8 of its 10
                                      classes labelled: umbrellas and clocks
                                      are in the images, unlabelled (VOC images
                                      hold COCO-only objects)
clipart      Clipart      clipart     ``photo_part``'s 8 classes in flat
                                      clip-art colours with outlines; the
                                      rarest domain (100 : 1 to ``photo_full``)
comic        Comic        comic       6 of those classes, thick ink outlines,
                                      saturated primaries, halftone dots,
                                      panels and speech bubbles
watercolor   Watercolor   watercolor  ``comic``'s 6 classes as soft washes on
                                      grainy paper; the second rarest
street       KITTI        street      wide dash-cam road scenes; cars,
                                      pedestrians and cyclists labelled, the
                                      traffic signs in them **unlabelled**
signs        LISA         street      the *same scenes*; only the traffic
                                      signs (4 classes) labelled, the cars and
                                      people **unlabelled**: the KITTI / LISA
                                      label conflict
aerial       DOTA         aerial      top-down views, many small rotated
                                      objects, buildings and trees as clutter
crowd        WiderFace    crowd       many small faces in crowds, rows that
                                      occlude each other, backs of heads as
                                      look-alikes; one class
kitchen      Kitchen      kitchen     products on shelves and counters
                                      (5 classes), overlapping
medical      DeepLesion   medical     grey-scale body slices, small lesions;
                                      one class
===========  ===========  ==========  ==========================================

``photo_full`` / ``photo_part`` and ``street`` / ``signs`` are drawn by the
same scene generator with the same object mixture, image sizes and object
sizes: only which classes are written to the annotations differs. They are
therefore indistinguishable from global image statistics by construction
(the generator's identifiability check measures it), as the dataset of an
image is in UODB's dataset-unknown protocol when two datasets were taken
with the same kind of camera. The other looks differ on purpose, as UODB's
domains do.
"""
from typing import Dict, Tuple

#: Domain names, largest first (at the ``small`` scale).
MINI_UODB_V2_DATASETS: Tuple[str, ...] = (
    'photo_full', 'photo_part', 'street', 'aerial', 'crowd', 'signs',
    'medical', 'kitchen', 'comic', 'watercolor', 'clipart')

_PHOTO_PART = ('person', 'car', 'dog', 'bird', 'cat', 'bicycle', 'bottle',
               'chair')
_COMIC = ('person', 'car', 'dog', 'bird', 'cat', 'bicycle')

#: Class list of each domain, in label order.
MINI_UODB_V2_CLASSES: Dict[str, Tuple[str, ...]] = {
    'photo_full': _PHOTO_PART + ('umbrella', 'clock'),
    'photo_part': _PHOTO_PART,
    'street': ('car', 'pedestrian', 'cyclist'),
    'aerial': ('plane', 'ship', 'small-vehicle', 'storage-tank'),
    'crowd': ('face', ),
    'signs': ('stop', 'speedlimit', 'warning', 'noturn'),
    'medical': ('lesion', ),
    'kitchen': ('cereal_box', 'soda_can', 'sauce_jar', 'chips_tube',
                'soap_bottle'),
    'comic': _COMIC,
    'watercolor': _COMIC,
    'clipart': _PHOTO_PART,
}

#: The look (scene generator) of each domain. Domains of one look share
#: scenes, image sizes and object mixture; only their labels differ.
MINI_UODB_V2_LOOKS: Dict[str, str] = {
    'photo_full': 'photo',
    'photo_part': 'photo',
    'street': 'street',
    'aerial': 'aerial',
    'crowd': 'crowd',
    'signs': 'street',
    'medical': 'medical',
    'kitchen': 'kitchen',
    'comic': 'comic',
    'watercolor': 'watercolor',
    'clipart': 'clipart',
}

#: The UODB dataset each domain stands for.
MINI_UODB_V2_STANDS_FOR: Dict[str, str] = {
    'photo_full': 'COCO',
    'photo_part': 'VOC',
    'street': 'KITTI',
    'aerial': 'DOTA',
    'crowd': 'WiderFace',
    'signs': 'LISA',
    'medical': 'DeepLesion',
    'kitchen': 'Kitchen',
    'comic': 'Comic',
    'watercolor': 'Watercolor',
    'clipart': 'Clipart',
}

#: The pair that shares a look but has disjoint label sets, each with the
#: other's objects present and unlabelled (UODB's KITTI / LISA).
MINI_UODB_V2_CONFLICT_PAIR: Tuple[str, str] = ('street', 'signs')

#: A hand-made grouping by look and labels (the "human prior" of the
#: planner ablation, as DAMEX's map is for UODB): the photo pair, the
#: drawn looks with photo labels, the street pair, and the rest alone.
MINI_UODB_V2_PRIOR: Tuple[Tuple[str, ...], ...] = (
    ('photo_full', 'photo_part'), ('clipart', 'comic', 'watercolor'),
    ('street', 'signs'), ('aerial', ), ('crowd', ), ('kitchen', ),
    ('medical', ))

#: (train split, test split) of each domain, as ImageSets/Main names.
MINI_UODB_V2_SPLITS: Dict[str, Tuple[str, str]] = {
    name: ('train', 'test')
    for name in MINI_UODB_V2_DATASETS
}

#: Images per (train, test) split of each domain, for each scale. At
#: ``small`` (the benchmarks) the largest : rarest training ratio is 100 : 1.
MINI_UODB_V2_SIZES: Dict[str, Dict[str, Tuple[int, int]]] = {
    'tiny': {
        'photo_full': (24, 6),
        'photo_part': (16, 6),
        'street': (16, 6),
        'aerial': (12, 6),
        'crowd': (12, 6),
        'signs': (12, 6),
        'medical': (10, 6),
        'kitchen': (10, 6),
        'comic': (8, 6),
        'watercolor': (8, 6),
        'clipart': (8, 6),
    },
    'small': {
        'photo_full': (3000, 80),
        'photo_part': (800, 60),
        'street': (600, 60),
        'aerial': (400, 50),
        'crowd': (400, 50),
        'signs': (250, 60),
        'medical': (200, 40),
        'kitchen': (120, 40),
        'comic': (80, 40),
        'watercolor': (60, 40),
        'clipart': (30, 40),
    },
}

#: Column titles for result tables.
MINI_UODB_V2_DISPLAY_NAMES: Dict[str, str] = {
    'photo_full': 'Photo-full',
    'photo_part': 'Photo-part',
    'street': 'Street',
    'aerial': 'Aerial',
    'crowd': 'Crowd',
    'signs': 'Signs',
    'medical': 'Medical',
    'kitchen': 'Kitchen',
    'comic': 'Comic',
    'watercolor': 'Watercolor',
    'clipart': 'Clipart',
}

__all__ = [
    'MINI_UODB_V2_DATASETS', 'MINI_UODB_V2_CLASSES', 'MINI_UODB_V2_LOOKS',
    'MINI_UODB_V2_STANDS_FOR', 'MINI_UODB_V2_CONFLICT_PAIR',
    'MINI_UODB_V2_PRIOR', 'MINI_UODB_V2_SPLITS', 'MINI_UODB_V2_SIZES',
    'MINI_UODB_V2_DISPLAY_NAMES'
]
