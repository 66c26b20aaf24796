# Copyright (c) mmgem contributors. All rights reserved.
from .expert_parallel_constructor import ExpertParallelOptimWrapperConstructor
from .global_norm_optim_wrapper import (
                                        GlobalNormAmpOptimWrapper,
                                        GlobalNormClipMixin,
                                        GlobalNormOptimWrapper,
)

__all__ = [
    'GlobalNormOptimWrapper', 'GlobalNormAmpOptimWrapper', 'GlobalNormClipMixin',
    'ExpertParallelOptimWrapperConstructor'
]
