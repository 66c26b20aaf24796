# Copyright (c) mmgem contributors. All rights reserved.
from .align_experts_hook import AlignExpertsHook
from .expert_parallel_checkpoint_hook import ExpertParallelCheckpointHook
from .expert_parallel_exchange_hook import ExpertParallelExchangeHook
from .gem_checkpoint_hook import GEMCheckpointHook
from .gem_planner_hook import GEMPlannerHook
from .moe_routing_hook import MoERoutingVisualizationHook
from .resume_state_hook import ResumeStateHook

__all__ = [
    'GEMPlannerHook', 'ExpertParallelCheckpointHook', 'ExpertParallelExchangeHook',
    'MoERoutingVisualizationHook', 'ResumeStateHook', 'AlignExpertsHook',
    'GEMCheckpointHook'
]
