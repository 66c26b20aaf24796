# Copyright (c) mmgem contributors. All rights reserved.
from .hooks import (
                    ExpertParallelCheckpointHook,
                    ExpertParallelExchangeHook,
                    GEMPlannerHook,
                    MoERoutingVisualizationHook,
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
    'MoERoutingVisualizationHook', 'ResumeStateHook', 'GlobalNormOptimWrapper',
    'GlobalNormAmpOptimWrapper', 'ExpertParallelOptimWrapperConstructor',
    'GEMDistributedDataParallel'
]
