# Copyright (c) mmgem contributors. All rights reserved.
"""Which boxes of a COCO file mmdet's ``CocoDataset`` drops, and why.

mmdet's ``CocoDataset.parse_data_info`` silently skips a box whose
intersection with its image is empty, or whose ``area`` is not positive, or
whose width or height is below 1 pixel. :func:`dropped_boxes` applies the
same rule to a loaded COCO dict and names the reason of each dropped box, so
that :class:`~.uodb_dataset.UODBDataset` can say at load time what training
will not see (the converters count the same kinds of boxes when they write
the file).
"""
import math
from collections import Counter
from typing import Mapping

#: Reasons, in the order they are checked (the first that applies names the
#: box).
DROP_REASONS = ('NaN', 'negative size', 'zero size', 'outside the image',
                'below 1 px or zero area')


def _drop_reason(ann: Mapping, width: float, height: float):
    """The reason mmdet drops a box, or None if it keeps it."""
    x1, y1, w, h = (float(v) for v in ann['bbox'])
    inter_w = max(0, min(x1 + w, width) - max(x1, 0))
    inter_h = max(0, min(y1 + h, height) - max(y1, 0))
    area = ann.get('area', w * h)
    if not (inter_w * inter_h == 0 or area <= 0 or w < 1 or h < 1):
        return None  # kept by mmdet (also a box with an infinite side)
    if any(math.isnan(v) for v in (x1, y1, w, h)):
        return 'NaN'
    if w < 0 or h < 0:
        return 'negative size'
    if w == 0 or h == 0:
        return 'zero size'
    if inter_w * inter_h == 0:
        return 'outside the image'
    return 'below 1 px or zero area'


def dropped_boxes(content: Mapping) -> Counter:
    """Count the boxes of a COCO dict that mmdet's ``CocoDataset`` drops.

    Boxes flagged ``ignore`` (skipped by mmdet on purpose) and boxes of
    images the file does not list are not counted.

    Args:
        content (Mapping): The loaded COCO JSON (``images``,
            ``annotations``).

    Returns:
        Counter: Dropped boxes by reason (keys of :data:`DROP_REASONS`),
        and ``'total'``: every box looked at.
    """
    sizes = {img.get('id'): (img.get('width'), img.get('height'))
             for img in content.get('images', [])}
    counts = Counter()
    for ann in content.get('annotations', []):
        if ann.get('ignore', False) or ann.get('image_id') not in sizes:
            continue
        counts['total'] += 1
        width, height = sizes[ann['image_id']]
        try:
            reason = _drop_reason(ann, float(width), float(height))
        except (KeyError, TypeError, ValueError):
            reason = 'NaN'  # no usable numbers: mmdet cannot use the box either
        if reason is not None:
            counts[reason] += 1
    return counts


def format_dropped(counts: Counter) -> str:
    """A one-line summary of :func:`dropped_boxes`.

    Args:
        counts (Counter): Its result.

    Returns:
        str: E.g. ``'drops 3 of 120 boxes: 2 zero size, 1 NaN'``.
    """
    dropped = sum(v for k, v in counts.items() if k != 'total')
    if not dropped:
        return f'drops none of its {counts["total"]} boxes'
    why = ', '.join(f'{counts[r]} {r}' for r in DROP_REASONS if counts[r])
    return f'drops {dropped} of its {counts["total"]} boxes: {why}'
