# Copyright (c) mmgem contributors. All rights reserved.
from .mini_uodb_meta import (
    MINI_UODB_CLASSES,
    MINI_UODB_DATASETS,
    MINI_UODB_DISPLAY_NAMES,
    MINI_UODB_SIZES,
    MINI_UODB_SPLITS,
)
from .samplers import (
    SingleDatasetBatchSampler,
    UODBSampler,
    dataset_ids_of,
    expected_images_per_dataset,
    find_uodb_dataset,
    uodb_index_map,
)
from .uodb_dataset import UODBDataset
from .uodb_meta import (
    UODB_CLASSES,
    UODB_DATASETS,
    UODB_DISPLAY_NAMES,
    UODB_IGNORED_NAMES,
    UODB_NAME_MAPS,
    UODB_SPLITS,
)

__all__ = [
    'UODBDataset', 'UODBSampler', 'SingleDatasetBatchSampler',
    'expected_images_per_dataset', 'find_uodb_dataset', 'uodb_index_map', 'dataset_ids_of',
    'UODB_DATASETS',
    'UODB_CLASSES', 'UODB_SPLITS', 'UODB_DISPLAY_NAMES', 'UODB_NAME_MAPS',
    'UODB_IGNORED_NAMES', 'MINI_UODB_DATASETS', 'MINI_UODB_CLASSES',
    'MINI_UODB_SPLITS', 'MINI_UODB_SIZES', 'MINI_UODB_DISPLAY_NAMES'
]
