# Copyright (c) mmgem contributors. All rights reserved.
"""COCO box AP and AP50 at a chosen number of detections per image.

pycocotools' ``COCOeval.summarize`` reports AP@[.5:.95] at exactly 100
detections per image (a literal in its code) and AP50 at the last entry of
``params.maxDets``; mmdet's ``CocoMetric`` (``proposal_nums=(100, 300,
1000)``) therefore mixes AP@100 with AP50@1000. :func:`coco_box_ap` reads
both from ``COCOeval.eval['precision']`` at the same ``max_dets``, over all
images of the annotation file as ``CocoMetric`` does; with ``max_dets=100``
it equals pycocotools' defaults (``maxDets=[1, 10, 100]``), which DAMEX
evaluates with.
"""
from typing import Dict, Sequence, Tuple

import numpy as np


def coco_box_ap(coco_gt, results: Sequence[Dict], cat_ids: Sequence[int],
                max_dets: int = 100) -> Tuple[float, float]:
    """AP@[.5:.95] and AP@.5 of box predictions, at ``max_dets``.

    Args:
        coco_gt: A pycocotools ``COCO`` of the ground truth.
        results (Sequence[dict]): Per image: ``img_id``, ``bboxes`` (N, 4)
            x1y1x2y2, ``scores`` (N, ), ``labels`` (N, ) indexing
            ``cat_ids``.
        cat_ids (Sequence[int]): The category id of each label.
        max_dets (int): Detections per image (per category, as
            pycocotools counts them) that are evaluated.

    Returns:
        tuple[float, float]: AP and AP50 rounded to 3 decimals (as
        ``CocoMetric`` rounds); ``(0.0, 0.0)`` without any prediction.
    """
    from mmdet.datasets.api_wrappers import COCOeval
    dets = []
    for res in results:
        for box, score, label in zip(np.asarray(res['bboxes']), np.asarray(res['scores']),
                                     np.asarray(res['labels'])):
            x1, y1, x2, y2 = (float(v) for v in box)
            dets.append(dict(image_id=res['img_id'], bbox=[x1, y1, x2 - x1, y2 - y1],
                             score=float(score), category_id=cat_ids[int(label)]))
    if not dets:
        return 0.0, 0.0
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(dets), 'bbox')
    evaluator.params.catIds = list(cat_ids)
    evaluator.params.imgIds = coco_gt.get_img_ids()
    evaluator.params.maxDets = [1, 10, int(max_dets)]
    evaluator.evaluate()
    evaluator.accumulate()
    area_all = evaluator.params.areaRngLbl.index('all')
    precision = evaluator.eval['precision'][:, :, :, area_all, -1]  # T x R x K
    at50 = precision[int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))]

    def _mean(p):
        return float(f'{np.mean(p[p > -1]):.3f}') if (p > -1).any() else -1.0

    return _mean(precision), _mean(at50)
