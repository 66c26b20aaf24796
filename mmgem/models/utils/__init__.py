# Copyright (c) mmgem contributors. All rights reserved.
from .label_space import label_range_mask, label_ranges_of

__all__ = ['label_range_mask', 'label_ranges_of']
