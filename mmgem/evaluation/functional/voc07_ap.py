# Copyright (c) mmgem contributors. All rights reserved.
"""VOC2007 11-point AP at IoU 0.5, as UODB's code scores every dataset.

UODB's evaluation (``lib/datasets/voc_eval.py`` of its code, from
py-faster-rcnn) is mmdet's VOC protocol: per class, detections of all images
by score, a true positive when the best-overlapping ground truth of its
image is not matched yet, detections on *difficult* ground truths count as
neither, AP the 11-point interpolation, pixel-index boxes (``+1`` in widths,
``use_legacy_coordinate``). mmgem's converters write VOC boxes as ``xmin - 1
.. xmax - 1``, so this reproduces UODB's numbers on its XMLs; ``iscrowd``
(ignore) ground truths play the role of difficult ones.

The matching and the AP are mmdet's (``tpfp_default``, ``average_precision``
with ``'11points'``); this module only feeds them per class, the way
``eval_map(..., eval_mode='11points', use_legacy_coordinate=True)`` does,
with two differences: no process pool (``eval_map`` starts one for any call
on more than one image: 0.30 s against 0.04 s for 30 images and 10 classes
on one core), and VOC's strict ``IoU > 0.5`` (mmdet matches at ``>=``).
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmdet.evaluation.functional import average_precision
from mmdet.evaluation.functional.mean_ap import tpfp_default


def _of_class(boxes, labels, c: int, *columns) -> List[np.ndarray]:
    keep = np.asarray(labels).reshape(-1) == c
    out = [np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[keep]]
    return out + [np.asarray(col).reshape(-1)[keep] for col in columns]


def voc07_map(detections: Sequence[Dict[str, np.ndarray]],
              ground_truths: Sequence[Dict[str, np.ndarray]],
              num_classes: int,
              iou_thr: float = 0.5,
              legacy_coordinate: bool = True) -> Dict[str, object]:
    """VOC2007 11-point mAP of one dataset.

    Args:
        detections (Sequence[dict]): Per image: ``bboxes`` (N, 4) x1y1x2y2,
            ``scores`` (N, ), ``labels`` (N, ) in ``[0, num_classes)``.
        ground_truths (Sequence[dict]): Per image (same order): ``bboxes``
            (M, 4), ``labels`` (M, ), and optionally ``ignore`` (M, ) bool
            (difficult / crowd boxes).
        num_classes (int): Number of classes.
        iou_thr (float): A detection matches when IoU is strictly above it.
        legacy_coordinate (bool): Pixel-index boxes (``+1`` in widths), as
            VOC's and UODB's code. Defaults to True.

    Returns:
        dict: ``mAP`` (float, mean over classes with ground truth; -1.0,
        pycocotools' "undefined", if no class has any), ``ap`` (list of
        per-class AP, None for a class without ground truth), ``num_gts``
        (list of non-difficult counts).
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f'voc07_map: {len(detections)} detection entries for '
                         f'{len(ground_truths)} images')
    # VOC matches at IoU > thr, mmdet at >= thr on float32 IoUs: the next float32
    strict_thr = np.nextafter(np.float32(iou_thr), np.float32(np.inf))
    aps: List[Optional[float]] = []
    num_gts: List[int] = []
    for c in range(num_classes):
        tps, fps, scores, npos = [], [], [], 0
        for det, gt in zip(detections, ground_truths):
            boxes, score = _of_class(det['bboxes'], det['labels'], c, det['scores'])
            gt_boxes, ignore = _of_class(
                gt['bboxes'], gt['labels'], c,
                gt.get('ignore', np.zeros(len(np.asarray(gt['labels']).reshape(-1)), bool)))
            ignore = ignore.astype(bool)
            tp, fp = tpfp_default(np.concatenate([boxes, score[:, None]], 1),
                                  gt_boxes[~ignore], gt_boxes[ignore], strict_thr,
                                  use_legacy_coordinate=legacy_coordinate)
            tps.append(tp[0])
            fps.append(fp[0])
            scores.append(score)
            npos += int((~ignore).sum())
        num_gts.append(npos)
        if npos == 0:
            aps.append(None)
            continue
        order = np.argsort(-np.concatenate(scores), kind='stable')
        # float64, as VOC's code: recall k / n in float32 may pass 0.6 where it should not
        tp = np.cumsum(np.concatenate(tps)[order], dtype=np.float64)
        fp = np.cumsum(np.concatenate(fps)[order], dtype=np.float64)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps.append(float(average_precision(tp / npos, precision, mode='11points')))
    present = [a for a in aps if a is not None]
    return dict(mAP=float(np.mean(present)) if present else -1.0, ap=aps, num_gts=num_gts)
