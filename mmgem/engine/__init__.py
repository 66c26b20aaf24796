# Copyright (c) mmgem contributors. All rights reserved.
from .hooks import (
                    ExpertParallelCheckpointHook,
                    ExpertParallelExchangeHook,
                    GEMPlannerHook,
                    MoERoutingVisualizationHook,
)
from .optim import GlobalNormAmpOptimWrapper, GlobalNormOptimWrapper
from .wrappers import GEMDistributedDataParallel

__all__ = [
    'GEMPlannerHook', 'ExpertParallelCheckpointHook', 'ExpertParallelExchangeHook',
    'GlobalNormOptimWrapper', 'GlobalNormAmpOptimWrapper', 'GEMDistributedDataParallel',
    'MoERoutingVisualizationHook'
]
