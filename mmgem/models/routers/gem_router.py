# Copyright (c) mmgem contributors. All rights reserved.
"""GEM: every image goes to the expert the global plan maps it to."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmgem.registry import ROUTERS

from ..layers.batch_routing import BatchRouting
from .base_router import BaseRouter


@ROUTERS.register_module()
class GEMRouter(BaseRouter):
    """Plan routing: image ``b`` goes to ``routing.image_experts[b]``.

    Images are grouped by expert and every active expert runs once on its
    images' tokens (the layer's ``_dispatch_images``): no router parameters,
    no auxiliary loss, no padding, no token dropped. The same rule applies at
    test time.

    Args:
        embed_dims (int): Token dimension.
        num_experts (int): Experts of the layer.
    """
    name = 'gem'
    needs_plan = True
    needs_plan_at_test = True
    image_level = True

    def forward(self, layer: nn.Module, x: Tensor,
                routing: Optional[BatchRouting]) -> Tensor:
        """Run every image through its planned expert.

        Args:
            layer (MoEFFN): The calling layer.
            x (Tensor): ``(B, N, C)`` tokens.
            routing (BatchRouting): Holds ``image_experts``.

        Returns:
            Tensor: ``(B, N, C)`` expert outputs.
        """
        experts = self.planned_experts(x, routing)
        out = layer._dispatch_images(x, experts)
        num_images, num_tokens = x.shape[:2]
        image_experts = F.one_hot(experts, self.num_experts) * num_tokens
        self.routing_stats = dict(
            expert_tokens=image_experts.sum(dim=0),
            dropped_tokens=torch.zeros((), dtype=torch.long),
            image_experts=image_experts,
            token_experts=experts[:, None].expand(num_images, num_tokens))
        return out
