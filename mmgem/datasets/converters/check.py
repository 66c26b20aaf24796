# Copyright (c) mmgem contributors. All rights reserved.
"""Compare converted image and box counts with published figures.

:data:`REFERENCE_COUNTS` holds, per dataset, published image and box
counts of the splits a conversion writes, each with its source. They are
the figures of the original datasets' own publications and documentation;
where UODB re-split or re-cut a dataset (KITTI, LISA, Kitchen, DOTA's
patches) only totals over all splits are comparable. ``exact`` is False for
a figure that could not be checked against its source when this table was
written; treat differences against those as hints, not errors.

The comparison never fails a conversion: it prints the differences, which
are expected where the converter skips broken boxes or keeps images the
source does not count.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .common import ConversionStats


@dataclass(frozen=True)
class ReferenceCount:
    """A published count of one or more splits of a dataset.

    Attributes:
        dataset (str): Dataset name.
        splits (tuple[str]): The converted splits whose counts are summed.
        images (int | None): Published number of images.
        boxes (int | None): Published number of boxes (all boxes of the
            kept classes, difficult ones included).
        source (str): Where the figures come from.
        exact (bool): Whether the figures were checked against the source.
        images_key (str): Which count is compared with ``images``:
            ``'images'`` or a ``notes`` key (DOTA: ``'source images'``).
    """
    dataset: str
    splits: Tuple[str, ...]
    images: Optional[int]
    boxes: Optional[int]
    source: str
    exact: bool = False
    images_key: str = 'images'


REFERENCE_COUNTS: Tuple[ReferenceCount, ...] = (
    ReferenceCount('kitti', ('trainval', 'test'), 7481, None,
                   'KITTI object devkit: 7,481 labelled training images', True),
    ReferenceCount('voc', ('trainval', ), 16551, 47223,
                   'VOC2007 + VOC2012 trainval (5,011 + 11,540 images; 15,662 + 31,561 '
                   'objects incl. difficult)'),
    ReferenceCount('voc', ('test', ), 4952, 14976,
                   'VOC2007 test (4,952 images, 14,976 objects incl. difficult)'),
    ReferenceCount('widerface', ('train', ), 12880, 159424, 'WIDER FACE train'),
    ReferenceCount('widerface', ('val', ), 3226, 39708, 'WIDER FACE val'),
    ReferenceCount('lisa', ('train', 'test'), 6610, None,
                   'LISA traffic sign dataset: 6,610 annotated frames (7,855 signs of all '
                   '47 tags)'),
    ReferenceCount('kitchen', ('train', 'test'), 6735, None,
                   'GMU Kitchen Scenes: 6,735 images in 9 scenes'),
    ReferenceCount('coco', ('valminusminival', ), 35504, None,
                   'COCO 2014 valminusminival (40,504 val2014 - 5,000 minival)', True),
    ReferenceCount('coco', ('minival', ), 5000, 36781,
                   'COCO 2014 minival = val2017 (5,000 images, 36,781 instances)'),
    ReferenceCount('dota', ('train', ), 1411, None, 'DOTA-v1.0 train: 1,411 images',
                   images_key='source images'),
    ReferenceCount('dota', ('val', ), 458, None, 'DOTA-v1.0 val: 458 images',
                   images_key='source images'),
    ReferenceCount('deeplesion', ('train', 'val', 'test'), 32120, 32735,
                   'DeepLesion: 32,735 lesions on 32,120 key slices'),
    ReferenceCount('comic', ('train', 'test'), 2000, 6389, 'Comic2k (Inoue et al., 2018)'),
    ReferenceCount('clipart', ('train', 'test'), 1000, 3165, 'Clipart1k (Inoue et al., 2018)'),
    ReferenceCount('watercolor', ('train', 'test'), 2000, 3315,
                   'Watercolor2k (Inoue et al., 2018)'),
)


def check_counts(results: Sequence[ConversionStats],
                 references: Sequence[ReferenceCount] = REFERENCE_COUNTS) -> List[dict]:
    """Compare conversion results with the reference counts.

    Only references whose splits were all converted are compared.

    Args:
        results (Sequence[ConversionStats]): What a conversion wrote.
        references (Sequence[ReferenceCount]): The published figures.

    Returns:
        list[dict]: One row per compared reference: ``dataset``, ``splits``,
        ``images``, ``ref_images``, ``boxes``, ``ref_boxes`` (None where
        unknown), ``source``, ``exact``, ``match`` (all known figures equal).
    """
    by_key: Dict[Tuple[str, str], ConversionStats] = {(s.dataset, s.split): s for s in results}
    rows = []
    for ref in references:
        stats = [by_key.get((ref.dataset, split)) for split in ref.splits]
        if any(s is None for s in stats):
            continue
        if ref.images_key == 'images':
            images = sum(s.images for s in stats)
        else:
            images = sum(s.notes.get(ref.images_key, 0) for s in stats)
        boxes = sum(s.annotations for s in stats)
        match = (ref.images is None or images == ref.images) and \
            (ref.boxes is None or boxes == ref.boxes)
        rows.append(dict(dataset=ref.dataset, splits='+'.join(ref.splits), images=images,
                         ref_images=ref.images, boxes=boxes, ref_boxes=ref.boxes,
                         source=ref.source, exact=ref.exact, match=match))
    return rows


def format_check(rows: Sequence[dict]) -> str:
    """Render :func:`check_counts` rows as a markdown table.

    Args:
        rows (Sequence[dict]): The rows.

    Returns:
        str: The table, differences signed (converted minus reference).
    """
    def _diff(got, ref):
        return '-' if ref is None else f'{got - ref:+d}'

    lines = ['| dataset | splits | images | reference | diff | boxes | reference | diff | '
             'source |', '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        ref_images = '-' if r['ref_images'] is None else r['ref_images']
        ref_boxes = '-' if r['ref_boxes'] is None else r['ref_boxes']
        source = r['source'] + ('' if r['exact'] else ' (figure not checked against its '
                                'source here)')
        lines.append(f'| {r["dataset"]} | {r["splits"]} | {r["images"]} | {ref_images} | '
                     f'{_diff(r["images"], r["ref_images"])} | {r["boxes"]} | {ref_boxes} | '
                     f'{_diff(r["boxes"], r["ref_boxes"])} | {source} |')
    return '\n'.join(lines)
