# Copyright (c) mmgem contributors. All rights reserved.
from .batch_routing import BatchRouting
from .dataset_aware_cdn import DatasetAwareCdnQueryGenerator
from .dispatch import capacity_keep_mask, expert_capacity, image_dispatch, token_dispatch
from .domain_classifier import DomainClassifier
from .ep_all_to_all import all_to_all, gather_count_matrix
from .ep_exchange_stats import ExchangeStats, exchange_stats
from .ep_topology import ExpertParallelTopology, get_ep_topology
from .expert_parallel import ExpertParallelMoEFFN, convert_to_expert_parallel, is_expert_shard
from .gem_dino_decoder import GEMDinoDecoderLayer, GEMDinoTransformerDecoder
from .moe_ffn import ROUTING_MODES, MoEFFN
from .moe_losses import (
                         importance_load_loss,
                         importance_loss,
                         load_loss,
                         router_ce_loss,
                         squared_cv,
                         tutel_load_importance_loss,
)
from .plan_routing import NO_PLAN_MESSAGE, plan_is_installed, quantile_thresholds, route_images

__all__ = [
    'MoEFFN', 'ROUTING_MODES', 'BatchRouting', 'capacity_keep_mask',
    'tutel_load_importance_loss', 'DomainClassifier',
    'DatasetAwareCdnQueryGenerator',
    'GEMDinoDecoderLayer', 'GEMDinoTransformerDecoder', 'route_images', 'plan_is_installed',
    'quantile_thresholds',
    'NO_PLAN_MESSAGE', 'image_dispatch', 'token_dispatch', 'expert_capacity',
    'importance_loss', 'load_loss', 'importance_load_loss', 'router_ce_loss', 'squared_cv',
    'ExpertParallelMoEFFN', 'convert_to_expert_parallel', 'is_expert_shard', 'all_to_all',
    'gather_count_matrix', 'ExchangeStats', 'exchange_stats', 'ExpertParallelTopology',
    'get_ep_topology'
]
