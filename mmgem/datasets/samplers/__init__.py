# Copyright (c) mmgem contributors. All rights reserved.
from .expected_images import expected_images_per_dataset, find_uodb_dataset
from .locality_sampler import ExpertLocalitySampler
from .single_dataset_batch_sampler import SingleDatasetBatchSampler
from .uodb_sampler import UODBSampler, largest_remainder

__all__ = [
    'UODBSampler', 'SingleDatasetBatchSampler', 'expected_images_per_dataset',
    'find_uodb_dataset', 'largest_remainder', 'ExpertLocalitySampler'
]
