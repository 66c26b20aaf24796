# Copyright (c) mmgem contributors. All rights reserved.
"""Soft MoE: experts process slots, convex combinations of a sequence's tokens."""
from typing import List, Optional

import torch
from torch import Tensor, nn

from mmgem.registry import ROUTERS

from ..layers.batch_routing import BatchRouting
from .base_router import BaseRouter


def l2_normalize(x: Tensor, dim: int = -1, eps: float = 1e-6) -> Tensor:
    """``x / sqrt(sum(x^2) + eps)`` along ``dim`` (vmoe's ``normalize``)."""
    return x * torch.rsqrt(x.square().sum(dim=dim, keepdim=True) + eps)


def query_segments(num_tokens: int, routing: Optional[BatchRouting]) -> List[int]:
    """Lengths of the sequences an image's decoder tokens are cut into.

    Every denoising group is its own sequence (DINO's attention mask keeps
    the groups apart), and the matching queries form one sequence; so no
    slot mixes ground-truth-derived denoising queries into the matching
    queries, nor one denoising group into another.

    Args:
        num_tokens (int): Tokens per image.
        routing (BatchRouting, optional): Holds the denoising layout.

    Returns:
        list[int]: Segment lengths, summing to ``num_tokens``.
    """
    num_dn = 0 if routing is None else routing.num_denoising_queries
    groups = 0 if routing is None else routing.num_denoising_groups
    if num_dn <= 0:
        return [num_tokens]
    if groups <= 0 or num_dn % groups or num_dn > num_tokens:
        raise ValueError(
            f'cannot cut {num_tokens} tokens into {groups} denoising groups of '
            f'{num_dn} denoising queries and the matching queries')
    return [num_dn // groups] * groups + [num_tokens - num_dn]


@ROUTERS.register_module()
class SoftMoERouter(BaseRouter):
    """Soft MoE (Puigcerver et al., ICLR 2024), as vmoe's ``SoftRouter``.

    For a sequence ``X`` (``m`` tokens) and parameters ``mu`` (``C x M x
    p``: ``p`` slots per expert), with unit-normalised tokens and columns of
    ``mu`` and a learned scalar ``scale``::

        logits[t, e, s] = scale * <x_t / |x_t|, mu[:, e, s] / |mu[:, e, s]|>
        D = softmax over the tokens t   (dispatch: each slot a convex
                                         combination of the tokens)
        C = softmax over (e, s)         (combine: each token a convex
                                         combination of the slot outputs)
        slot[e, s] = sum_t D[t, e, s] x_t,   y[e, s] = expert_e(slot[e, s])
        out_t = sum_{e, s} C[t, e, s] y[e, s]

    The sequence is one image's decoder queries, cut by
    :func:`query_segments`: every denoising group and the matching queries
    are separate sequences sharing ``mu`` (fixed ``num_slots``). Nothing is
    dropped and there is no auxiliary loss. Every token reaches every
    expert, so expert parallelism (experts sharded over ranks) is not
    supported.

    Statistics: ``token_experts`` is the expert with the largest combine
    weight (summed over its slots) of each token.

    Args:
        embed_dims (int): Token dimension.
        num_experts (int): Experts of the layer.
        num_slots (int): Slots per expert ``p``. Defaults to 1.
        noise_std (float): Gaussian noise on the logits in training
            (vmoe's ``noise_std``). Defaults to 0.
    """
    name = 'soft_moe'
    image_level = True

    def __init__(self, embed_dims: int, num_experts: int, num_slots: int = 1,
                 noise_std: float = 0.0) -> None:
        super().__init__(embed_dims, num_experts)
        if num_slots < 1:
            raise ValueError(f'num_slots must be >= 1, got {num_slots}')
        self.num_slots = num_slots
        self.noise_std = noise_std
        mu = torch.empty(embed_dims, num_experts, num_slots)
        # vmoe: lecun_normal over fan-in = embed_dims
        nn.init.normal_(mu, std=embed_dims**-0.5)
        self.mu = nn.Parameter(mu)
        self.scale = nn.Parameter(torch.ones(()))

    def weights(self, x: Tensor):
        """Dispatch and combine weights of sequences ``x``.

        Args:
            x (Tensor): ``(B, m, C)`` tokens.

        Returns:
            tuple[Tensor, Tensor]: ``(B, m, M, p)`` dispatch weights (sum 1
            over ``m``) and combine weights (sum 1 over ``(M, p)``).
        """
        mu = l2_normalize(self.mu, dim=0)
        logits = torch.einsum('bmd,dnp->bmnp', l2_normalize(x) * self.scale, mu)
        if self.training and self.noise_std > 0:
            logits = logits + self.noise_std * torch.randn_like(logits)
        dispatch = logits.softmax(dim=1)
        b, m = logits.shape[:2]
        combine = logits.reshape(b, m, -1).softmax(dim=-1).view_as(logits)
        return dispatch, combine

    def forward(self, layer: nn.Module, x: Tensor,
                routing: Optional[BatchRouting]) -> Tensor:
        """Mix every sequence into slots, run the experts, mix back.

        Args:
            layer (MoEFFN): The calling layer (its experts, all local).
            x (Tensor): ``(B, N, C)`` decoder tokens.
            routing (BatchRouting, optional): The denoising layout.

        Returns:
            Tensor: ``(B, N, C)`` outputs.
        """
        if x.dim() != 3:
            raise ValueError(f'SoftMoERouter expects (B, N, C) tokens, got {tuple(x.shape)}')
        if getattr(layer, 'is_sharded', False):
            raise RuntimeError('SoftMoERouter mixes every token into every expert: '
                               'expert parallelism is not supported')
        expert_fn = layer._expert_fn()
        outs, owners = [], []
        for seq in x.split(query_segments(x.size(1), routing), dim=1):
            dispatch, combine = self.weights(seq)
            slots = torch.einsum('bmnp,bmd->bnpd', dispatch.to(seq.dtype), seq)
            b, n, p, c = slots.shape
            ys = torch.stack([
                expert_fn(e, slots[:, e].reshape(b * p, c)).view(b, p, c)
                for e in range(n)
            ], dim=1)
            outs.append(torch.einsum('bmnp,bnpd->bmd', combine.to(seq.dtype), ys))
            owners.append(combine.detach().sum(dim=-1).argmax(dim=-1))
        token_experts = torch.cat(owners, dim=1)
        self.routing_stats = self.token_stats(
            x, token_experts.reshape(-1),
            torch.ones(token_experts.numel(), dtype=torch.bool, device=x.device))
        return torch.cat(outs, dim=1)

    def extra_repr(self) -> str:
        return f'num_experts={self.num_experts}, num_slots={self.num_slots}'
