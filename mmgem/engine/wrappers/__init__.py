# Copyright (c) mmgem contributors. All rights reserved.
from .gem_distributed import GEMDistributedDataParallel

__all__ = ['GEMDistributedDataParallel']
