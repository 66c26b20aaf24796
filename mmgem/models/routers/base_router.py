# Copyright (c) mmgem contributors. All rights reserved.
"""The interface every router of :class:`~mmgem.models.MoEFFN` implements."""
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from ..layers.batch_routing import BatchRouting


class BaseRouter(nn.Module):
    """How an MoE layer assigns its tokens (or images) to its experts.

    A router owns four things: the assignment (:meth:`forward`, which runs the
    layer's experts through the layer's dispatch functions, so expert
    parallelism keeps working), what it needs from the batch (the class
    attributes below, which the detector reads instead of testing a mode
    name), its auxiliary loss (:attr:`aux_loss_name`, :meth:`aux_loss`) and
    its statistics (:attr:`routing_stats`, :meth:`log_scalars`).

    Class attributes:
        name (str): Short label of the method in logs and plots.
        needs_plan (bool): Whether a training forward needs the planned
            expert of every image (``BatchRouting.image_experts``).
        needs_plan_at_test (bool): The same at test time.
        needs_dataset_ids (bool): Whether the forward needs
            ``BatchRouting.dataset_ids``.
        aux_loss_name (str, optional): Key of the auxiliary loss in the loss
            dict (None: the router has none).
        aux_loss_uses_token_mask (bool): Whether :meth:`aux_loss` takes the
            detector's foreground token mask (``balance_tokens``).
        image_level (bool): Whether the router routes whole images (its
            input must be batch-first ``(B, N, C)``).
        owns_experts (bool): Whether the router holds the experts' weights
            itself (e.g. factorised ones); the layer then builds no batched
            experts and hands initialisation and upcycling to the router's
            ``reset_parameters`` and ``upcycle_from_ffn`` / ``upcycled_state``.

    After every forward :attr:`routing_stats` holds ``expert_tokens``
    (``(M,)``), ``dropped_tokens`` (scalar) and, for batch-first input,
    ``image_experts`` (``(B, M)``) and ``token_experts`` (``(B, N)``, -1 for
    a dropped token; for routers that mix tokens, the expert of the largest
    weight).

    Args:
        embed_dims (int): Token dimension.
        num_experts (int): Experts of the layer.
    """
    name = 'router'
    needs_plan = False
    needs_plan_at_test = False
    needs_dataset_ids = False
    aux_loss_name: Optional[str] = None
    aux_loss_uses_token_mask = False
    image_level = False
    owns_experts = False

    def __init__(self, embed_dims: int, num_experts: int) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.num_experts = num_experts
        self.routing_stats: Dict[str, Tensor] = {}
        self._state: Dict[str, Tensor] = {}

    def forward(self, layer: nn.Module, x: Tensor,
                routing: Optional[BatchRouting]) -> Tensor:
        """Route ``x`` and return the layer's expert outputs.

        Args:
            layer (MoEFFN): The calling layer (its experts and dispatch).
            x (Tensor): Tokens ``(..., C)`` (``(B, N, C)`` for image-level
                routers).
            routing (BatchRouting, optional): The batch's routing.

        Returns:
            Tensor: The experts' combined output, the shape of ``x``
            (without the residual).
        """
        raise NotImplementedError

    def aux_loss(self, token_mask: Optional[Tensor] = None) -> Optional[Tensor]:
        """The auxiliary loss of the last training forward.

        Args:
            token_mask (Tensor, optional): ``(T,)`` or ``(B, N)`` bool mask
                of the tokens the loss covers (only read when
                :attr:`aux_loss_uses_token_mask`).

        Returns:
            Tensor | None: The unweighted scalar loss, or None (no loss, eval
            mode, or no training forward yet).
        """
        return None

    @classmethod
    def log_scalars(cls, stats: Sequence[Dict[str, Tensor]],
                    training: bool) -> Dict[str, Tensor]:
        """Router-specific scalars to log, from every MoE layer's stats.

        Args:
            stats (Sequence[dict]): :attr:`routing_stats` of every layer.
            training (bool): Whether the forward was a training one.

        Returns:
            dict[str, Tensor]: Logged values (keys without ``loss``).
        """
        return {}

    def planned_experts(self, x: Tensor,
                        routing: Optional[BatchRouting]) -> Tensor:
        """The ``(B,)`` planned expert of every image, checked.

        Args:
            x (Tensor): The layer's ``(B, N, C)`` tokens.
            routing (BatchRouting, optional): The batch's routing.

        Returns:
            Tensor: ``routing.image_experts``.
        """
        if routing is None or routing.image_experts is None:
            raise ValueError(
                f'{type(self).__name__} needs the planned expert of every '
                'image: pass routing=BatchRouting(image_experts=...) '
                '(GEMDINO computes it from its plan once per forward)')
        experts = routing.image_experts
        if x.dim() != 3 or x.size(0) != experts.numel():
            raise ValueError(
                f'{type(self).__name__} expects batch-first tokens (B, N, C) '
                f'with B={experts.numel()} images, got shape {tuple(x.shape)}')
        if experts.numel() and (int(experts.min()) < 0
                                or int(experts.max()) >= self.num_experts):
            raise ValueError(
                f'planned experts {experts.tolist()} are outside the layer\'s '
                f'{self.num_experts} experts')
        return experts

    def token_stats(self, x: Tensor, experts: Tensor,
                    kept: Tensor) -> Dict[str, Tensor]:
        """The standard statistics of a token-level top-1 assignment.

        Args:
            x (Tensor): The layer's input ``(..., C)``.
            experts (Tensor): ``(T,)`` chosen expert of every token.
            kept (Tensor): ``(T,)`` bool, the tokens an expert processed.

        Returns:
            dict[str, Tensor]: ``expert_tokens``, ``dropped_tokens`` and, for
            batch-first input, ``image_experts`` and ``token_experts``.
        """
        stats = dict(
            expert_tokens=torch.bincount(experts[kept],
                                         minlength=self.num_experts),
            dropped_tokens=(~kept).sum())
        if x.dim() == 3:
            num_images, num_tokens = x.shape[:2]
            image_idx = torch.arange(
                experts.numel(), device=x.device) // num_tokens
            pairs = image_idx[kept] * self.num_experts + experts[kept]
            stats.update(
                image_experts=torch.bincount(
                    pairs, minlength=num_images * self.num_experts).view(
                        num_images, self.num_experts),
                token_experts=experts.masked_fill(~kept, -1).view(
                    num_images, num_tokens))
        return stats

    def extra_repr(self) -> str:
        return f'num_experts={self.num_experts}'

