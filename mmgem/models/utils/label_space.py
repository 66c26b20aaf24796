# Copyright (c) mmgem contributors. All rights reserved.
"""The concatenated label space of K datasets, as tensors.

Dataset ``d`` owns the labels ``[label_offsets[d], label_offsets[d + 1])``
of the concatenated label space (``UODBDataset.label_offsets``, the
``label_offsets`` buffer of :class:`mmgem.models.GEMDINO`). The *label
range* of an image is the range of its dataset; the helpers below turn
dataset ids into ranges and ranges into per-class masks, on the device of
their inputs and without host synchronisation.
"""
import torch
from torch import Tensor


def label_ranges_of(label_offsets: Tensor, dataset_ids: Tensor) -> Tensor:
    """Label range of each image from its dataset id.

    Args:
        label_offsets (Tensor): ``(K + 1,)`` int64 cumulative label offsets.
        dataset_ids (Tensor): ``(B,)`` integer dataset index of each image,
            in ``[0, K)``.

    Returns:
        Tensor: ``(B, 2)`` int64 ``[low, high)`` label range of each image,
        on the device of ``label_offsets``.
    """
    ids = dataset_ids.to(device=label_offsets.device, dtype=torch.long)
    return torch.stack([label_offsets[ids], label_offsets[ids + 1]], dim=1)


def label_range_mask(label_ranges: Tensor, num_classes: int) -> Tensor:
    """Per-class mask of the label range of each image.

    Args:
        label_ranges (Tensor): ``(B, 2)`` int64 ``[low, high)`` ranges.
        num_classes (int): Size of the concatenated label space.

    Returns:
        Tensor: ``(B, num_classes)`` bool, True at the labels of each
        image's range.
    """
    labels = torch.arange(num_classes, device=label_ranges.device)
    return (labels >= label_ranges[:, :1]) & (labels < label_ranges[:, 1:])
