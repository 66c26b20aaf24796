# Copyright (c) mmgem contributors. All rights reserved.
"""Learned top-1 token router of the ``damex`` and ``moe`` baselines."""
from typing import NamedTuple

import torch
from torch import Tensor, nn


class RouterOutput(NamedTuple):
    """What :class:`TopOneRouter` returns for ``T`` tokens and ``M`` experts.

    Attributes:
        clean_logits (Tensor): ``(T, M)`` router logits ``W x``.
        noisy_logits (Tensor): ``(T, M)`` logits plus gate noise (equal to
            ``clean_logits`` in eval mode or without noise).
        experts (Tensor): ``(T,)`` int64 chosen expert (argmax of the noisy
            logits).
        gates (Tensor): ``(T,)`` softmax probability of the chosen expert
            under the noisy logits; it scales the expert's output, so the
            router also learns from the detection loss.
    """
    clean_logits: Tensor
    noisy_logits: Tensor
    experts: Tensor
    gates: Tensor


class TopOneRouter(nn.Module):
    """Linear top-1 router with optional Gaussian gate noise.

    As in tutel (used by DAMEX) and V-MoE, the noise is
    ``gate_noise / num_experts * N(0, 1)`` added to the logits during
    training only.

    Args:
        embed_dims (int): Token dimension.
        num_experts (int): Number of experts.
        gate_noise (float): Noise scale; the standard deviation of the noise
            is ``gate_noise / num_experts``. 0 disables it. Defaults to 0.
        bias (bool): Whether the gate has a bias. Defaults to False.
    """

    def __init__(self,
                 embed_dims: int,
                 num_experts: int,
                 gate_noise: float = 0.0,
                 bias: bool = False) -> None:
        super().__init__()
        if gate_noise < 0:
            raise ValueError(f'gate_noise must be >= 0, got {gate_noise}')
        self.num_experts = num_experts
        self.gate_noise = float(gate_noise)
        self.gate = nn.Linear(embed_dims, num_experts, bias=bias)

    @property
    def noise_std(self) -> float:
        """float: Standard deviation of the gate noise."""
        return self.gate_noise / self.num_experts

    def forward(self, tokens: Tensor) -> RouterOutput:
        """Route tokens.

        Args:
            tokens (Tensor): ``(T, C)`` tokens.

        Returns:
            RouterOutput: Logits, chosen experts and their gate values.
        """
        clean = self.gate(tokens)
        if self.training and self.gate_noise > 0:
            noisy = clean + torch.randn_like(clean) * self.noise_std
        else:
            noisy = clean
        probs = noisy.float().softmax(dim=-1)
        gates, experts = probs.max(dim=-1)
        return RouterOutput(clean, noisy, experts, gates.to(tokens.dtype))
