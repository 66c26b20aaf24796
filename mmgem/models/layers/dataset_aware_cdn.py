# Copyright (c) mmgem contributors. All rights reserved.
"""DINO's contrastive denoising queries with label noise inside each dataset."""
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from mmdet.models.layers import CdnQueryGenerator
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from torch import Tensor


@MODELS.register_module()
class DatasetAwareCdnQueryGenerator(CdnQueryGenerator):
    """:class:`CdnQueryGenerator` whose label noise stays in each image's
    label range.

    DINO's label noise replaces a random ``label_noise_scale / 2`` share of
    the denoising labels with a label drawn uniformly from all classes. In a
    concatenated multi-dataset label space that would ask a query of a COCO
    box to denoise into, say, a DOTA class that its image is not annotated
    for. Called with ``label_ranges``, the replacement of a target's label is
    drawn uniformly from its image's range ``[low, high)`` instead; which
    labels are replaced is decided as in mmdet. Without ``label_ranges`` it
    is exactly mmdet's generator, and with every range equal to the whole
    label space it draws the same random numbers as mmdet's.

    The state dict is mmdet's (``label_embedding``), so checkpoints of either
    generator load into the other.

    Args:
        *args, **kwargs: Those of :class:`CdnQueryGenerator`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._target_ranges: Optional[Tensor] = None
        self._batch_ranges: Optional[Tensor] = None

    @contextmanager
    def batch_label_ranges(self,
                           label_ranges: Optional[Tensor]) -> Iterator[None]:
        """Calls in the block without ``label_ranges`` use these.

        For callers that do not pass ``label_ranges`` themselves (mmdet's
        :meth:`DINO.pre_decoder` calls ``dn_query_generator(samples)``). The
        previous value is restored when the block ends, also on an exception.

        Args:
            label_ranges (Tensor, optional): ``(bs, 2)`` int64 ``[low, high)``
                label range of each image of the batch, or None.
        """
        previous, self._batch_ranges = self._batch_ranges, label_ranges
        try:
            yield
        finally:
            self._batch_ranges = previous

    def __call__(self,
                 batch_data_samples: SampleList,
                 label_ranges: Optional[Tensor] = None) -> tuple:
        """Generate the denoising queries.

        Args:
            batch_data_samples (list[DetDataSample]): The batch, with
                ``gt_instances``.
            label_ranges (Tensor, optional): ``(bs, 2)`` int64 ``[low, high)``
                label range of each image. None draws noise from all classes,
                as mmdet does, unless called in :meth:`batch_label_ranges`.
                Defaults to None.

        Returns:
            tuple: ``dn_label_query, dn_bbox_query, attn_mask, dn_meta`` as
            :meth:`CdnQueryGenerator.__call__` returns them.
        """
        if label_ranges is None:
            label_ranges = self._batch_ranges
        if label_ranges is None:
            return super().__call__(batch_data_samples)
        counts = [len(s.gt_instances.labels) for s in batch_data_samples]
        if label_ranges.shape != (len(counts), 2):
            raise ValueError(
                f'label_ranges must have shape ({len(counts)}, 2) for a batch '
                f'of {len(counts)} images, got {tuple(label_ranges.shape)}')
        # one range per target, in the order mmdet concatenates the targets
        self._target_ranges = torch.repeat_interleave(
            label_ranges.long(),
            torch.tensor(counts, device=label_ranges.device),
            dim=0)
        try:
            return super().__call__(batch_data_samples)
        finally:
            self._target_ranges = None

    def generate_dn_label_query(self, gt_labels: Tensor,
                                num_groups: int) -> Tensor:
        """Embeddings of the noisy labels (noise inside each target's range).

        Args:
            gt_labels (Tensor): ``(num_target_total,)`` labels of the batch.
            num_groups (int): The number of denoising query groups.

        Returns:
            Tensor: ``(num_target_total * num_groups * 2, embed_dims)``.
        """
        if self._target_ranges is None:
            return super().generate_dn_label_query(gt_labels, num_groups)
        noisy = self.noisy_labels(gt_labels, num_groups, self._target_ranges)
        return self.label_embedding(noisy)

    def noisy_labels(self, gt_labels: Tensor, num_groups: int,
                     target_ranges: Tensor) -> Tensor:
        """The denoising labels of all groups, noised inside their ranges.

        As mmdet's ``generate_dn_label_query``: the labels are repeated
        ``2 * num_groups`` times, each is chosen with probability
        ``label_noise_scale / 2`` and a chosen one is replaced with a label
        drawn uniformly from its target's range.

        Args:
            gt_labels (Tensor): ``(T,)`` labels of the batch's targets.
            num_groups (int): The number of denoising query groups.
            target_ranges (Tensor): ``(T, 2)`` ``[low, high)`` range of each
                target.

        Returns:
            Tensor: ``(T * 2 * num_groups,)`` int64 noisy labels.
        """
        assert self.label_noise_scale > 0
        repeats = 2 * num_groups
        gt_labels_expand = gt_labels.repeat(repeats, 1).view(-1)
        ranges = target_ranges.repeat(repeats, 1)
        p = torch.rand_like(gt_labels_expand.float())
        chosen = torch.nonzero(p < (self.label_noise_scale * 0.5)).view(-1)
        new_labels = self._draw(chosen, ranges[chosen])
        return gt_labels_expand.scatter(0, chosen, new_labels)

    @staticmethod
    def _draw(like: Tensor, ranges: Tensor) -> Tensor:
        """Uniform integers in per-element ``[low, high)`` ranges.

        One ``randint`` per distinct range, so a single range draws exactly
        what mmdet's ``torch.randint_like(like, low, high)`` draws.
        """
        if like.numel() == 0:
            return torch.empty_like(like)
        distinct, inverse = torch.unique(ranges, dim=0, return_inverse=True)
        bounds = distinct.tolist()
        if len(bounds) == 1:
            return torch.randint_like(like, bounds[0][0], bounds[0][1])
        out = torch.empty_like(like)
        for k, (low, high) in enumerate(bounds):
            where = inverse == k
            out[where] = torch.randint(
                low, high, (int(where.sum()), ),
                dtype=like.dtype,
                device=like.device)
        return out
