# Copyright (c) mmgem contributors. All rights reserved.
from .hooks import (
                    ExpertParallelCheckpointHook,
                    ExpertParallelExchangeHook,
                    GEMPlannerHook,
                    ResumeStateHook,
)
from .optim import (
                    ExpertParallelOptimWrapperConstructor,
                    GlobalNormAmpOptimWrapper,
                    GlobalNormOptimWrapper,
)
from .wrappers import GEMDistributedDataParallel

__all__ = [
    'GEMPlannerHook', 'ExpertParallelCheckpointHook', 'ExpertParallelExchangeHook',
    'ResumeStateHook', 'GlobalNormOptimWrapper', 'GlobalNormAmpOptimWrapper',
    'ExpertParallelOptimWrapperConstructor', 'GEMDistributedDataParallel'
]
