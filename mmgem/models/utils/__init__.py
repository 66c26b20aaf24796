# Copyright (c) mmgem contributors. All rights reserved.
from .label_space import label_range_mask, label_ranges_of
from .restricted_scores import RestrictedScores

__all__ = ['label_range_mask', 'label_ranges_of', 'RestrictedScores']
