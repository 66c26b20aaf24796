# Copyright (c) mmgem contributors. All rights reserved.
"""A batch's routing straight from a quota table, without a model.

The layer benchmarks (and layer tests) route a batch through a plan without
building :class:`~mmgem.models.detectors.GEMDINO`, which does the same
lookup from the plan installed in it.
"""
from typing import Optional

from torch import Tensor

from mmgem.models.layers import BatchRouting, quantile_thresholds, route_images


def routing_from_plan(plan_quota: Tensor, dataset_ids: Tensor, image_buckets: Tensor,
                      plan_thresholds: Optional[Tensor] = None) -> BatchRouting:
    """Route a batch through a plan.

    Args:
        plan_quota (Tensor): ``(K, M)`` int64 quota table.
        dataset_ids (Tensor): ``(B,)`` dataset index of each image.
        image_buckets (Tensor): ``(B,)`` int64 bucket of each image
            (:func:`mmgem.planner.hashing.image_bucket`).
        plan_thresholds (Tensor, optional): ``(K, M)`` int64 routing
            thresholds of the plan; None routes by the quantiles of the
            quota (a plan made without image ids).

    Returns:
        BatchRouting: The routing, with everything on the CPU.
    """
    thresholds = (quantile_thresholds(plan_quota.cpu()) if plan_thresholds is None else
                  plan_thresholds.cpu())
    ids = dataset_ids.cpu().long()
    return BatchRouting(image_experts=route_images(thresholds, ids, image_buckets.cpu()),
                        dataset_ids=ids)


__all__ = ['routing_from_plan']
