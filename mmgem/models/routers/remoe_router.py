# Copyright (c) mmgem contributors. All rights reserved.
"""ReMoE: ReLU routing with an adaptive L1 regulariser targeting k experts."""
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from mmgem.registry import ROUTERS

from ..layers.batch_routing import BatchRouting
from .base_router import BaseRouter


@ROUTERS.register_module()
class ReMoERouter(BaseRouter):
    """ReMoE (Wang et al., ICLR 2025), as thu-ml/ReMoE's Megatron router.

    Gates ``g = ReLU(W x)``; every expert with ``g_e > 0`` processes the
    token and the outputs are summed with weights ``g_e`` (no top-k, no
    capacity, no renormalisation). In training the auxiliary loss is the
    load-balanced L1 regulariser of the reference (Megatron's switch
    load-balancing formula applied to the ReLU gates)::

        L = lambda * M / (T^2 k) * sum_e (sum_t g_te) * n_e

    with ``n_e`` the tokens with ``g_e > 0`` (no gradient) and ``k =
    num_active``. After each training forward the coefficient adapts towards
    the target sparsity ``1 - k / M``:
    ``lambda <- lambda * alpha ** sign((1 - k/M) - sparsity)``, ``alpha =
    1.2``, ``sparsity`` the share of zero gates of this forward.
    ``lambda`` is a buffer (checkpointed). :meth:`aux_loss` returns ``L``
    (``lambda`` included), so the detector's ``aux_loss_weight`` and layer
    mean scale it once more; ``lambda`` adapts regardless.

    Statistics: ``token_experts`` is each token's largest-gate expert (-1
    when no gate is positive: such a token gets no FFN output and counts as
    dropped); ``expert_tokens`` counts that expert only.

    Args:
        embed_dims (int): Token dimension.
        num_experts (int): Experts of the layer.
        num_active (float): Target active experts per token ``k``.
            Defaults to 1.
        l1_coeff (float): Initial ``lambda``. Defaults to 1e-8 (the paper's).
        multiplier (float): ``alpha``. Defaults to 1.2.
        init_std (float): Std of the gate's normal init (Megatron's
            ``init_method_std``). Defaults to 0.02.
    """
    name = 'remoe'
    aux_loss_name = 'loss_remoe_l1'

    def __init__(self, embed_dims: int, num_experts: int, num_active: float = 1,
                 l1_coeff: float = 1e-8, multiplier: float = 1.2,
                 init_std: float = 0.02) -> None:
        super().__init__(embed_dims, num_experts)
        if not 0 < num_active <= num_experts:
            raise ValueError(f'num_active must be in (0, {num_experts}], got {num_active}')
        self.num_active = num_active
        self.multiplier = multiplier
        self.gate = nn.Linear(embed_dims, num_experts, bias=False)
        nn.init.normal_(self.gate.weight, std=init_std)
        self.register_buffer('l1_coeff', torch.tensor(float(l1_coeff), dtype=torch.float64))

    @property
    def target_sparsity(self) -> float:
        """float: ``1 - k / M``."""
        return 1 - self.num_active / self.num_experts

    def l1_loss(self, gates: Tensor) -> Tensor:
        """The load-balanced L1 regulariser of ``(T, M)`` ReLU gates, times lambda."""
        num_tokens = gates.size(0)
        counts = (gates > 0).sum(dim=0).to(gates.dtype)
        scale = self.num_experts / (num_tokens * num_tokens * self.num_active)
        return float(self.l1_coeff) * scale * (gates.sum(dim=0) * counts).sum()

    def forward(self, layer: nn.Module, x: Tensor,
                routing: Optional[BatchRouting]) -> Tensor:
        """Run every token through each expert of positive gate.

        Args:
            layer (MoEFFN): The calling layer (its experts, all local).
            x (Tensor): ``(..., C)`` tokens.
            routing (BatchRouting, optional): Not read.

        Returns:
            Tensor: ``sum_e g_e expert_e(x)``, the shape of ``x``.
        """
        if getattr(layer, 'is_sharded', False):
            raise RuntimeError('ReMoERouter sends a token to several experts: expert '
                               'parallelism is not supported')
        tokens = x.reshape(-1, x.size(-1))
        gates = torch.relu(self.gate(tokens))
        active = gates > 0
        expert_fn = layer._expert_fn()
        out = torch.zeros_like(tokens)
        for e in range(self.num_experts):
            idx = active[:, e].nonzero().squeeze(1)
            if idx.numel():
                y = expert_fn(e, tokens.index_select(0, idx))
                out = out.index_add(0, idx, y * gates.index_select(0, idx)[:, e:e + 1])
        kept = active.any(dim=1)
        top = gates.argmax(dim=1)
        self.routing_stats = self.token_stats(x, top, kept)
        self.routing_stats['active_experts'] = active.sum()
        self._state = {}
        if self.training:
            self._state = dict(loss=self.l1_loss(gates))
            sparsity = 1 - float(active.float().mean())
            sign = (self.target_sparsity > sparsity) - (self.target_sparsity < sparsity)
            with torch.no_grad():
                self.l1_coeff.mul_(self.multiplier**sign)
        return out.view_as(x)

    def aux_loss(self, token_mask: Optional[Tensor] = None) -> Optional[Tensor]:
        """The L1 regulariser of the last training forward (lambda included)."""
        return self._state.get('loss') if self._state else None

    @classmethod
    def log_scalars(cls, stats: Sequence[Dict[str, Tensor]],
                    training: bool) -> Dict[str, Tensor]:
        """``moe_active_experts``: mean active experts per token over the layers."""
        tokens = sum(s['expert_tokens'].sum() + s['dropped_tokens'] for s in stats)
        active = sum(s['active_experts'] for s in stats)
        return dict(moe_active_experts=active.float() / tokens.clamp(min=1).float())

    def extra_repr(self) -> str:
        return (f'num_experts={self.num_experts}, num_active={self.num_active}, '
                f'l1_coeff={float(self.l1_coeff):.3g}')
