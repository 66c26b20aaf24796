# Copyright (c) mmgem contributors. All rights reserved.
"""The CP-factorised multilinear mixture of experts (μMoE) and its entmax-1.5 gate."""
import math
from typing import Tuple

import torch
from torch import Tensor, nn
from torch.autograd import Function


class _Entmax15(Function):
    """entmax-1.5 along the last dimension, exact (sort-based), with its Jacobian."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        z = (z - z.max(dim=-1, keepdim=True).values) / 2
        srt = z.sort(dim=-1, descending=True).values
        rho = torch.arange(1, z.size(-1) + 1, device=z.device, dtype=z.dtype)
        mean = srt.cumsum(dim=-1) / rho
        mean_sq = srt.square().cumsum(dim=-1) / rho
        delta = (1 - rho * (mean_sq - mean.square())) / rho
        tau = mean - delta.clamp(min=0).sqrt()
        support = (tau <= srt).sum(dim=-1, keepdim=True)
        tau_star = tau.gather(-1, support - 1)
        out = (z - tau_star).clamp(min=0).square()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        out, = ctx.saved_tensors
        root = out.sqrt()
        g = grad * root
        return g - root * (g.sum(dim=-1, keepdim=True) / root.sum(dim=-1, keepdim=True))


def entmax15(z: Tensor) -> Tensor:
    """entmax-1.5 over the last dimension (Peters et al., ACL 2019).

    ``p_i = [z_i / 2 - tau]_+^2`` with the threshold ``tau`` that makes ``p``
    sum to 1, found in closed form over the sorted scores (the ``entmax``
    package's ``entmax15`` algorithm: the support is the largest ``k`` whose
    threshold ``tau_k`` is below the ``k``-th largest half-score). Sparse: low
    scores get exactly 0. The backward is the closed-form Jacobian
    ``diag(s) - s s^T / sum(s)`` with ``s = sqrt(p)``.

    Args:
        z (Tensor): Scores ``(..., M)``.

    Returns:
        Tensor: Probabilities ``(..., M)`` summing to 1.
    """
    return _Entmax15.apply(z)


class CPMuMoELinear(nn.Module):
    """One CP-μMoE linear layer (Oldfield et al., NeurIPS 2024, Eq. 2).

    The ``(M, C + 1, O)`` weight tensor of ``M`` affine experts (bias folded
    into the input mode as a constant-one input) is kept as its rank-``R`` CP
    factors ``A`` (``M x R``, experts), ``B`` (``(C + 1) x R``, input) and
    ``D`` (``O x R``, output), ``W[n, i, o] = sum_r A[n, r] B[i, r] D[o, r]``,
    and never formed: for gates ``a`` (``M``) and input ``z = [x; 1]``::

        y_o = sum_r (a . A)_r (z . B)_r D[o, r]

    which is ``sum_n a_n (W[n]^T z)``, every expert weighted by its gate.

    Init as the reference ``CPMuMoE``: ``A ~ N(1, 1)``, ``B`` uniform in
    ``+-sqrt(1/C)``, ``D`` uniform in ``+-sqrt(1/R)``.

    Args:
        in_features (int): ``C``.
        out_features (int): ``O``.
        num_experts (int): ``M``.
        rank (int): CP rank ``R``.
    """

    def __init__(self, in_features: int, out_features: int, num_experts: int,
                 rank: int) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f'rank must be >= 1, got {rank}')
        self.in_features = in_features
        self.out_features = out_features
        self.num_experts = num_experts
        self.rank = rank
        self.expert_factor = nn.Parameter(torch.empty(num_experts, rank))
        self.input_factor = nn.Parameter(torch.empty(in_features + 1, rank))
        self.output_factor = nn.Parameter(torch.empty(out_features, rank))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's init (see the class docstring)."""
        with torch.no_grad():
            nn.init.normal_(self.expert_factor, mean=1.0, std=1.0)
            bound = math.sqrt(1 / self.in_features)
            nn.init.uniform_(self.input_factor, -bound, bound)
            bound = math.sqrt(1 / self.rank)
            nn.init.uniform_(self.output_factor, -bound, bound)

    def forward(self, x: Tensor, gates: Tensor) -> Tensor:
        """Apply the gated mixture of experts.

        Args:
            x (Tensor): ``(..., C)`` inputs.
            gates (Tensor): ``(..., M)`` expert coefficients.

        Returns:
            Tensor: ``(..., O)``.
        """
        expert = gates @ self.expert_factor
        inp = x @ self.input_factor[:-1] + self.input_factor[-1]
        return (expert * inp) @ self.output_factor.t()

    @torch.no_grad()
    def factors_from_dense(self, weight: Tensor,
                           bias: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """CP factors under which every expert is the dense ``Linear``.

        ``A = 1`` (so ``a . A = 1`` for gates summing to 1), and ``B D^T`` is
        ``[W, b]^T`` exactly, split by its SVD ``U S V^T`` as ``B = U S^1/2``,
        ``D = V S^1/2`` on the first ``k = min(C + 1, O)`` components; the
        other ``R - k`` columns get ``B = 0`` and a fresh ``D`` (they add
        nothing and are not a saddle: ``B``'s gradient there is not 0).

        Args:
            weight (Tensor): ``(O, C)`` dense weight (``nn.Linear`` layout).
            bias (Tensor): ``(O,)`` dense bias.

        Returns:
            tuple[Tensor, Tensor, Tensor]: ``expert_factor``,
            ``input_factor``, ``output_factor`` values.
        """
        shape = (self.out_features, self.in_features)
        if tuple(weight.shape) != shape or tuple(bias.shape) != shape[:1]:
            raise ValueError(
                f'dense layer has weight {tuple(weight.shape)} and bias '
                f'{tuple(bias.shape)}, the μMoE layer needs {shape} and {shape[:1]}')
        k = min(self.in_features + 1, self.out_features)
        if self.rank < k:
            raise ValueError(
                f'a rank-{self.rank} CP-μMoE layer cannot hold the dense '
                f'{self.in_features} -> {self.out_features} layer exactly (rank up '
                f'to {k}): set rank >= {k} to upcycle')
        dense = torch.cat([weight, bias[:, None]], dim=1).t().double()
        u, s, vh = torch.linalg.svd(dense, full_matrices=False)
        root = s[:k].sqrt()
        dtype = self.input_factor.dtype
        input_factor = self.input_factor.new_zeros(self.input_factor.shape)
        input_factor[:, :k] = (u[:, :k] * root).to(dtype)
        output_factor = self.output_factor.detach().clone()
        output_factor[:, :k] = (vh[:k].t() * root).to(dtype)
        return torch.ones_like(self.expert_factor), input_factor, output_factor

    def extra_repr(self) -> str:
        return (f'in_features={self.in_features}, out_features={self.out_features}, '
                f'num_experts={self.num_experts}, rank={self.rank}')
