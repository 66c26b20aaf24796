# Copyright (c) mmgem contributors. All rights reserved.
"""GEM soft routing: with the dataset unknown, route by the top-k plan rows.

Hard routing (the default) sends a test image of unknown dataset through the
plan row of the domain classifier's top-1 dataset. A wrong top-1 sends the
image to the wrong experts. Soft routing hedges: the decoder is run once per
plan row of the classifier's ``k`` most probable datasets (the backbone, neck
and encoder once), and the detections of the ``k`` runs are fused.

Fusion rule. With ``p_1 >= ... >= p_k`` the classifier's probabilities of the
``k`` rows renormalised to sum to 1 (``w_j = p_j / sum_i p_i``), every
detection of run ``j`` keeps its box and label (in the test label space: the
unified space by name by default) and its score becomes ``w_j * s``; the
detections of all runs are merged and the ``max_per_img`` highest fused
scores are kept (a stable sort, so ties keep run order, then the head's
order). Why this rule:

- it is the mixture ``P(box, class | x) = sum_d P(d | x) P(box, class | x, d)``
  restricted to the ``k`` likeliest datasets, each term taken from the run
  that routes as ``d``: a row the classifier doubts contributes in proportion
  to its probability;
- DINO is NMS-free and its scores are per-query; merging boxes across runs
  (NMS, weighted box fusion) would add IoU thresholds the model never saw.
  The same object found by two runs may appear twice; the copy of the less
  probable row has the lower score, so it ranks below and at worst costs
  a low-score false positive;
- with ``k = 1`` the weight is exactly 1, the head's list is already sorted
  and the stable sort keeps it: the output equals hard routing bit for bit.
"""
from typing import Optional, Sequence, Tuple

import torch
from mmengine.structures import InstanceData
from torch import Tensor


def soft_routing_topk(soft_routing: Optional[dict], num_datasets: int) -> int:
    """The ``k`` of a ``soft_routing`` config (0 when it is off).

    Args:
        soft_routing (dict, optional): ``dict(topk=k)``; None: off.
        num_datasets (int): Datasets of the plan (the most rows there are).

    Returns:
        int: ``k`` in ``[1, num_datasets]``, or 0 for None.

    Raises:
        ValueError: On unknown keys or a ``topk`` outside ``[1, num_datasets]``.
    """
    if soft_routing is None:
        return 0
    unknown = set(soft_routing) - {'topk'}
    if unknown:
        raise ValueError(f'soft_routing has unknown key(s) {sorted(unknown)}; '
                         "it takes dict(topk=k)")
    topk = soft_routing.get('topk', 2)
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= num_datasets:
        raise ValueError(f'soft_routing topk must be an int in [1, num_datasets='
                         f'{num_datasets}], got {topk!r}')
    return topk


def soft_routing_rows(domain_logits: Tensor, topk: int) -> Tuple[Tensor, Tensor]:
    """The ``k`` likeliest datasets of every image and their fusion weights.

    Args:
        domain_logits (Tensor): ``(B, K)`` domain classifier logits.
        topk (int): ``k``.

    Returns:
        tuple[Tensor, Tensor]: ``(B, k)`` int64 dataset ids, most probable
        first (ties: the lower id, as ``argmax``), on the logits' device; ``(B, k)``
        weights (the softmax probabilities renormalised over the ``k`` rows),
        on the logits' device.
    """
    # a stable descending sort of the logits: the first row is their argmax
    # (hard routing's row, ties to the lower id) whatever softmax rounds
    order = torch.sort(domain_logits, dim=1, descending=True, stable=True).indices[:, :topk]
    probs = domain_logits.float().softmax(dim=1)
    top = probs.gather(1, order)
    return order, top / top.sum(dim=1, keepdim=True)


def fuse_detections(runs: Sequence[InstanceData], weights: Tensor,
                    max_per_img: Optional[int]) -> InstanceData:
    """Fuse one image's detections of the ``k`` routed runs (module docstring).

    Args:
        runs (Sequence[InstanceData]): The image's predictions of every run
            (``bboxes``, ``scores``, ``labels`` in one label space), most
            probable row first.
        weights (Tensor): ``(k,)`` fusion weights of the runs.
        max_per_img (int, optional): Detections kept; None keeps all.

    Returns:
        InstanceData: The detections with the highest weighted scores,
        sorted by them (stable: ties keep run order, then each run's order).
    """
    if len(runs) != len(weights):
        raise ValueError(f'{len(runs)} runs for {len(weights)} weights')
    merged = InstanceData.cat(list(runs))
    scores = torch.cat([r.scores * w.to(r.scores) for r, w in zip(runs, weights)])
    order = torch.sort(scores, descending=True, stable=True).indices
    if max_per_img is not None:
        order = order[:max_per_img]
    fused = merged[order]
    fused.scores = scores[order]
    return fused
