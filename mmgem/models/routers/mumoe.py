# Copyright (c) mmgem contributors. All rights reserved.
"""μMoE: a multilinear mixture of experts with factorised expert weights."""
from typing import Dict, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmgem.registry import ROUTERS

from ..layers.batch_routing import BatchRouting
from ..layers.cp_mumoe import CPMuMoELinear, entmax15
from .base_router import BaseRouter
from .remoe_router import ReMoERouter


def matched_rank(embed_dims: int, feedforward_channels: int, num_experts: int) -> int:
    """The CP rank at which a two-layer CP-μMoE has the parameters of ``M`` FFN experts.

    ``M (2 C H + H + C)`` parameters of ``M`` experts over ``2 (M + C + H + 1)``
    per rank (both layers' three factors), rounded down.

    Args:
        embed_dims (int): ``C``.
        feedforward_channels (int): ``H``.
        num_experts (int): ``M``.

    Returns:
        int: The rank (at least 1).
    """
    c, h, m = embed_dims, feedforward_channels, num_experts
    return max(1, m * (2 * c * h + h + c) // (2 * (m + c + h + 1)))


@ROUTERS.register_module()
class MuMoERouter(BaseRouter):
    """μMoE (Oldfield et al., NeurIPS 2024), as the reference ``MuMoE`` with
    ``CPMuMoE``, ``hierarchy=1``, ``normalization='ln'``, ``second_dim > 0``.

    Every token gets dense-but-sparse expert coefficients
    ``a = entmax15(LN(x W_g))`` (``W_g``: ``C x M``, zero init; LayerNorm
    without affine), and is processed by *all* experts at once through two
    CP-factorised layers (:class:`~mmgem.models.layers.cp_mumoe.CPMuMoELinear`)
    sharing ``a``::

        y = muMoE_2(GELU(muMoE_1(x, a)), a)

    The router owns the experts (:attr:`owns_experts`): the layer builds no
    batched ``w1``/``w2`` (every parameter takes part in the forward, so DDP
    needs no ``find_unused_parameters``). Upcycling (:meth:`upcycle_from_ffn`)
    sets every expert to the dense FFN exactly (needs ``rank >= min(C + 1,
    H)`` and ``>= min(H + 1, C)``); the activation stays GELU. Every token
    reaches every expert, so expert parallelism is refused.

    Statistics: ``token_experts`` is each token's largest coefficient;
    ``active_experts`` counts the nonzero coefficients (logged as
    ``moe_active_experts``, mean per token).

    Args:
        embed_dims (int): ``C``.
        num_experts (int): ``M``.
        feedforward_channels (int): Hidden width ``H`` (filled in by the
            layer).
        rank (int, optional): CP rank ``R`` of both layers; None matches the
            parameters of ``M`` FFN experts (:func:`matched_rank`).
            Defaults to None.
        upcycle_gate_std (float): Standard deviation of the normal gate
            that upcycling (:meth:`upcycle_from_ffn`) draws. The reference's
            zero gate with identical upcycled experts is a fixed point: the
            coefficients are uniform, the gate's gradient is zero (every
            expert gives the same output) and every expert's gradient is the
            same, so the layer stays the dense FFN for good. A random gate
            breaks the tie, as sparse upcycling's randomly initialised
            router does; the output at upcycling is still the dense FFN's.
            0 keeps the zero gate. Defaults to 0.02.
    """
    name = 'mumoe'
    owns_experts = True

    def __init__(self, embed_dims: int, num_experts: int,
                 feedforward_channels: int = 1024,
                 rank: Optional[int] = None,
                 upcycle_gate_std: float = 0.02) -> None:
        super().__init__(embed_dims, num_experts)
        if upcycle_gate_std < 0:
            raise ValueError(f'upcycle_gate_std must be >= 0, got {upcycle_gate_std}')
        self.upcycle_gate_std = upcycle_gate_std
        if rank is None:
            rank = matched_rank(embed_dims, feedforward_channels, num_experts)
        self.feedforward_channels = feedforward_channels
        self.rank = rank
        self.gate = nn.Parameter(torch.zeros(embed_dims, num_experts))
        self.fc1 = CPMuMoELinear(embed_dims, feedforward_channels, num_experts, rank)
        self.fc2 = CPMuMoELinear(feedforward_channels, embed_dims, num_experts, rank)

    def reset_parameters(self) -> None:
        """The reference's init: zero gate, :class:`CPMuMoELinear` factors."""
        with torch.no_grad():
            self.gate.zero_()
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def coefficients(self, x: Tensor) -> Tensor:
        """Expert coefficients ``entmax15(LN(x W_g))`` (``(..., M)``, float32)."""
        logits = x.float() @ self.gate.float()
        return entmax15(F.layer_norm(logits, (self.num_experts, )))

    def forward(self, layer: nn.Module, x: Tensor,
                routing: Optional[BatchRouting]) -> Tensor:
        """Run every token through the factorised mixture of all experts.

        Args:
            layer (MoEFFN): The calling layer (its dropout).
            x (Tensor): ``(..., C)`` tokens.
            routing (BatchRouting, optional): Not read.

        Returns:
            Tensor: ``(..., C)`` outputs.
        """
        if getattr(layer, 'is_sharded', False):
            raise RuntimeError('MuMoERouter mixes every token through every expert: '
                               'expert parallelism is not supported')
        gates = self.coefficients(x).to(x.dtype)
        hidden = layer.drop(F.gelu(self.fc1(x, gates)))
        out = layer.drop(self.fc2(hidden, gates))
        flat = gates.detach().reshape(-1, self.num_experts)
        self.routing_stats = self.token_stats(
            x, flat.argmax(dim=1),
            torch.ones(flat.size(0), dtype=torch.bool, device=x.device))
        self.routing_stats['active_experts'] = (flat > 0).sum()
        return out

    @classmethod
    def log_scalars(cls, stats: Sequence[Dict[str, Tensor]],
                    training: bool) -> Dict[str, Tensor]:
        """``moe_active_experts``: mean nonzero coefficients per token."""
        return ReMoERouter.log_scalars(stats, training)

    @torch.no_grad()
    def upcycle_from_ffn(self, ffn: Union[nn.Module, Mapping[str, Tensor]]) -> None:
        """Set every expert of both layers to a dense FFN (sparse upcycling).

        The gate is drawn anew (``upcycle_gate_std``), see the class.

        Args:
            ffn (nn.Module | Mapping[str, Tensor]): An mmcv ``FFN`` with
                ``num_fcs=2`` or its state dict.
        """
        for name, value in self.upcycled_state(ffn).items():
            self.get_parameter(name).copy_(value)

    @torch.no_grad()
    def upcycled_state(self, ffn: Union[nn.Module, Mapping[str, Tensor]]
                       ) -> Dict[str, Tensor]:
        """The factors of :meth:`upcycle_from_ffn`, without changing the router.

        Args:
            ffn (nn.Module | Mapping[str, Tensor]): An mmcv ``FFN`` with
                ``num_fcs=2`` or its state dict (``layers.0.0.weight``,
                ``layers.0.0.bias``, ``layers.1.weight``, ``layers.1.bias``).

        Returns:
            dict[str, Tensor]: Parameter name (relative to the router) ->
            value, for both layers' three factors and, with
            ``upcycle_gate_std > 0``, the gate (a normal draw).
        """
        state = ffn.state_dict() if isinstance(ffn, nn.Module) else ffn
        dense = dict(fc1='layers.0.0.', fc2='layers.1.')
        missing = [p + s for p in dense.values() for s in ('weight', 'bias')
                   if p + s not in state]
        if missing:
            raise KeyError(f'dense FFN state dict lacks {missing}; it has {sorted(state)}')
        out = {}
        for name, prefix in dense.items():
            fc = getattr(self, name)
            values = fc.factors_from_dense(state[prefix + 'weight'].to(fc.input_factor),
                                           state[prefix + 'bias'].to(fc.input_factor))
            for key, value in zip(('expert_factor', 'input_factor', 'output_factor'), values):
                out[f'{name}.{key}'] = value
        if self.upcycle_gate_std > 0:
            out['gate'] = torch.randn_like(self.gate) * self.upcycle_gate_std
        return out

    def extra_repr(self) -> str:
        return f'num_experts={self.num_experts}, rank={self.rank}'
