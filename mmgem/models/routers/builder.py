# Copyright (c) mmgem contributors. All rights reserved.
"""Building a router from a config, and the legacy ``routing=`` names."""
import inspect
from typing import Any, Dict, Mapping, Optional, Type, Union

from mmgem.registry import ROUTERS
from mmgem.utils.choices import check_choice

from .base_router import BaseRouter

#: The ``routing='...'`` names of earlier configs and the router each means.
LEGACY_ROUTING = dict(gem='GEMRouter', damex='DAMEXRouter', moe='Top1Router')


def router_config(router: Optional[Mapping] = None,
                  routing: Optional[str] = None) -> Dict[str, Any]:
    """The router config of a layer or detector.

    Args:
        router (dict, optional): ``dict(type=..., **options)``.
        routing (str, optional): A legacy name (``'gem'``, ``'damex'``,
            ``'moe'``), mapped by :data:`LEGACY_ROUTING`.

    Returns:
        dict: A router config (``GEMRouter`` when neither is given).
    """
    if router is not None and routing is not None:
        raise ValueError(
            f'give router={dict(router)!r} or the legacy routing={routing!r}, '
            'not both')
    if router is not None:
        cfg = dict(router)
        if 'type' not in cfg:
            raise ValueError(f'router config {cfg!r} has no "type"')
        return cfg
    if routing is None:
        routing = 'gem'
    check_choice('routing', routing, tuple(LEGACY_ROUTING))
    return dict(type=LEGACY_ROUTING[routing])


def router_class(cfg: Mapping) -> Type[BaseRouter]:
    """The router class a config names (a registered name or the class)."""
    kind = cfg['type']
    cls = kind if inspect.isclass(kind) else ROUTERS.get(kind)
    if cls is None:
        raise KeyError(f'router type {kind!r} is not in the ROUTERS registry '
                       f'(mmgem.registry); registered: {sorted(ROUTERS.module_dict)}')
    if not issubclass(cls, BaseRouter):
        raise TypeError(f'router type {kind!r} is {cls}, not a BaseRouter')
    return cls


def build_router(cfg: Mapping, embed_dims: int, num_experts: int,
                 **layer_options: Union[float, str, None]) -> BaseRouter:
    """Build a router for a layer of ``num_experts`` experts.

    Args:
        cfg (dict): The router config.
        embed_dims (int): Token dimension (filled in).
        num_experts (int): Experts of the layer (filled in).
        **layer_options: Options given at the layer (e.g. ``gate_noise``);
            each is passed when it is not None, the router's constructor
            takes it and the config does not set it already.

    Returns:
        BaseRouter: The router.
    """
    cfg = dict(cfg)
    cls = router_class(cfg)
    params = inspect.signature(cls.__init__).parameters
    for key, value in layer_options.items():
        if value is not None and key in params:
            cfg.setdefault(key, value)
    cfg.pop('type')
    cfg.update(embed_dims=embed_dims, num_experts=num_experts)
    # the class is resolved already: build it directly (no scope switch)
    return cls(**cfg)
