# Copyright (c) mmgem contributors. All rights reserved.
from .coco_ap import coco_box_ap
from .voc07_ap import voc07_map

__all__ = ['voc07_map', 'coco_box_ap']
