# Copyright (c) mmgem contributors. All rights reserved.
"""VOC2007 11-point AP at IoU 0.5, as UODB's code scores every dataset.

UODB's evaluation (``lib/datasets/voc_eval.py`` of its code, from
py-faster-rcnn) computes, per class: detections of all images sorted by
score; each is a true positive if its best-overlapping ground truth of that
class and image has IoU ``> 0.5`` and is not matched yet, a false positive
otherwise; detections matched to a *difficult* ground truth count as
neither, and difficult ground truths are not in the recall's denominator.
AP is the mean over the 11 recall thresholds ``0, 0.1, ..., 1`` of the
highest precision at a recall of at least the threshold. Boxes are in
pixel-index coordinates, so widths are ``x2 - x1 + 1`` (``legacy_coordinate
=True``); mmgem's converters write VOC boxes as ``xmin - 1 .. xmax - 1``,
so this reproduces UODB's numbers on its XMLs.

Here ``iscrowd`` (ignore) ground truths play the role of difficult ones.
The dataset's mAP is the mean over classes with at least one non-difficult
ground truth (as mmdet's ``eval_map``).
"""
from typing import Dict, List, Optional, Sequence

import numpy as np


def voc07_ap_11point(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007's 11-point interpolated AP.

    Args:
        recall (np.ndarray): Recall after each detection (non-decreasing).
        precision (np.ndarray): Precision after each detection.

    Returns:
        float: The AP in [0, 1].
    """
    ap = 0.0
    for t in np.linspace(0.0, 1.0, 11):
        above = precision[recall >= t]
        ap += (above.max() if above.size else 0.0) / 11.0
    return float(ap)


def _iou(box: np.ndarray, boxes: np.ndarray, extra: float) -> np.ndarray:
    ix1 = np.maximum(boxes[:, 0], box[0])
    iy1 = np.maximum(boxes[:, 1], box[1])
    ix2 = np.minimum(boxes[:, 2], box[2])
    iy2 = np.minimum(boxes[:, 3], box[3])
    iw = np.maximum(ix2 - ix1 + extra, 0.0)
    ih = np.maximum(iy2 - iy1 + extra, 0.0)
    inter = iw * ih
    area = (box[2] - box[0] + extra) * (box[3] - box[1] + extra)
    areas = (boxes[:, 2] - boxes[:, 0] + extra) * (boxes[:, 3] - boxes[:, 1] + extra)
    return inter / np.maximum(area + areas - inter, np.finfo(np.float64).eps)


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
    extra = 1.0 if legacy_coordinate else 0.0
    aps: List[Optional[float]] = []
    num_gts: List[int] = []
    for c in range(num_classes):
        gts, npos = [], 0
        for gt in ground_truths:
            labels = np.asarray(gt['labels']).reshape(-1)
            keep = labels == c
            boxes = np.asarray(gt['bboxes'], dtype=np.float64).reshape(-1, 4)[keep]
            ignore = np.asarray(gt.get('ignore', np.zeros(len(labels), bool)),
                                dtype=bool).reshape(-1)[keep]
            gts.append((boxes, ignore, np.zeros(len(boxes), dtype=bool)))
            npos += int((~ignore).sum())
        image_of, scores, boxes = [], [], []
        for i, det in enumerate(detections):
            labels = np.asarray(det['labels']).reshape(-1)
            keep = labels == c
            n = int(keep.sum())
            image_of.extend([i] * n)
            scores.append(np.asarray(det['scores'], dtype=np.float64).reshape(-1)[keep])
            boxes.append(np.asarray(det['bboxes'], dtype=np.float64).reshape(-1, 4)[keep])
        num_gts.append(npos)
        if npos == 0:
            aps.append(None)
            continue
        scores = np.concatenate(scores) if scores else np.zeros(0)
        boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        order = np.argsort(-scores, kind='stable')
        tp = np.zeros(len(order))
        fp = np.zeros(len(order))
        for rank, d in enumerate(order):
            gt_boxes, ignore, matched = gts[image_of[d]]
            if len(gt_boxes) == 0:
                fp[rank] = 1
                continue
            ious = _iou(boxes[d], gt_boxes, extra)
            j = int(np.argmax(ious))
            if ious[j] > iou_thr:
                if ignore[j]:
                    continue
                if not matched[j]:
                    tp[rank] = 1
                    matched[j] = True
                else:
                    fp[rank] = 1
            else:
                fp[rank] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / float(npos)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps.append(voc07_ap_11point(recall, precision))
    present = [a for a in aps if a is not None]
    return dict(mAP=float(np.mean(present)) if present else -1.0, ap=aps, num_gts=num_gts)
