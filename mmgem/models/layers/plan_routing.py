# Copyright (c) mmgem contributors. All rights reserved.
"""The GEM routing rule on tensors: plan thresholds -> expert of each image.

This is the tensor twin of :func:`mmgem.planner.hashing.expert_of_bucket`:
for an image of dataset ``d`` with bucket ``b`` (from
:func:`mmgem.planner.hashing.image_bucket`) and the plan's threshold table
``T`` (``K x M`` int64, :attr:`mmgem.planner.GEMPlan.thresholds`)::

    expert = number of e with T[d, e] <= b

The thresholds are cut at the training images of each dataset, so the
realised per-expert counts equal the plan's quota table exactly; a plan
installed from its quota table alone routes by the quantiles of the quota
(:func:`quantile_thresholds`). Only int64 comparisons are used, so the
planner (numpy) and the model (torch) agree bit for bit on every device.
"""
import numpy as np
import torch
from torch import Tensor

from mmgem.planner.hashing import BUCKET_END, bucket_thresholds

NO_PLAN_MESSAGE = (
    'no GEM plan is installed: the model\'s routing table is empty. '
    'Add GEMPlannerHook to `custom_hooks` in the config (it solves the plan '
    'before training and attaches it to the model), give `model.plan_file`, '
    'or load a checkpoint that carries a plan.')


def plan_is_installed(plan_quota: Tensor) -> bool:
    """Whether a quota table holds a plan (any non-zero entry).

    Args:
        plan_quota (Tensor): ``(K, M)`` int64 quota table.

    Returns:
        bool: False for the all-zeros table of a model without a plan.
    """
    return bool(plan_quota.ne(0).any())


def quantile_thresholds(plan_quota: Tensor) -> Tensor:
    """Thresholds of a quota table without image ids (quantile routing).

    Rows that sum to 0 (datasets the plan routes nowhere, or no plan) get
    all-zero thresholds, which :func:`route_images` refuses.

    Args:
        plan_quota (Tensor): ``(K, M)`` integer quota table.

    Returns:
        Tensor: ``(K, M)`` int64 thresholds on the quota's device,
        identical to :func:`mmgem.planner.hashing.bucket_thresholds` of every
        row.
    """
    quota = plan_quota.detach().cpu().numpy().astype(np.int64)
    out = np.zeros(quota.shape, dtype=np.int64)
    for d, row in enumerate(quota):
        if row.sum() > 0 and np.all(row >= 0):
            out[d] = bucket_thresholds(row)
    return torch.from_numpy(out).to(plan_quota.device)


def route_images(plan_thresholds: Tensor, dataset_ids: Tensor,
                 image_buckets: Tensor) -> Tensor:
    """Expert of each image under a GEM plan.

    Args:
        plan_thresholds (Tensor): ``(K, M)`` int64 routing thresholds of the
            plan (non-decreasing rows ending at ``2**63 - 1``).
        dataset_ids (Tensor): ``(B,)`` integer dataset index of each image,
            in ``[0, K)``.
        image_buckets (Tensor): ``(B,)`` int64 bucket of each image, in
            ``[0, 2**63 - 1)`` (:func:`mmgem.planner.hashing.image_bucket`).

    Returns:
        Tensor: ``(B,)`` int64 expert index of each image, in ``[0, M)``.

    Raises:
        RuntimeError: If the table is all zeros (no plan installed).
        ValueError: If a dataset id is out of range, a bucket is negative, or
            an image's dataset has no valid threshold row (a plan without
            routing thresholds, e.g. from an older checkpoint).
    """
    if not bool(plan_thresholds.ne(0).any()):
        raise RuntimeError(NO_PLAN_MESSAGE)
    num_datasets = plan_thresholds.size(0)
    dataset_ids = dataset_ids.to(device=plan_thresholds.device, dtype=torch.long)
    image_buckets = image_buckets.to(device=plan_thresholds.device, dtype=torch.long)
    if dataset_ids.shape != image_buckets.shape or dataset_ids.dim() != 1:
        raise ValueError(
            'dataset_ids and image_buckets must be 1-d tensors of the same '
            f'length, got shapes {tuple(dataset_ids.shape)} and '
            f'{tuple(image_buckets.shape)}')
    if dataset_ids.numel() == 0:
        return dataset_ids.clone()
    bad = (dataset_ids < 0) | (dataset_ids >= num_datasets)
    if bool(bad.any()):
        raise ValueError(
            f'dataset id(s) {dataset_ids[bad].tolist()} out of range for a '
            f'plan of {num_datasets} datasets')
    if bool((image_buckets < 0).any()) or bool((image_buckets >= BUCKET_END).any()):
        raise ValueError(
            f'image bucket(s) outside [0, 2**63 - 1): {image_buckets.tolist()}')
    rows = plan_thresholds.index_select(0, dataset_ids)
    ends = rows[:, -1] == BUCKET_END
    if not bool(ends.all()):
        empty = sorted(set(dataset_ids[~ends].tolist()))
        raise ValueError(
            f'the GEM plan routes no image of dataset id(s) {empty}: their rows of '
            'routing thresholds do not end at 2**63 - 1 (a quota row of 0, or a plan '
            'installed without thresholds, e.g. from a checkpoint made before plans '
            'carried them: re-plan it with GEMPlannerHook)')
    return (rows <= image_buckets[:, None]).sum(dim=1)
