# Copyright (c) mmgem contributors. All rights reserved.
"""BASE / S-BASE: balanced token-to-expert assignment by Sinkhorn iterations."""
from typing import Optional

import torch
from torch import Tensor, nn

from mmgem.registry import ROUTERS

from ..layers.batch_routing import BatchRouting
from .base_router import BaseRouter


def sinkhorn(logits: Tensor, tol: float = 1e-4, max_iters: int = 1000,
             eps: float = 1e-8) -> Tensor:
    """Balanced transport plan of ``exp(logits)`` (Megatron-LM's S-BASE).

    Alternately rescales the rows (tokens) and columns (experts) of
    ``exp(logits)`` so that every token carries ``1/T`` and every expert
    ``1/M`` of the mass, until the mean change of the column scales is below
    ``tol`` (or ``max_iters``).

    Args:
        logits (Tensor): ``(T, M)`` token-expert affinities.
        tol (float): Stopping tolerance. Defaults to 1e-4 (Megatron's).
        max_iters (int): Iteration cap (Megatron has none). Defaults to 1000.
        eps (float): Added to the sums. Defaults to 1e-8.

    Returns:
        Tensor: ``(T, M)`` plan ``d1 * exp(logits) * d0[:, None]``.
    """
    cost = torch.exp(logits)
    d0 = torch.ones(cost.size(0), device=cost.device, dtype=cost.dtype)
    d1 = torch.ones(cost.size(1), device=cost.device, dtype=cost.dtype)
    d1_old = d1
    for _ in range(max_iters):
        d0 = (1 / d0.size(0)) / (torch.sum(d1 * cost, 1) + eps)
        d1 = (1 / d1.size(0)) / (torch.sum(d0[:, None] * cost, 0) + eps)
        error = torch.mean(torch.abs(d1_old - d1))
        d1_old = d1
        if error <= tol:
            break
    return d1 * cost * d0[:, None]


@ROUTERS.register_module()
class SinkhornRouter(BaseRouter):
    """Balanced top-1 routing (BASE layers, Lewis et al. 2021; S-BASE).

    Token-expert affinities are ``x . c_e`` with learned expert centroids
    ``c`` (fairseq's ``expert_centroids``, orthogonal init with gain 0.1), a
    bias-free linear gate. In training the assignment is balanced: the argmax
    over experts of the Sinkhorn plan of the affinities (S-BASE, Clark et al.
    2022, as Megatron-LM's ``sinkhorn`` computes it), with the affinities
    taken without gradient; at test time every token goes to its top-1
    affinity (fairseq's ``greedy_assignment``). No token is dropped (no
    capacity limit). The chosen expert's output is scaled by
    ``sigmoid(x . c_e)`` (fairseq's ``alpha``), which is how the centroids
    learn; the layer adds the residual, so the result equals BASE's
    ``alpha * expert(x) + (1 - alpha) * x`` with a residual expert. No
    auxiliary loss.

    Args:
        embed_dims (int): Token dimension.
        num_experts (int): Experts of the layer.
        tol (float): Sinkhorn tolerance. Defaults to 1e-4.
        max_iters (int): Sinkhorn iteration cap. Defaults to 1000.
        balanced_at_test (bool): Also balance at test time (not in the
            references). Defaults to False.
    """
    name = 'sinkhorn'

    def __init__(self,
                 embed_dims: int,
                 num_experts: int,
                 tol: float = 1e-4,
                 max_iters: int = 1000,
                 balanced_at_test: bool = False) -> None:
        super().__init__(embed_dims, num_experts)
        self.tol = tol
        self.max_iters = max_iters
        self.balanced_at_test = balanced_at_test
        centroids = torch.empty(num_experts, embed_dims)
        nn.init.orthogonal_(centroids, gain=0.1)
        self.expert_centroids = nn.Parameter(centroids)

    def assign(self, logits: Tensor) -> Tensor:
        """``(T,)`` expert of every token: balanced in training, else greedy.

        Args:
            logits (Tensor): ``(T, M)`` affinities.

        Returns:
            Tensor: int64 experts.
        """
        with torch.no_grad():
            scores = logits.detach().float()
            ok = scores.isfinite()
            if not ok.all():  # fairseq: NaNs break the assignment
                scores = torch.where(ok, scores, scores[ok].min())
            if self.training or self.balanced_at_test:
                scores = sinkhorn(scores, self.tol, self.max_iters)
            return scores.argmax(dim=1)

    def forward(self, layer: nn.Module, x: Tensor,
                routing: Optional[BatchRouting]) -> Tensor:
        """Route every token to its assigned expert, gated by the sigmoid.

        Args:
            layer (MoEFFN): The calling layer.
            x (Tensor): ``(..., C)`` tokens.
            routing (BatchRouting, optional): Not read.

        Returns:
            Tensor: Gated expert outputs, the shape of ``x``.
        """
        tokens = x.reshape(-1, x.size(-1))
        logits = tokens.matmul(self.expert_centroids.t())
        experts = self.assign(logits)
        gates = torch.sigmoid(logits.gather(1, experts[:, None]).squeeze(1))
        out, kept = layer._dispatch_tokens(tokens, experts, gates.to(tokens.dtype),
                                           max(tokens.size(0), 1))
        self.routing_stats = self.token_stats(x, experts, kept)
        return out.view_as(x)

    def extra_repr(self) -> str:
        return f'num_experts={self.num_experts}, tol={self.tol}'
