# Copyright (c) mmgem contributors. All rights reserved.
from .hooks import (
                    ExpertParallelCheckpointHook,
                    ExpertParallelExchangeHook,
                    GEMCheckpointHook,
                    GEMPlannerHook,
                    MoERoutingVisualizationHook,
                    ResumeStateHook,
)
from .optim import (
                    ExpertParallelOptimWrapperConstructor,
                    GlobalNormAmpOptimWrapper,
                    GlobalNormOptimWrapper,
)
from .runner import GEMRunner
from .wrappers import GEMDistributedDataParallel

__all__ = [
    'GEMPlannerHook', 'ExpertParallelCheckpointHook', 'ExpertParallelExchangeHook',
    'MoERoutingVisualizationHook', 'ResumeStateHook', 'GlobalNormOptimWrapper',
    'GlobalNormAmpOptimWrapper', 'ExpertParallelOptimWrapperConstructor',
    'GEMDistributedDataParallel', 'GEMRunner', 'GEMCheckpointHook'
]
