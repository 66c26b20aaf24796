# Copyright (c) mmgem contributors. All rights reserved.
"""A classifier's scores restricted to each image's label range, for a block.

mmdet's :meth:`DINO.pre_decoder` ranks the encoder proposals by the maximum
of the encoder classifier's output over all classes. GEM ranks each image's
proposals by the maximum over its dataset's classes only, and hands the loss
the selected proposals' scores of all classes. :class:`RestrictedScores`
lets :class:`mmgem.models.GEMDINO` call mmdet's ``pre_decoder`` unchanged:
inside the ``with`` block the classifier's output is masked to the label
ranges (so mmdet's top-k ranks by the image's classes) and the unmasked
output is kept (so the selected proposals' scores of all classes can be
gathered afterwards). The forward hook that does this is removed when the
block ends, also on an exception; nothing outside the block changes.
"""
from typing import Optional

import torch
from torch import Tensor, nn

from .label_space import label_range_mask


class RestrictedScores:
    """Mask a classifier's output to per-image label ranges in a block.

    Args:
        classifier (nn.Module): The module whose ``(B, N, C)`` output is
            masked (the encoder's classification branch).
        label_ranges (Tensor): ``(B, 2)`` int64 ``[low, high)`` label range
            of each image.
    """

    def __init__(self, classifier: nn.Module, label_ranges: Tensor) -> None:
        self.classifier = classifier
        self.label_ranges = label_ranges
        self.scores: Optional[Tensor] = None
        self.restricted: Optional[Tensor] = None
        self._handle = None

    def __enter__(self) -> 'RestrictedScores':
        """Start masking the classifier's output.

        Returns:
            RestrictedScores: This object, which records the last output.
        """
        if self._handle is not None:
            raise RuntimeError('RestrictedScores is already active')
        self._handle = self.classifier.register_forward_hook(self._restrict)
        return self

    def __exit__(self, *exc_info) -> None:
        """Stop masking (the hook is removed, also on an exception)."""
        self._handle.remove()
        self._handle = None

    def _restrict(self, module: nn.Module, inputs: tuple,
                  output: Tensor) -> Tensor:
        """Forward hook: record ``output`` and return it masked.

        Args:
            module (nn.Module): The classifier.
            inputs (tuple): Its inputs (unused).
            output (Tensor): ``(B, N, C)`` class scores.

        Returns:
            Tensor: ``output`` with the classes outside each image's range
            set to ``-inf``.
        """
        allowed = label_range_mask(self.label_ranges, output.shape[-1])
        self.scores = output
        self.restricted = output.masked_fill(~allowed[:, None, :],
                                             float('-inf'))
        return self.restricted

    def topk_scores(self, k: int) -> Tensor:
        """Unmasked scores of the ``k`` best proposals by the masked maximum.

        The proposals are those mmdet's ``pre_decoder`` selected from the
        masked output (the same ``torch.topk`` on the same tensor).

        Args:
            k (int): The number of proposals (``num_queries``).

        Returns:
            Tensor: ``(B, k, C)`` scores of all classes, differentiable with
            respect to the classifier's output.

        Raises:
            RuntimeError: If the classifier has not run in the block.
        """
        if self.scores is None:
            raise RuntimeError('the classifier has not run under '
                               'RestrictedScores')
        indices = torch.topk(self.restricted.max(-1)[0], k=k, dim=1)[1]
        return torch.gather(
            self.scores, 1,
            indices.unsqueeze(-1).repeat(1, 1, self.scores.size(-1)))
