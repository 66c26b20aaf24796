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

from .batch_routing import BatchRouting
from .dispatch import CAPACITY_PRIORITIES, ExpertFn, expert_capacity, image_dispatch, token_dispatch
from .moe_losses import importance_load_loss, router_ce_loss, tutel_load_importance_loss
from .token_router import TopOneRouter

ROUTING_MODES = ('gem', 'damex', 'moe')
#: Balancing losses of ``routing='moe'``.
BALANCE_LOSSES = ('tutel', 'vmoe')


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
    (:meth:`upcycle_from_ffn`). The layer holds no plan: the plan lives in
    the detector.

    Routing modes:

    - ``'gem'``: every image goes to ``routing.image_experts``, its planned
      expert. Images are grouped by expert and every active expert runs once
      on its images' tokens: no router parameters, no auxiliary loss, no
      padding, no token dropped. The same rule applies at test time.
    - ``'damex'``: a learned top-1 token router under a capacity limit; in
      training :meth:`aux_loss` is the cross-entropy of its clean logits to
      the planned expert of each token's image (DAMEX's loss, over all
      tokens as DAMEX's code takes it). At test time the router alone
      decides.
    - ``'moe'``: a learned top-1 router whose :meth:`aux_loss` is the
      importance + load balancing loss (``balance_loss``), over the tokens
      the detector selects (DAMEX: the foreground queries).

    Token-routed modes follow Tutel 0.2 as DAMEX runs it: gate noise
    ``gate_noise / M * N(0, 1)`` on the logits in training (1.0 by default,
    DAMEX's value for both baselines), top-1 of the noisy softmax, each
    expert keeps at most ``int(capacity_factor * ceil(T / M))`` of the ``T``
    tokens of the batch, chosen by descending gate score
    (``capacity_priority='score'``, Tutel's batch-prioritized routing;
    ``'position'`` keeps the first ones in image-major order); overflow
    tokens get no FFN output and pass through the residual. The chosen
    expert's output is scaled by its gate probability, so the router also
    learns from the task loss.

    After every forward, :attr:`routing_stats` holds ``expert_tokens``
    (``(M,)`` tokens each expert processed), ``dropped_tokens`` (scalar),
    ``image_experts`` (``(B, M)`` tokens of each image that each expert
    processed) and ``token_experts`` (``(B, N)`` expert of each token, -1
    for dropped ones); in training the token-routed modes also keep the
    router outputs that :meth:`aux_loss` needs, and ``'damex'`` counts
    ``router_hits`` (tokens routed to their planned expert).

    Args:
        embed_dims (int): Token dimension. Defaults to 256.
        feedforward_channels (int): Hidden dimension of each expert.
            Defaults to 1024.
        num_experts (int): Number of experts ``M``. Defaults to 8.
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
        capacity_priority (str): Which tokens an overfull expert keeps:
            ``'score'`` (highest gate first, Tutel's batch-prioritized
            routing, DAMEX's setting) or ``'position'`` (first in image-major
            order). Defaults to ``'score'``.
        gate_noise (float): Router noise scale (std ``gate_noise / M``) of
            the token-routed modes; ``'moe'`` needs it > 0. Defaults to 1.0
            (DAMEX's value for both DINO-MoE and DAMEX).
        balance_loss (str): Balancing loss of ``'moe'``: ``'tutel'``
            (Tutel's ``load_importance_loss``, what DAMEX's code runs) or
            ``'vmoe'`` (V-MoE's importance + load loss as the DAMEX paper
            writes it, eq. 4-8). Defaults to ``'tutel'``.
        num_datasets (int, optional): Ignored; accepted so configs written
            for earlier versions (which kept a plan table per layer) build.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 feedforward_channels: int = 1024,
                 num_experts: int = 8,
                 routing: str = 'gem',
                 num_fcs: int = 2,
                 act_cfg: ConfigType = dict(type='ReLU', inplace=True),
                 ffn_drop: float = 0.,
                 dropout_layer: OptConfigType = None,
                 add_identity: bool = True,
                 capacity_factor: float = 1.25,
                 eval_capacity_factor: Optional[float] = None,
                 capacity_priority: str = 'score',
                 gate_noise: float = 1.0,
                 balance_loss: str = 'tutel',
                 num_datasets: Optional[int] = None,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_choice('routing', routing, ROUTING_MODES)
        if num_fcs != 2:
            raise ValueError(f'MoEFFN supports num_fcs=2 only, got {num_fcs}')
        if num_experts < 1:
            raise ValueError(f'num_experts must be >= 1, got {num_experts}')
        check_choice('capacity_priority', capacity_priority, CAPACITY_PRIORITIES)
        check_choice('balance_loss', balance_loss, BALANCE_LOSSES)
        if routing == 'moe' and gate_noise <= 0:
            raise ValueError('routing="moe" needs gate_noise > 0 for its load '
                             f'loss, got gate_noise={gate_noise}')
        self.embed_dims = embed_dims
        self.feedforward_channels = feedforward_channels
        self.num_experts = num_experts
        self.routing = routing
        self.num_fcs = num_fcs
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.capacity_priority = capacity_priority
        self.balance_loss = balance_loss
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
        self.routing_stats: Dict[str, Tensor] = {}
        self._router_state: Dict[str, Tensor] = {}
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
        """Init every expert as DINO's ``init_weights`` leaves a dense FFN.

        DINO applies ``xavier_uniform_`` to every decoder parameter of more
        than one dimension: a dense FFN's linear weights get it, its 1-d
        biases keep ``nn.Linear``'s init. On the batched tensors that loop
        would use wrong fans for the ``(M, out, in)`` weights and would also
        hit the 2-d ``(M, out)`` biases, so detectors call this after their
        own init: xavier-uniform on every expert's ``(out, in)`` weight
        slice, and a fresh ``nn.Linear`` bias (uniform in
        ``+-1/sqrt(fan_in)``) for every expert.
        """
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
            x (Tensor): Tokens ``(B, N, C)``, batch first (any ``(..., C)``
                shape in ``'moe'`` mode and in ``'damex'`` mode at test
                time).
            identity (Tensor, optional): Residual added to the output; None
                uses ``x``. Defaults to None.
            routing (BatchRouting, optional): The batch's routing; its
                ``image_experts`` are needed by ``'gem'`` and by ``'damex'``
                in training.

        Returns:
            Tensor: ``identity + ffn(x)`` (or ``ffn(x)`` without identity),
            the shape of ``x``.
        """
        self._router_state = {}
        if self.routing == 'gem':
            experts = self._planned_experts(x, routing)
            out = self._dispatch_images(x, experts)
            num_images, num_tokens = x.shape[:2]
            image_experts = F.one_hot(experts, self.num_experts) * num_tokens
            self.routing_stats = dict(
                expert_tokens=image_experts.sum(dim=0),
                dropped_tokens=torch.zeros((), dtype=torch.long),
                image_experts=image_experts,
                token_experts=experts[:, None].expand(num_images, num_tokens))
        else:
            out = self._token_routed_forward(x, routing)
        out = self.dropout_layer(out)
        if not self.add_identity:
            return out
        if identity is None:
            identity = x
        return identity + out

    def _planned_experts(self, x: Tensor,
                         routing: Optional[BatchRouting]) -> Tensor:
        """The ``(B,)`` planned expert of every image, on the host."""
        if routing is None or routing.image_experts is None:
            raise ValueError(
                f'MoEFFN(routing={self.routing!r}) needs the planned expert '
                'of every image: pass routing=BatchRouting(image_experts=...) '
                '(GEMDINO computes it from its plan once per forward)')
        experts = routing.image_experts
        if x.dim() != 3 or x.size(0) != experts.numel():
            raise ValueError(
                f'MoEFFN(routing={self.routing!r}) expects batch-first tokens '
                f'(B, N, C) with B={experts.numel()} images, got shape '
                f'{tuple(x.shape)}')
        if experts.numel() and (int(experts.min()) < 0
                                or int(experts.max()) >= self.num_experts):
            raise ValueError(
                f'planned experts {experts.tolist()} are outside the layer\'s '
                f'{self.num_experts} experts')
        return experts

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
            capacity (int): Tokens each expert takes at most, chosen as
                ``capacity_priority`` says.

        Returns:
            tuple[Tensor, Tensor]: ``(T, C)`` gated outputs (zero for dropped
            tokens) and the ``(T,)`` bool mask of kept tokens.
        """
        return token_dispatch(tokens, experts, gates, self.num_experts, capacity,
                              self._expert_fn(), self.capacity_priority)

    def _token_routed_forward(self, x: Tensor,
                              routing: Optional[BatchRouting]) -> Tensor:
        """Forward of the ``'damex'`` and ``'moe'`` modes."""
        tokens = x.reshape(-1, x.size(-1))
        routed = self.router(tokens)
        factor = self.capacity_factor
        if not self.training and self.eval_capacity_factor is not None:
            factor = self.eval_capacity_factor
        capacity = expert_capacity(tokens.size(0), self.num_experts, factor)
        out, kept = self._dispatch_tokens(tokens, routed.experts, routed.gates,
                                          capacity)
        token_experts = routed.experts.masked_fill(~kept, -1)
        self.routing_stats = dict(
            expert_tokens=torch.bincount(
                routed.experts[kept], minlength=self.num_experts),
            dropped_tokens=(~kept).sum())
        if x.dim() == 3:
            num_images, num_tokens = x.shape[:2]
            image_idx = torch.arange(
                tokens.size(0), device=x.device) // num_tokens
            pairs = image_idx[kept] * self.num_experts + routed.experts[kept]
            self.routing_stats.update(
                image_experts=torch.bincount(
                    pairs, minlength=num_images * self.num_experts).view(
                        num_images, self.num_experts),
                token_experts=token_experts.view(num_images, num_tokens))
        if self.training:
            self._router_state = dict(
                clean_logits=routed.clean_logits,
                noisy_logits=routed.noisy_logits,
                experts=routed.experts)
            if self.routing == 'damex':
                target = self._planned_experts(x, routing)
                target = target.to(x.device).repeat_interleave(x.size(1))
                self._router_state['target_experts'] = target
                self.routing_stats['router_hits'] = (
                    routed.experts == target).sum()
        return out.view_as(x)

    def aux_loss(self, token_mask: Optional[Tensor] = None) -> Optional[Tensor]:
        """The router's auxiliary loss of the last training forward.

        - ``'moe'``: the balancing loss (``balance_loss``) over the tokens
          selected by ``token_mask`` (DAMEX: the foreground queries; None:
          all tokens).
        - ``'damex'``: the cross-entropy of the clean router logits to the
          planned expert, over all tokens (DAMEX's code; ``token_mask`` is
          not used).

        Args:
            token_mask (Tensor, optional): ``(T,)`` or ``(B, N)`` bool mask
                over the tokens of the last forward, image-major.

        Returns:
            Tensor | None: The unweighted scalar loss; None in ``'gem'``
            mode, in eval mode, or before any training forward.
        """
        state = self._router_state
        if self.routing == 'gem' or not state:
            return None
        clean = state['clean_logits']
        if self.routing == 'damex':
            return router_ce_loss(clean, state['target_experts'])
        experts, noisy = state['experts'], state['noisy_logits']
        if token_mask is not None:
            mask = token_mask.reshape(-1).to(clean.device)
            if mask.numel() != clean.size(0):
                raise ValueError(
                    f'token_mask has {mask.numel()} entries for the '
                    f'{clean.size(0)} tokens of the last forward')
            clean, noisy, experts = clean[mask], noisy[mask], experts[mask]
        if self.balance_loss == 'tutel':
            return tutel_load_importance_loss(clean, experts, self.num_experts,
                                              self.router.gate_noise)
        return importance_load_loss(clean, noisy, self.router.noise_std)

    def extra_repr(self) -> str:
        rep = (f'embed_dims={self.embed_dims}, feedforward_channels='
               f'{self.feedforward_channels}, num_experts={self.num_experts}, '
               f'routing={self.routing!r}')
        if self.router is not None:
            rep += (f', capacity_factor={self.capacity_factor}, '
                    f'capacity_priority={self.capacity_priority!r}, '
                    f'gate_noise={self.router.gate_noise}')
        if self.routing == 'moe':
            rep += f', balance_loss={self.balance_loss!r}'
        return rep
