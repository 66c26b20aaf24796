# Copyright (c) mmgem contributors. All rights reserved.
from .expected_images import (
                              dataset_ids_of,
                              expected_images_per_dataset,
                              find_uodb_dataset,
                              uodb_index_map,
)
from .locality_sampler import ExpertLocalitySampler
from .single_dataset_batch_sampler import SingleDatasetBatchSampler
from .uodb_sampler import UODBSampler, largest_remainder

__all__ = [
    'UODBSampler', 'SingleDatasetBatchSampler', 'expected_images_per_dataset',
    'find_uodb_dataset', 'largest_remainder', 'ExpertLocalitySampler', 'uodb_index_map',
    'dataset_ids_of'
]
