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

from .dispatch import ExpertFn, expert_capacity, image_dispatch, token_dispatch
from .moe_losses import importance_load_loss, router_ce_loss
from .plan_routing import NO_PLAN_MESSAGE, plan_is_installed, route_images
from .token_router import TopOneRouter

ROUTING_MODES = ('gem', 'damex', 'moe')


@MODELS.register_module()
class MoEFFN(BaseModule):
    """FFN with ``num_experts`` experts of the dense FFN's shape.

    It has the interface and semantics of mmcv's ``FFN`` with ``num_fcs=2``
    (``Linear -> act -> Dropout -> Linear -> Dropout``, then
    ``dropout_layer`` and the residual ``identity + out``), and takes the
    routing information of the batch as keyword arguments. The experts'
    weights are batched: ``w1`` is ``(M, feedforward_channels, embed_dims)``,
    ``b1`` ``(M, feedforward_channels)``, ``w2``
    ``(M, embed_dims, feedforward_channels)`` and ``b2`` ``(M, embed_dims)``;
    ``w1[e]`` is laid out like ``nn.Linear.weight`` so a dense FFN copies in
    directly (:meth:`upcycle_from_ffn`).

    Routing modes:

    - ``'gem'``: the expert of every image is looked up in the GEM plan held
      in the ``plan_quota`` buffer (``num_datasets x num_experts`` int64,
      all zeros until a plan is installed) from the image's ``dataset_ids``
      and ``image_buckets`` (:mod:`mmgem.models.layers.plan_routing`).
      Images are grouped by expert and every active expert runs once on its
      images' tokens: no router parameters, no auxiliary loss, no padding,
      no token dropped. The same rule applies at test time.
    - ``'damex'``: a learned top-1 token router (no gate noise by default)
      under a capacity limit; in training the cross-entropy of its logits to
      the plan's expert of each token's image is stored as
      ``aux_losses['loss_damex_ce']`` (times ``aux_loss_weight``). At test
      time the router alone decides.
    - ``'moe'``: a learned top-1 router with gate noise (default 1.0, i.e.
      std ``1 / num_experts``) and the V-MoE importance + load loss stored as
      ``aux_losses['loss_moe_aux']`` (times ``aux_loss_weight``).

    In the token-routed modes each expert takes at most
    ``ceil(capacity_factor * T / M)`` of the ``T`` tokens of the batch in
    their flattened order (image-major); overflow tokens get no FFN output
    and pass through the residual. The chosen expert's output is scaled by
    its gate probability (softmax of the noisy logits), so the router also
    learns from the task loss.

    After every forward, :attr:`aux_losses` holds this layer's weighted
    auxiliary losses (empty in eval mode and in ``'gem'`` mode) and
    :attr:`routing_stats` holds ``expert_tokens`` (``(M,)`` tokens each
    expert processed), ``dropped_tokens`` (scalar) and ``image_experts``
    (``(B, M)`` tokens of each image that each expert processed; on the CPU
    in ``'gem'`` mode).

    Args:
        embed_dims (int): Token dimension. Defaults to 256.
        feedforward_channels (int): Hidden dimension of each expert.
            Defaults to 1024.
        num_experts (int): Number of experts ``M``. Defaults to 8.
        num_datasets (int): Number of datasets ``K`` of the plan table.
            Defaults to 1.
        routing (str): ``'gem'``, ``'damex'`` or ``'moe'``. Defaults to
            ``'gem'``.
        num_fcs (int): Must be 2 (the only value mmdet's DETRs use).
        act_cfg (dict): Activation config. Defaults to inplace ReLU.
        ffn_drop (float): Dropout after the activation and after the second
            linear layer. Defaults to 0.
        dropout_layer (dict, optional): Config of the dropout applied to the
            FFN output before the residual (e.g. DropPath). Defaults to None.
        add_identity (bool): Whether to add the residual. Defaults to True.
        capacity_factor (float): Expert capacity factor of the token-routed
            modes. Defaults to 1.25.
        eval_capacity_factor (float, optional): Capacity factor at test
            time; None uses ``capacity_factor``. Defaults to None.
        gate_noise (float, optional): Router noise scale (std
            ``gate_noise / M``); None gives 1.0 for ``'moe'`` and 0 for
            ``'damex'``. Defaults to None.
        aux_loss_weight (float): Weight of the stored auxiliary loss.
            Defaults to 0.1.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 feedforward_channels: int = 1024,
                 num_experts: int = 8,
                 num_datasets: int = 1,
                 routing: str = 'gem',
                 num_fcs: int = 2,
                 act_cfg: ConfigType = dict(type='ReLU', inplace=True),
                 ffn_drop: float = 0.,
                 dropout_layer: OptConfigType = None,
                 add_identity: bool = True,
                 capacity_factor: float = 1.25,
                 eval_capacity_factor: Optional[float] = None,
                 gate_noise: Optional[float] = None,
                 aux_loss_weight: float = 0.1,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if routing not in ROUTING_MODES:
            raise ValueError(f'routing must be one of {ROUTING_MODES}, got '
                             f'{routing!r}')
        if num_fcs != 2:
            raise ValueError(f'MoEFFN supports num_fcs=2 only, got {num_fcs}')
        if num_experts < 1 or num_datasets < 1:
            raise ValueError(
                'num_experts and num_datasets must be >= 1, got '
                f'num_experts={num_experts}, num_datasets={num_datasets}')
        if gate_noise is None:
            gate_noise = 1.0 if routing == 'moe' else 0.0
        if routing == 'moe' and gate_noise <= 0:
            raise ValueError('routing="moe" needs gate_noise > 0 for its load '
                             f'loss, got gate_noise={gate_noise}')
        self.embed_dims = embed_dims
        self.feedforward_channels = feedforward_channels
        self.num_experts = num_experts
        self.num_datasets = num_datasets
        self.routing = routing
        self.num_fcs = num_fcs
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.aux_loss_weight = aux_loss_weight
        self.add_identity = add_identity

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
        if routing == 'gem':
            self.router = None
        else:
            self.router = TopOneRouter(embed_dims, num_experts, gate_noise)
        self.register_buffer(
            'plan_quota',
            torch.zeros(num_datasets, num_experts, dtype=torch.long))
        self.aux_losses: Dict[str, Tensor] = {}
        self.routing_stats: Dict[str, Tensor] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise every expert like a fresh pair of ``nn.Linear``.

        Each expert slice gets ``nn.Linear``'s default init (Kaiming-uniform
        with ``a=sqrt(5)`` on its own fan-in, bias uniform in
        ``+-1/sqrt(fan_in)``), not an init over the 3-d tensor.
        """
        for weight, bias in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1 / math.sqrt(weight.size(2))
            for e in range(self.num_experts):
                nn.init.kaiming_uniform_(weight.data[e], a=math.sqrt(5))
                nn.init.uniform_(bias.data[e], -bound, bound)

    def xavier_init_experts(self) -> None:
        """Xavier-uniform init of every expert's weight matrices, per slice.

        This is what DINO's ``init_weights`` does to a dense FFN's linear
        weights (biases keep their ``nn.Linear`` init); applied to the 3-d
        tensors directly it would use wrong fans, so detectors call this
        after their own init.
        """
        for weight in (self.w1, self.w2):
            for e in range(self.num_experts):
                nn.init.xavier_uniform_(weight.data[e])

    @torch.no_grad()
    def upcycle_from_ffn(self, ffn: Union[nn.Module, Mapping[str,
                                                              Tensor]]) -> None:
        """Copy a dense FFN into every expert (sparse upcycling).

        Args:
            ffn (nn.Module | Mapping[str, Tensor]): An mmcv ``FFN`` with
                ``num_fcs=2`` or its state dict, with keys
                ``layers.0.0.weight``, ``layers.0.0.bias``, ``layers.1.weight``
                and ``layers.1.bias``.
        """
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

    @torch.no_grad()
    def install_plan(self, quota: Tensor) -> None:
        """Copy a plan's quota table into the ``plan_quota`` buffer.

        Args:
            quota (Tensor): ``(num_datasets, num_experts)`` integer table.
        """
        quota = torch.as_tensor(quota)
        if tuple(quota.shape) != tuple(self.plan_quota.shape):
            raise ValueError(
                f'plan quota has shape {tuple(quota.shape)}, the model is '
                f'configured for {tuple(self.plan_quota.shape)} '
                '(num_datasets x num_experts)')
        if bool((quota < 0).any()):
            raise ValueError(f'plan quota has negative entries: {quota}')
        self.plan_quota.copy_(quota.to(self.plan_quota))

    def has_plan(self) -> bool:
        """bool: Whether a non-zero plan quota table is installed."""
        return plan_is_installed(self.plan_quota)

    def _expert(self, weights: Tuple[Sequence[Tensor], ...], e: int,
                tokens: Tensor) -> Tensor:
        """Apply expert ``e`` (slices of the unbound weights) to tokens."""
        w1, b1, w2, b2 = weights
        hidden = self.drop(self.activate(F.linear(tokens, w1[e], b1[e])))
        return self.drop(F.linear(hidden, w2[e], b2[e]))

    def _image_experts(self, x: Tensor, dataset_ids: Optional[Tensor],
                       image_buckets: Optional[Tensor]) -> Tensor:
        """Planned expert of each image, on the device of ``x``."""
        return self._image_experts_cpu(x, dataset_ids,
                                       image_buckets).to(x.device)

    def _image_experts_cpu(self, x: Tensor, dataset_ids: Optional[Tensor],
                           image_buckets: Optional[Tensor]) -> Tensor:
        """Planned expert of each image, computed and returned on the CPU."""
        if dataset_ids is None or image_buckets is None:
            raise ValueError(
                f'MoEFFN(routing={self.routing!r}) needs the dataset_ids and '
                'image_buckets of the batch\'s images as keyword arguments')
        if x.dim() != 3 or x.size(0) != dataset_ids.numel():
            raise ValueError(
                f'MoEFFN(routing={self.routing!r}) expects batch-first tokens '
                f'(B, N, C) with B={dataset_ids.numel()} images, got shape '
                f'{tuple(x.shape)}')
        # Route on the host: the table is tiny and the grouping of images
        # needs the counts there anyway, so one transfer replaces a device
        # sync per check.
        quota = self.plan_quota.cpu()
        if not plan_is_installed(quota):
            raise RuntimeError(NO_PLAN_MESSAGE)
        return route_images(quota, dataset_ids.cpu(), image_buckets.cpu())

    def forward(self,
                x: Tensor,
                identity: Optional[Tensor] = None,
                dataset_ids: Optional[Tensor] = None,
                image_buckets: Optional[Tensor] = None) -> Tensor:
        """Forward function.

        Args:
            x (Tensor): Tokens ``(B, N, C)``, batch first (any ``(..., C)``
                shape in ``'moe'`` mode and in ``'damex'`` mode at test
                time).
            identity (Tensor, optional): Residual added to the output; None
                uses ``x``. Defaults to None.
            dataset_ids (Tensor, optional): ``(B,)`` dataset index of each
                image; needed by ``'gem'`` and by ``'damex'`` in training.
            image_buckets (Tensor, optional): ``(B,)`` int64 image buckets;
                needed with ``dataset_ids``.

        Returns:
            Tensor: ``identity + ffn(x)`` (or ``ffn(x)`` without identity),
            the shape of ``x``.
        """
        self.aux_losses = {}
        if self.routing == 'gem':
            experts = self._image_experts_cpu(x, dataset_ids, image_buckets)
            out = self._dispatch_images(x, experts)
            tokens_per_image = x.size(1)
            image_experts = F.one_hot(
                experts, self.num_experts) * tokens_per_image
            self.routing_stats = dict(
                expert_tokens=image_experts.sum(dim=0),
                dropped_tokens=torch.zeros((), dtype=torch.long),
                image_experts=image_experts)
        else:
            out = self._token_routed_forward(x, dataset_ids, image_buckets)
        out = self.dropout_layer(out)
        if not self.add_identity:
            return out
        if identity is None:
            identity = x
        return identity + out

    def _expert_fn(self) -> ExpertFn:
        """``expert_fn(e, tokens)``: expert ``e`` of this layer on tokens."""
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
            capacity (int): Tokens each expert takes at most, in token order.

        Returns:
            tuple[Tensor, Tensor]: ``(T, C)`` gated outputs (zero for dropped
            tokens) and the ``(T,)`` bool mask of kept tokens.
        """
        return token_dispatch(tokens, experts, gates, self.num_experts, capacity,
                              self._expert_fn())

    def _token_routed_forward(self, x: Tensor, dataset_ids: Optional[Tensor],
                              image_buckets: Optional[Tensor]) -> Tensor:
        """Forward of the ``'damex'`` and ``'moe'`` modes."""
        target_experts = None
        if self.training and self.routing == 'damex':
            image_experts = self._image_experts(x, dataset_ids, image_buckets)
            target_experts = image_experts.to(x.device).repeat_interleave(
                x.size(1))
        tokens = x.reshape(-1, x.size(-1))
        routed = self.router(tokens)
        factor = self.capacity_factor
        if not self.training and self.eval_capacity_factor is not None:
            factor = self.eval_capacity_factor
        capacity = expert_capacity(tokens.size(0), self.num_experts, factor)
        out, kept = self._dispatch_tokens(tokens, routed.experts, routed.gates,
                                          capacity)
        self.routing_stats = dict(
            expert_tokens=torch.bincount(
                routed.experts[kept], minlength=self.num_experts),
            dropped_tokens=(~kept).sum())
        if x.dim() == 3:
            num_images, num_queries = x.shape[:2]
            image_idx = torch.arange(
                tokens.size(0), device=x.device) // num_queries
            pairs = image_idx[kept] * self.num_experts + routed.experts[kept]
            self.routing_stats['image_experts'] = torch.bincount(
                pairs, minlength=num_images * self.num_experts).view(
                    num_images, self.num_experts)
        if self.training:
            if self.routing == 'damex':
                loss = router_ce_loss(routed.clean_logits, target_experts)
                self.aux_losses = {
                    'loss_damex_ce': self.aux_loss_weight * loss
                }
            else:
                loss = importance_load_loss(routed.clean_logits,
                                            routed.noisy_logits,
                                            self.router.noise_std)
                self.aux_losses = {'loss_moe_aux': self.aux_loss_weight * loss}
        return out.view_as(x)

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, feedforward_channels='
                f'{self.feedforward_channels}, num_experts={self.num_experts}, '
                f'num_datasets={self.num_datasets}, routing={self.routing!r}, '
                f'capacity_factor={self.capacity_factor}')
