# Copyright (c) mmgem contributors. All rights reserved.
"""The GEM routing rule on tensors: plan quota table -> expert of each image.

This is the tensor twin of :func:`mmgem.planner.hashing.route_bucket`: for an
image of dataset ``d`` with bucket ``b`` (from
:func:`mmgem.planner.hashing.image_bucket`) and the plan's quota table ``Q``
(``K x M`` images per epoch)::

    r = b % Q[d].sum()
    expert = number of e with cumsum(Q[d])[e] <= r

Only int64 arithmetic is used, so the planner (numpy) and the model (torch)
agree bit for bit on every device.
"""
import torch
from torch import Tensor

NO_PLAN_MESSAGE = (
    'no GEM plan is installed: the model\'s plan_quota buffer is all zeros. '
    'Add GEMPlannerHook to `custom_hooks` in the config (it solves the plan '
    'before training and calls `model.install_plan`), or load a checkpoint '
    'that carries a plan.')


def plan_is_installed(plan_quota: Tensor) -> bool:
    """Whether a quota table holds a plan (any non-zero entry).

    Args:
        plan_quota (Tensor): ``(K, M)`` int64 quota table.

    Returns:
        bool: False for the all-zeros table of a model without a plan.
    """
    return bool(plan_quota.ne(0).any())


def route_images(plan_quota: Tensor, dataset_ids: Tensor,
                 image_buckets: Tensor) -> Tensor:
    """Expert of each image under a GEM plan.

    Args:
        plan_quota (Tensor): ``(K, M)`` int64 quota table of the plan.
        dataset_ids (Tensor): ``(B,)`` integer dataset index of each image,
            in ``[0, K)``.
        image_buckets (Tensor): ``(B,)`` int64 non-negative bucket of each
            image (:func:`mmgem.planner.hashing.image_bucket`).

    Returns:
        Tensor: ``(B,)`` int64 expert index of each image, in ``[0, M)``.

    Raises:
        RuntimeError: If the table is all zeros (no plan installed).
        ValueError: If a dataset id is out of range, a bucket is negative, or
            an image's dataset has an all-zero quota row.
    """
    if not plan_is_installed(plan_quota):
        raise RuntimeError(NO_PLAN_MESSAGE)
    num_datasets = plan_quota.size(0)
    dataset_ids = dataset_ids.to(device=plan_quota.device, dtype=torch.long)
    image_buckets = image_buckets.to(
        device=plan_quota.device, dtype=torch.long)
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
    if bool((image_buckets < 0).any()):
        raise ValueError(
            f'negative image bucket(s) {image_buckets[image_buckets < 0]}')
    rows = plan_quota.index_select(0, dataset_ids)
    totals = rows.sum(dim=1)
    if bool((totals <= 0).any()):
        empty = sorted(set(dataset_ids[totals <= 0].tolist()))
        raise ValueError(
            f'the GEM plan routes no image of dataset id(s) {empty}: their '
            'quota rows sum to 0')
    rest = torch.remainder(image_buckets, totals)
    return (rows.cumsum(dim=1) <= rest[:, None]).sum(dim=1)
