# Copyright (c) mmgem contributors. All rights reserved.
"""The routing of one batch, computed once per forward and shared by layers.

:class:`~mmgem.models.detectors.GEMDINO` looks up the GEM plan once per
forward (on the host: the table is tiny and the grouping of images needs the
counts there anyway) and hands the result to every MoE layer of the decoder
as a :class:`BatchRouting`. The layers only read it, except for
:attr:`BatchRouting.shared`, where a layer may store a value that every MoE
layer of the same forward can reuse (e.g. the expert-parallel count matrix,
which is the same for all layers in ``'gem'`` mode).
"""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from torch import Tensor


@dataclass
class BatchRouting:
    """Per-image routing of a batch.

    Attributes:
        image_experts (Tensor, optional): ``(B,)`` int64 planned expert of
            every image, on the CPU. ``'gem'`` routes by it; ``'damex'``
            trains its router towards it. None when no plan lookup was made
            (``'moe'``, or ``'damex'`` at test time).
        dataset_ids (Tensor, optional): ``(B,)`` int64 dataset each image was
            routed as (the true one, or the domain classifier's prediction
            when the dataset is unknown), on the CPU.
        num_denoising_queries (int): DINO's denoising queries, which lead
            every image's decoder tokens (0: none, e.g. at test time).
        num_denoising_groups (int): Their groups (contiguous, of equal
            size). Routers that mix the tokens of an image (Soft MoE) keep
            every group and the matching queries apart.
        shared (dict): Values computed by one MoE layer and reused by the
            others during the same forward.
    """
    image_experts: Optional[Tensor] = None
    dataset_ids: Optional[Tensor] = None
    num_denoising_queries: int = 0
    num_denoising_groups: int = 0
    shared: Dict[str, Any] = field(default_factory=dict)

    def num_images(self) -> Optional[int]:
        """int | None: Batch size, if the routing knows it."""
        for value in (self.image_experts, self.dataset_ids):
            if value is not None:
                return int(value.numel())
        return None

    def token_experts(self, num_tokens: int,
                      device: Optional[torch.device] = None) -> Tensor:
        """Planned expert of every token, image-major: ``(B * N,)``.

        Args:
            num_tokens (int): Tokens per image ``N``.
            device (torch.device, optional): Device of the result.

        Returns:
            Tensor: ``(B * N,)`` int64.
        """
        if self.image_experts is None:
            raise ValueError('this BatchRouting holds no planned experts '
                             '(image_experts is None)')
        return self.image_experts.to(device).repeat_interleave(num_tokens)
