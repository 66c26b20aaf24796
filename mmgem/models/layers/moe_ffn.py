# Copyright (c) mmgem contributors. All rights reserved.
"""Mixture-of-experts FFN: a drop-in replacement for mmcv's ``FFN``."""
import math
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer
from mmcv.cnn.bricks.drop import build_dropout
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptConfigType
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmgem.utils.choices import check_choice

from ..routers.builder import LEGACY_ROUTING, build_router, router_class, router_config
from .batch_routing import BatchRouting
from .dispatch import CAPACITY_PRIORITIES, ExpertFn, expert_capacity, image_dispatch, token_dispatch

#: The legacy ``routing=`` names (each maps to a router type).
ROUTING_MODES = tuple(LEGACY_ROUTING)


@MODELS.register_module()
class MoEFFN(BaseModule):
    """FFN with ``num_experts`` experts of the dense FFN's shape.

    It has the interface and semantics of mmcv's ``FFN`` with ``num_fcs=2``
    (``Linear -> act -> Dropout -> Linear -> Dropout``, then
    ``dropout_layer`` and the residual ``identity + out``), and takes the
    routing of the batch as the keyword argument ``routing`` (a
    :class:`~mmgem.models.layers.BatchRouting` that the detector computes
    once per forward and hands to every MoE layer). The experts' weights are
    batched: ``w1`` is ``(M, feedforward_channels, embed_dims)``, ``b1``
    ``(M, feedforward_channels)``, ``w2`` ``(M, embed_dims,
    feedforward_channels)`` and ``b2`` ``(M, embed_dims)``; ``w1[e]`` is laid
    out like ``nn.Linear.weight`` so a dense FFN copies in directly
    (:meth:`upcycle_from_ffn`). A router whose ``owns_experts`` holds the
    experts itself (``MuMoERouter``'s CP factors): the layer then has no
    batched weights and leaves init and upcycling to the router. The layer
    holds no plan: the plan lives in the detector.

    How tokens reach experts is the job of the layer's router
    (``router=dict(type=...)``, a :class:`~mmgem.models.routers.BaseRouter`
    from the ``ROUTERS`` registry, :attr:`router`): ``'GEMRouter'`` (every
    image to its planned expert), ``'DAMEXRouter'`` and ``'Top1Router'``
    (Tutel's noisy top-1 token router), and the routers listed in
    ``mmgem/models/routers/README.md``. The router calls back into the layer
    for the experts (:meth:`_dispatch_images`, :meth:`_dispatch_tokens`,
    :meth:`_expert_fn`), so subclasses that place experts elsewhere (expert
    parallelism) serve every router that dispatches through them.

    Token-routed routers that drop tokens use the layer's capacity
    (:meth:`token_capacity`): each expert keeps at most
    ``int(capacity_factor * ceil(T / M))`` of the ``T`` tokens of the batch,
    chosen by descending gate score (``capacity_priority='score'``, Tutel's
    batch-prioritized routing; ``'position'`` keeps the first ones in
    image-major order); overflow tokens get no FFN output and pass through
    the residual.

    After every forward, :attr:`routing_stats` holds the router's
    statistics (``expert_tokens``, ``dropped_tokens``, ``image_experts``,
    ``token_experts``, see :class:`~mmgem.models.routers.BaseRouter`).

    Args:
        embed_dims (int): Token dimension. Defaults to 256.
        feedforward_channels (int): Hidden dimension of each expert.
            Defaults to 1024.
        num_experts (int): Number of experts ``M``. Defaults to 8.
        router (dict, optional): Router config, ``embed_dims`` and
            ``num_experts`` filled in. None with ``routing=None`` gives
            ``dict(type='GEMRouter')``. Defaults to None.
        routing (str, optional): Legacy name of the router (``'gem'``,
            ``'damex'``, ``'moe'``: ``GEMRouter``, ``DAMEXRouter``,
            ``Top1Router``); give it or ``router``. Defaults to None.
        num_fcs (int): Must be 2 (the only value mmdet's DETRs use).
        act_cfg (dict): Activation config. Defaults to inplace ReLU.
        ffn_drop (float): Dropout after the activation and after the second
            linear layer. Defaults to 0.
        dropout_layer (dict, optional): Config of the dropout applied to the
            FFN output before the residual (e.g. DropPath). Defaults to None.
        add_identity (bool): Whether to add the residual. Defaults to True.
        capacity_factor (float): Expert capacity factor of the token-routed
            routers. Defaults to 1.25.
        eval_capacity_factor (float, optional): Capacity factor at test
            time; None uses ``capacity_factor``. Defaults to None.
        capacity_priority (str): Which tokens an overfull expert keeps:
            ``'score'`` (highest gate first, Tutel's batch-prioritized
            routing, DAMEX's setting) or ``'position'`` (first in image-major
            order). Defaults to ``'score'``.
        gate_noise (float, optional): Passed to a router that takes it
            (``Top1Router``, ``DAMEXRouter``) unless its config sets it;
            None keeps the router's default (1.0). Defaults to None.
        balance_loss (str, optional): Passed likewise (``Top1Router``:
            ``'tutel'`` or ``'vmoe'``). Defaults to None.
        num_datasets (int, optional): Ignored; accepted so configs written
            for earlier versions (which kept a plan table per layer) build.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 feedforward_channels: int = 1024,
                 num_experts: int = 8,
                 router: OptConfigType = None,
                 routing: Optional[str] = None,
                 num_fcs: int = 2,
                 act_cfg: ConfigType = dict(type='ReLU', inplace=True),
                 ffn_drop: float = 0.,
                 dropout_layer: OptConfigType = None,
                 add_identity: bool = True,
                 capacity_factor: float = 1.25,
                 eval_capacity_factor: Optional[float] = None,
                 capacity_priority: str = 'score',
                 gate_noise: Optional[float] = None,
                 balance_loss: Optional[str] = None,
                 num_datasets: Optional[int] = None,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        router_cfg = router_config(router, routing)
        if num_fcs != 2:
            raise ValueError(f'MoEFFN supports num_fcs=2 only, got {num_fcs}')
        if num_experts < 1:
            raise ValueError(f'num_experts must be >= 1, got {num_experts}')
        check_choice('capacity_priority', capacity_priority, CAPACITY_PRIORITIES)
        self.embed_dims = embed_dims
        self.feedforward_channels = feedforward_channels
        self.num_experts = num_experts
        self.num_fcs = num_fcs
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.capacity_priority = capacity_priority
        self.add_identity = add_identity

        if not router_class(router_cfg).owns_experts:
            self.w1 = nn.Parameter(
                torch.empty(num_experts, feedforward_channels, embed_dims))
            self.b1 = nn.Parameter(torch.empty(num_experts, feedforward_channels))
            self.w2 = nn.Parameter(
                torch.empty(num_experts, embed_dims, feedforward_channels))
            self.b2 = nn.Parameter(torch.empty(num_experts, embed_dims))
        self.activate = build_activation_layer(act_cfg)
        self.drop = nn.Dropout(ffn_drop)
        self.dropout_layer = build_dropout(
            dropout_layer) if dropout_layer else nn.Identity()
        self.router = build_router(
            router_cfg, embed_dims, num_experts,
            gate_noise=gate_noise, balance_loss=balance_loss,
            feedforward_channels=feedforward_channels)
        self.reset_parameters()

    @property
    def routing(self) -> str:
        """str: The router's short name (``'gem'``, ``'damex'``, ...)."""
        return self.router.name

    @property
    def owns_experts(self) -> bool:
        """bool: Whether the router holds the experts (no batched weights)."""
        return self.router.owns_experts

    @property
    def routing_stats(self) -> Dict[str, Tensor]:
        """dict[str, Tensor]: The router's statistics of the last forward."""
        return self.router.routing_stats

    def reset_parameters(self) -> None:
        """Initialise every expert like a fresh pair of ``nn.Linear``.

        Each expert slice gets ``nn.Linear``'s default init (Kaiming-uniform
        with ``a=sqrt(5)`` on its own fan-in, bias uniform in
        ``+-1/sqrt(fan_in)``), not an init over the 3-d tensor. A router
        that owns the experts initialised them itself.
        """
        if self.owns_experts:
            return
        for weight, bias in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1 / math.sqrt(weight.size(2))
            for e in range(self.num_experts):
                nn.init.kaiming_uniform_(weight.data[e], a=math.sqrt(5))
                nn.init.uniform_(bias.data[e], -bound, bound)

    def xavier_init_experts(self) -> None:
        """Init every expert as DINO's ``init_weights`` leaves a dense FFN.

        DINO applies ``xavier_uniform_`` to every decoder parameter of more
        than one dimension: a dense FFN's linear weights get it, its 1-d
        biases keep ``nn.Linear``'s init. On the batched tensors that loop
        would use wrong fans for the ``(M, out, in)`` weights and would also
        hit the 2-d ``(M, out)`` biases, so detectors call this after their
        own init: xavier-uniform on every expert's ``(out, in)`` weight
        slice, and a fresh ``nn.Linear`` bias (uniform in
        ``+-1/sqrt(fan_in)``) for every expert. A router that owns the
        experts gets its own init back (``router.reset_parameters()``),
        undoing DINO's xavier on its factors.
        """
        if self.owns_experts:
            self.router.reset_parameters()
            return
        for weight, bias in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1 / math.sqrt(weight.size(2))
            for e in range(self.num_experts):
                nn.init.xavier_uniform_(weight.data[e])
                nn.init.uniform_(bias.data[e], -bound, bound)

    @torch.no_grad()
    def upcycle_from_ffn(self, ffn: Union[nn.Module, Mapping[str,
                                                              Tensor]]) -> None:
        """Copy a dense FFN into every expert (sparse upcycling).

        Args:
            ffn (nn.Module | Mapping[str, Tensor]): An mmcv ``FFN`` with
                ``num_fcs=2`` or its state dict, with keys
                ``layers.0.0.weight``, ``layers.0.0.bias``, ``layers.1.weight``
                and ``layers.1.bias``. A router that owns the experts upcycles
                them itself (``router.upcycle_from_ffn``).
        """
        if self.owns_experts:
            self.router.upcycle_from_ffn(ffn)
            return
        state = ffn.state_dict() if isinstance(ffn, nn.Module) else ffn
        keys = {
            'layers.0.0.weight': self.w1,
            'layers.0.0.bias': self.b1,
            'layers.1.weight': self.w2,
            'layers.1.bias': self.b2,
        }
        missing = [k for k in keys if k not in state]
        if missing:
            raise KeyError(f'dense FFN state dict lacks {missing}; it has '
                           f'{sorted(state)}')
        for key, param in keys.items():
            value = state[key]
            if tuple(value.shape) != tuple(param.shape[1:]):
                raise ValueError(
                    f'dense FFN {key} has shape {tuple(value.shape)}, an '
                    f'expert needs {tuple(param.shape[1:])}')
            param.copy_(value.to(param)[None].expand_as(param))

    def _expert(self, weights: Tuple[Sequence[Tensor], ...], e: int,
                tokens: Tensor) -> Tensor:
        """Apply expert ``e`` (slices of the unbound weights) to tokens."""
        w1, b1, w2, b2 = weights
        hidden = self.drop(self.activate(F.linear(tokens, w1[e], b1[e])))
        return self.drop(F.linear(hidden, w2[e], b2[e]))

    def forward(self,
                x: Tensor,
                identity: Optional[Tensor] = None,
                routing: Optional[BatchRouting] = None) -> Tensor:
        """Forward function.

        Args:
            x (Tensor): Tokens ``(B, N, C)``, batch first (token-level
                routers may take any ``(..., C)`` shape).
            identity (Tensor, optional): Residual added to the output; None
                uses ``x``. Defaults to None.
            routing (BatchRouting, optional): The batch's routing; routers
                whose ``needs_plan`` read its ``image_experts``.

        Returns:
            Tensor: ``identity + ffn(x)`` (or ``ffn(x)`` without identity),
            the shape of ``x``.
        """
        out = self.router(self, x, routing)
        out = self.dropout_layer(out)
        if not self.add_identity:
            return out
        if identity is None:
            identity = x
        return identity + out

    def _expert_fn(self) -> ExpertFn:
        """``expert_fn(e, tokens)``: expert ``e`` of this layer on tokens."""
        if self.owns_experts:
            raise RuntimeError(f'{type(self.router).__name__} owns the experts: the '
                               'layer has no batched experts to dispatch to')
        weights = (self.w1.unbind(0), self.b1.unbind(0), self.w2.unbind(0),
                   self.b2.unbind(0))
        return lambda e, tokens: self._expert(weights, e, tokens)

    def _dispatch_images(self, x: Tensor, experts: Tensor) -> Tensor:
        """Run every image's tokens through the expert of the image.

        Subclasses that place experts elsewhere (expert parallelism) override
        this and :meth:`_dispatch_tokens`; routing, statistics and losses stay
        in :meth:`forward`.

        Args:
            x (Tensor): ``(B, N, C)`` tokens.
            experts (Tensor): ``(B,)`` int64 expert of each image (host).

        Returns:
            Tensor: ``(B, N, C)`` expert outputs.
        """
        return image_dispatch(x, experts, self.num_experts, self._expert_fn())

    def _dispatch_tokens(self, tokens: Tensor, experts: Tensor, gates: Tensor,
                         capacity: int) -> Tuple[Tensor, Tensor]:
        """Run tokens through their routed experts under a capacity limit.

        Args:
            tokens (Tensor): ``(T, C)`` tokens.
            experts (Tensor): ``(T,)`` routed expert of each token.
            gates (Tensor): ``(T,)`` gate probability of the routed expert.
            capacity (int): Tokens each expert takes at most, chosen as
                ``capacity_priority`` says.

        Returns:
            tuple[Tensor, Tensor]: ``(T, C)`` gated outputs (zero for dropped
            tokens) and the ``(T,)`` bool mask of kept tokens.
        """
        return token_dispatch(tokens, experts, gates, self.num_experts, capacity,
                              self._expert_fn(), self.capacity_priority)

    def token_capacity(self, num_tokens: int) -> int:
        """Tokens each expert may take of ``num_tokens`` (train or eval).

        Args:
            num_tokens (int): Tokens of the batch ``T``.

        Returns:
            int: ``int(factor * ceil(T / M))`` with ``capacity_factor`` (or
            ``eval_capacity_factor`` at test time when set).
        """
        factor = self.capacity_factor
        if not self.training and self.eval_capacity_factor is not None:
            factor = self.eval_capacity_factor
        return expert_capacity(num_tokens, self.num_experts, factor)

    def aux_loss(self, token_mask: Optional[Tensor] = None) -> Optional[Tensor]:
        """The router's auxiliary loss of the last training forward.

        Args:
            token_mask (Tensor, optional): ``(T,)`` or ``(B, N)`` bool mask
                over the tokens of the last forward, image-major (read by
                routers whose ``aux_loss_uses_token_mask``).

        Returns:
            Tensor | None: The unweighted scalar loss; None for routers
            without one, in eval mode, or before any training forward.
        """
        return self.router.aux_loss(token_mask)

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, feedforward_channels='
                f'{self.feedforward_channels}, num_experts={self.num_experts}, '
                f'capacity_factor={self.capacity_factor}, capacity_priority='
                f'{self.capacity_priority!r}')
