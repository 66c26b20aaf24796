# Copyright (c) mmgem contributors. All rights reserved.
"""MoE++: FFN experts beside zero, copy and constant experts, gating residuals."""
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmgem.registry import ROUTERS

from ..layers.batch_routing import BatchRouting
from .base_router import BaseRouter

#: Where a layer leaves its gate logits for the next MoE layer's residual.
GATE_RESIDUAL_KEY = 'moe_plus_plus_logits'


@ROUTERS.register_module()
class MoEPlusPlusRouter(BaseRouter):
    """MoE++ (Jin et al. 2024), as SkyworkAI/MoE-plus-plus's ``MOE`` layer.

    The ``E = M + num_constant + 2`` experts are the layer's ``M`` FFN
    experts, then ``num_constant`` constant experts (``w0 x + w1 v`` with
    ``(w0, w1) = softmax(W_c x)`` and a learned vector ``v``), then one copy
    expert (``x``) and one zero expert (``0``). The gate is the reference's
    two-layer gate ``W2 tanh(W1 x)`` (``8 E`` hidden units, no biases), plus
    the gating residual ``G_map(logits of the previous MoE layer)`` (the
    layers of one forward share it through ``BatchRouting.shared``). As the
    reference (its default, non-Mixtral gating): ``p = softmax(logits)``,
    top-``k`` of ``p``, the zero expert's weight set to 0, the weights
    renormalised to sum 1; with ``scale_input`` (the reference's default,
    ``moe_feature_no_mul_topk=False``) every expert sees ``k x``. The
    output is ``sum`` over the chosen experts of weight times output. No
    capacity limit.

    The released code has no balancing loss; with ``balance_tau`` set,
    :meth:`aux_loss` is the paper's heterogeneous load-balance loss
    ``E * sum_i eta_i f_i P_i`` (``f_i`` share of the top-k selections on
    expert ``i``, ``P_i`` mean gate probability, ``eta_i`` 1 for FFN experts
    and ``balance_tau`` for the zero-computation ones).

    Statistics: ``token_experts`` is each token's highest-weight FFN expert
    among its chosen ones (-1, counted as dropped, when it chose only
    zero-computation experts).

    Args:
        embed_dims (int): Token dimension.
        num_experts (int): FFN experts of the layer ``M``.
        top_k (int): Experts per token. Defaults to 2 (the reference's).
        num_constant (int): Constant experts. Defaults to 2.
        scale_input (bool): Multiply the experts' input by ``top_k``.
            Defaults to True (the reference's).
        gate_residual (bool): Add the previous layer's mapped logits.
            Defaults to True.
        balance_tau (float, optional): ``eta`` of the zero-computation
            experts in the balance loss; None: no auxiliary loss (the
            released code). Defaults to None.
    """
    name = 'moe_plus_plus'
    aux_loss_name = 'loss_moe_pp_balance'  # only with balance_tau

    def __init__(self, embed_dims: int, num_experts: int, top_k: int = 2,
                 num_constant: int = 2, scale_input: bool = True,
                 gate_residual: bool = True,
                 balance_tau: Optional[float] = None) -> None:
        super().__init__(embed_dims, num_experts)
        self.top_k = top_k
        self.num_constant = num_constant
        self.total_experts = num_experts + num_constant + 2
        if not 1 <= top_k <= self.total_experts:
            raise ValueError(f'top_k must be in [1, {self.total_experts}], got {top_k}')
        self.scale_input = scale_input
        self.use_gate_residual = gate_residual
        self.balance_tau = balance_tau
        e = self.total_experts
        self.wg = nn.Sequential(
            nn.Linear(embed_dims, 8 * e, bias=False), nn.Tanh(),
            nn.Linear(8 * e, e, bias=False))
        self.gate_map = nn.Linear(e, e, bias=False)
        self.constants = nn.Parameter(torch.randn(num_constant, embed_dims))
        self.constant_gates = nn.ModuleList(
            nn.Linear(embed_dims, 2, bias=False) for _ in range(num_constant))

    def gates(self, tokens: Tensor, previous: Optional[Tensor]):
        """Logits, chosen experts and their renormalised weights.

        Args:
            tokens (Tensor): ``(T, C)``.
            previous (Tensor, optional): ``(T, E)`` logits of the previous
                MoE layer.

        Returns:
            tuple[Tensor, Tensor, Tensor, Tensor]: ``(T, E)`` logits (with the
            residual), ``(T, E)`` probabilities, ``(T, k)`` experts and
            ``(T, k)`` weights.
        """
        logits = self.wg(tokens.float())
        if previous is not None:
            logits = logits + self.gate_map(previous.to(logits.dtype))
        probs = F.softmax(logits, dim=1)
        weights, experts = probs.topk(self.top_k, dim=1)
        weights = torch.where(experts == self.total_experts - 1,
                              torch.zeros_like(weights), weights)
        weights = weights / weights.sum(dim=1, keepdim=True)
        return logits, probs, experts, weights

    def _zero_computation(self, e: int, tokens: Tensor) -> Tensor:
        """Output of zero-computation expert ``e`` (index ``>= M``)."""
        c = e - self.num_experts
        if c < self.num_constant:
            w = F.softmax(self.constant_gates[c](tokens), dim=-1).to(tokens.dtype)
            return w[:, :1] * tokens + w[:, 1:] * self.constants[c].to(tokens.dtype)
        if c == self.num_constant:
            return tokens  # copy
        return torch.zeros_like(tokens)  # zero

    def forward(self, layer: nn.Module, x: Tensor,
                routing: Optional[BatchRouting]) -> Tensor:
        """Mix every token's chosen experts.

        Args:
            layer (MoEFFN): The calling layer (its FFN experts, all local).
            x (Tensor): ``(..., C)`` tokens.
            routing (BatchRouting, optional): Carries the gating residual
                between the MoE layers of one forward.

        Returns:
            Tensor: The MoE++ output, the shape of ``x``.
        """
        if getattr(layer, 'is_sharded', False):
            raise RuntimeError('MoEPlusPlusRouter sends a token to several experts: '
                               'expert parallelism is not supported')
        tokens = x.reshape(-1, x.size(-1))
        previous = None
        if self.use_gate_residual and routing is not None:
            previous = routing.shared.get(GATE_RESIDUAL_KEY)
            if previous is not None and previous.size(0) != tokens.size(0):
                previous = None
        logits, probs, experts, weights = self.gates(tokens, previous)
        if self.use_gate_residual and routing is not None:
            routing.shared[GATE_RESIDUAL_KEY] = logits
        inputs = tokens * self.top_k if self.scale_input else tokens
        expert_fn = layer._expert_fn()
        out = torch.zeros_like(tokens)
        for e in range(self.total_experts):
            token_idx, slot = (experts == e).nonzero(as_tuple=True)
            if not token_idx.numel():
                continue
            chosen = inputs.index_select(0, token_idx)
            y = (expert_fn(e, chosen) if e < self.num_experts else
                 self._zero_computation(e, chosen))
            out = out.index_add(0, token_idx, y * weights[token_idx, slot, None].to(y.dtype))
        ffn_weight = torch.where(experts < self.num_experts, weights, weights.new_full((), -1.))
        best = ffn_weight.argmax(dim=1)
        top_ffn = experts.gather(1, best[:, None]).squeeze(1)
        kept = (experts < self.num_experts).any(dim=1)
        top_ffn = torch.where(kept, top_ffn, torch.zeros_like(top_ffn))
        self.routing_stats = self.token_stats(x, top_ffn, kept)
        self.routing_stats['zero_comp_choices'] = (experts >= self.num_experts).sum()
        self.routing_stats['choices'] = torch.tensor(experts.numel())
        self._state = {}
        if self.training and self.balance_tau is not None:
            self._state = dict(probs=probs, experts=experts)
        return out.to(x.dtype).view_as(x)

    def aux_loss(self, token_mask: Optional[Tensor] = None) -> Optional[Tensor]:
        """The heterogeneous load-balance loss (``balance_tau`` set)."""
        if not self._state:
            return None
        probs, experts = self._state['probs'], self._state['experts']
        e = self.total_experts
        f = torch.bincount(experts.reshape(-1), minlength=e).float() / experts.numel()
        p = probs.mean(dim=0)
        eta = torch.ones(e, device=probs.device)
        eta[self.num_experts:] = self.balance_tau
        return e * (eta * f * p).sum()

    @classmethod
    def log_scalars(cls, stats: Sequence[Dict[str, Tensor]],
                    training: bool) -> Dict[str, Tensor]:
        """``moe_zero_comp_share``: share of choices on zero-computation experts."""
        zero = sum(s['zero_comp_choices'] for s in stats)
        total = sum(s['choices'] for s in stats)
        return dict(moe_zero_comp_share=zero.float() / total.clamp(min=1).float())

    def extra_repr(self) -> str:
        return (f'num_experts={self.num_experts}, total_experts={self.total_experts}, '
                f'top_k={self.top_k}')
