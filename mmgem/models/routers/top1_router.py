# Copyright (c) mmgem contributors. All rights reserved.
"""Tutel's noisy top-1 token router with a balancing loss (DINO-MoE)."""
from typing import Optional

import torch
from torch import Tensor, nn

from mmgem.registry import ROUTERS
from mmgem.utils.choices import check_choice

from ..layers.batch_routing import BatchRouting
from ..layers.moe_losses import importance_load_loss, tutel_load_importance_loss
from .base_router import BaseRouter

#: Balancing losses of :class:`Top1Router`.
BALANCE_LOSSES = ('tutel', 'vmoe')


@ROUTERS.register_module()
class Top1Router(BaseRouter):
    """A learned top-1 token router, as Tutel 0.2 runs it for DAMEX.

    Gate noise ``gate_noise / M * N(0, 1)`` on the logits ``W x`` in
    training, top-1 of the noisy softmax; each expert keeps at most the
    layer's capacity of the ``T`` tokens (``MoEFFN.token_capacity``,
    chosen by the layer's ``capacity_priority``); overflow tokens get no FFN
    output and pass through the residual. The chosen expert's output is
    scaled by its gate probability, so the router also learns from the task
    loss. Its :meth:`aux_loss` is the importance + load balancing loss
    (``balance_loss``) over the tokens the detector selects (DAMEX: the
    foreground queries).

    The gate is ``self.gate`` (an ``nn.Linear`` without bias), so
    checkpoints keep the key ``...ffn.router.gate.weight``.

    Args:
        embed_dims (int): Token dimension.
        num_experts (int): Experts of the layer.
        gate_noise (float): Noise scale (std ``gate_noise / M``); must be
            > 0 for the load loss. Defaults to 1.0 (DAMEX's value).
        balance_loss (str): ``'tutel'`` (Tutel's ``load_importance_loss``,
            what DAMEX's code runs) or ``'vmoe'`` (V-MoE's importance + load
            loss as the DAMEX paper writes it). Defaults to ``'tutel'``.
    """
    name = 'moe'
    aux_loss_name = 'loss_moe_aux'
    aux_loss_uses_token_mask = True

    def __init__(self,
                 embed_dims: int,
                 num_experts: int,
                 gate_noise: float = 1.0,
                 balance_loss: str = 'tutel') -> None:
        super().__init__(embed_dims, num_experts)
        check_choice('balance_loss', balance_loss, BALANCE_LOSSES)
        self._check_noise(gate_noise)
        self.gate_noise = float(gate_noise)
        self.balance_loss = balance_loss
        self.gate = nn.Linear(embed_dims, num_experts, bias=False)

    def _check_noise(self, gate_noise: float) -> None:
        """Refuse a noise scale the router cannot train with."""
        if gate_noise <= 0:
            raise ValueError(f'{type(self).__name__} needs gate_noise > 0 for '
                             f'its load loss, got gate_noise={gate_noise}')

    @property
    def noise_std(self) -> float:
        """float: Standard deviation of the gate noise."""
        return self.gate_noise / self.num_experts

    def forward(self, layer: nn.Module, x: Tensor,
                routing: Optional[BatchRouting]) -> Tensor:
        """Route every token to its top-1 expert under the capacity limit.

        Args:
            layer (MoEFFN): The calling layer.
            x (Tensor): ``(..., C)`` tokens.
            routing (BatchRouting, optional): Not read.

        Returns:
            Tensor: Gated expert outputs, the shape of ``x``.
        """
        tokens = x.reshape(-1, x.size(-1))
        clean = self.gate(tokens)
        if self.training and self.gate_noise > 0:
            noisy = clean + torch.randn_like(clean) * self.noise_std
        else:
            noisy = clean
        probs = noisy.float().softmax(dim=-1)
        gates, experts = probs.max(dim=-1)
        capacity = layer.token_capacity(tokens.size(0))
        out, kept = layer._dispatch_tokens(tokens, experts,
                                           gates.to(tokens.dtype), capacity)
        self.routing_stats = self.token_stats(x, experts, kept)
        self._state = {}
        if self.training:
            self._state = dict(clean_logits=clean, noisy_logits=noisy,
                               experts=experts)
        return out.view_as(x)

    def aux_loss(self, token_mask: Optional[Tensor] = None) -> Optional[Tensor]:
        """The balancing loss over the tokens of ``token_mask``.

        Args:
            token_mask (Tensor, optional): ``(T,)`` or ``(B, N)`` bool mask
                over the tokens of the last forward, image-major (None: all).

        Returns:
            Tensor | None: The unweighted loss; None outside training.
        """
        state = self._state
        if not state:
            return None
        clean, noisy = state['clean_logits'], state['noisy_logits']
        experts = state['experts']
        if token_mask is not None:
            mask = token_mask.reshape(-1).to(clean.device)
            if mask.numel() != clean.size(0):
                raise ValueError(
                    f'token_mask has {mask.numel()} entries for the '
                    f'{clean.size(0)} tokens of the last forward')
            clean, noisy, experts = clean[mask], noisy[mask], experts[mask]
        if self.balance_loss == 'tutel':
            return tutel_load_importance_loss(clean, experts, self.num_experts,
                                              self.gate_noise)
        return importance_load_loss(clean, noisy, self.noise_std)

    def extra_repr(self) -> str:
        return (f'num_experts={self.num_experts}, gate_noise='
                f'{self.gate_noise}, balance_loss={self.balance_loss!r}')
