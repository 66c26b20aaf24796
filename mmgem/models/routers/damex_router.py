# Copyright (c) mmgem contributors. All rights reserved.
"""DAMEX: a top-1 token router trained towards each dataset's expert."""
from typing import Dict, Optional, Sequence

from torch import Tensor, nn

from mmgem.registry import ROUTERS

from ..layers.batch_routing import BatchRouting
from ..layers.moe_losses import router_ce_loss
from .top1_router import Top1Router


@ROUTERS.register_module()
class DAMEXRouter(Top1Router):
    """DAMEX's router (Jain et al., NeurIPS 2023) with GEM's plan as target.

    The token routing is :class:`Top1Router`'s; in training
    :meth:`aux_loss` is the cross-entropy of the clean router logits of every
    token to the planned expert of its image (DAMEX's loss, over all tokens as
    DAMEX's code takes it; the detector's token mask is not used). At test
    time the router alone decides, so the plan is needed in training only.

    Args:
        embed_dims (int): Token dimension.
        num_experts (int): Experts of the layer.
        gate_noise (float): Noise scale (std ``gate_noise / M``); 0 disables
            it. Defaults to 1.0 (DAMEX's value).
        balance_loss (str): Unused (DAMEX has no balancing loss); accepted
            so that layer-level options forward alike. Defaults to
            ``'tutel'``.
    """
    name = 'damex'
    needs_plan = True
    aux_loss_name = 'loss_damex_ce'
    aux_loss_uses_token_mask = False
    image_level = False

    def _check_noise(self, gate_noise: float) -> None:
        """DAMEX may train without noise: only a negative scale is wrong."""
        if gate_noise < 0:
            raise ValueError(f'gate_noise must be >= 0, got {gate_noise}')

    def forward(self, layer: nn.Module, x: Tensor,
                routing: Optional[BatchRouting]) -> Tensor:
        """:class:`Top1Router`'s routing, plus the targets in training.

        Args:
            layer (MoEFFN): The calling layer.
            x (Tensor): Tokens; ``(B, N, C)`` in training.
            routing (BatchRouting, optional): Holds ``image_experts`` in
                training.

        Returns:
            Tensor: Gated expert outputs, the shape of ``x``.
        """
        out = super().forward(layer, x, routing)
        if self.training:
            target = self.planned_experts(x, routing)
            target = target.to(x.device).repeat_interleave(x.size(1))
            self._state['target_experts'] = target
            self.routing_stats['router_hits'] = (
                self._state['experts'] == target).sum()
        return out

    def aux_loss(self, token_mask: Optional[Tensor] = None) -> Optional[Tensor]:
        """Cross-entropy of the clean logits to the planned experts.

        Args:
            token_mask (Tensor, optional): Not used (all tokens count).

        Returns:
            Tensor | None: The unweighted loss; None outside training.
        """
        if not self._state:
            return None
        return router_ce_loss(self._state['clean_logits'],
                              self._state['target_experts'])

    @classmethod
    def log_scalars(cls, stats: Sequence[Dict[str, Tensor]],
                    training: bool) -> Dict[str, Tensor]:
        """``moe_router_acc``: percent of tokens sent to their planned expert.

        Args:
            stats (Sequence[dict]): Every layer's routing statistics.
            training (bool): Whether the forward was a training one (the
                hits are counted in training only).

        Returns:
            dict[str, Tensor]: ``moe_router_acc`` in training, else empty.
        """
        if not training:
            return {}
        hits = sum(s['router_hits'] for s in stats)
        total_tokens = sum(
            s['expert_tokens'].sum() + s['dropped_tokens'] for s in stats)
        return dict(moe_router_acc=100 * hits.float() /
                    total_tokens.clamp(min=1))

    def extra_repr(self) -> str:
        return f'num_experts={self.num_experts}, gate_noise={self.gate_noise}'
