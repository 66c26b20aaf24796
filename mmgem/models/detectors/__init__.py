# Copyright (c) mmgem contributors. All rights reserved.
from .gem_dino import GEMDINO
from .routing_info import dataset_ids_from_samples, image_buckets_from_samples

__all__ = ['GEMDINO', 'dataset_ids_from_samples', 'image_buckets_from_samples']
