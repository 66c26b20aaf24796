# Copyright (c) mmgem contributors. All rights reserved.
"""Routers of :class:`~mmgem.models.MoEFFN`, registered in ``ROUTERS``.

Adding a router is one file here (a :class:`BaseRouter` subclass registered
with ``@ROUTERS.register_module()``), one config and one test; see
``README.md`` beside this file for the routers and their sources.
"""
from .base_router import BaseRouter
from .builder import LEGACY_ROUTING, build_router, router_class, router_config
from .damex_router import DAMEXRouter
from .gem_router import GEMRouter
from .moe_plus_plus_router import MoEPlusPlusRouter
from .mumoe import MuMoERouter, matched_rank
from .remoe_router import ReMoERouter
from .sinkhorn_router import SinkhornRouter, sinkhorn
from .soft_router import SoftMoERouter, query_segments
from .top1_router import BALANCE_LOSSES, Top1Router

__all__ = [
    'BaseRouter', 'GEMRouter', 'DAMEXRouter', 'Top1Router', 'BALANCE_LOSSES',
    'SinkhornRouter', 'sinkhorn', 'ReMoERouter',
    'MoEPlusPlusRouter', 'MuMoERouter', 'matched_rank', 'SoftMoERouter', 'query_segments',
    'LEGACY_ROUTING', 'build_router', 'router_class', 'router_config'
]
