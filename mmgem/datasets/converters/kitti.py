# Copyright (c) mmgem contributors. All rights reserved.
"""KITTI object detection (2D boxes of ``label_2``).

Reads the labelled part of the KITTI object benchmark as downloaded
(``data_object_image_2.zip`` and ``data_object_label_2.zip``)::

    <kitti>/training/image_2/<id>.png
    <kitti>/training/label_2/<id>.txt

A label line (KITTI object devkit ``readme.txt``) has 15 fields::

    type truncated occluded alpha left top right bottom h w l x y z rotation_y

``left top right bottom`` is the 2D box in 0-based pixel coordinates; it is
used as the continuous box ``[left, top, right, bottom]`` (COCO width
``right - left``), as mmdet3d reads KITTI's 2D boxes.

Class map (UODB's three classes; ``UODB_NAME_MAPS['kitti']`` and
``UODB_IGNORED_NAMES['kitti']`` of :mod:`mmgem.datasets.uodb_meta`, shared
with the UODB-layout converter):

===============================  ============  =============================
KITTI type                       UODB class    note
===============================  ============  =============================
Car, Van, Truck, Tram            car           UODB folds them (DAMEX too,
                                               as ``vehicle``)
Pedestrian                       pedestrian
Person_sitting                   pedestrian    as DAMEX's converter
                                               (``person_sitting='ignore'``
                                               drops them instead)
Cyclist                          cyclist
Misc, DontCare                   dropped       counted in the summary
===============================  ============  =============================

KITTI's test images have no labels, so UODB's train/test split has to be
made from the 7,481 labelled images. The rule, deterministic and documented:

1. if ``<kitti>/ImageSets/trainval.txt`` and ``test.txt`` exist (one image
   id a line, for example the widely used train/val split of Chen et al.'s
   3DOP, renamed), they are the split;
2. otherwise image ``<id>`` goes to ``test`` when
   ``blake2b('kitti/<id>') mod 10000 < 10000 * test_fraction``
   (``test_fraction=0.5`` by default, about the 3,712 / 3,769 proportion of
   the 3DOP split). This hash split is not drive-disjoint: neighbouring
   frames of one drive can fall on both sides, so test AP is optimistic
   compared to a drive-disjoint list (rule 1).
"""
import hashlib
import os
import os.path as osp
from typing import Dict, List, Sequence

from ..uodb_meta import UODB_IGNORED_NAMES, UODB_NAME_MAPS
from .common import (
    ClassMap,
    ConversionStats,
    ImageLinker,
    MissingImageError,
    SampleError,
    confined_path,
    image_size,
    skip_or_raise,
    split_builder,
)

KITTI_SPLITS = ('trainval', 'test')


def kitti_in_test(image_id: str, test_fraction: float) -> bool:
    """Whether a labelled KITTI image belongs to the hash split's test set.

    Args:
        image_id (str): The 6-digit image id, e.g. ``'000123'``.
        test_fraction (float): Share of images in ``test``.

    Returns:
        bool: True for ``test``.
    """
    digest = hashlib.blake2b(f'kitti/{image_id}'.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'big') % 10000 < round(10000 * test_fraction)


def parse_kitti_label(path: str) -> List[tuple]:
    """Read one ``label_2`` file.

    Args:
        path (str): The label file.

    Returns:
        list[tuple]: ``(type, (left, top, right, bottom), line number)`` per
        object.

    Raises:
        SampleError: A line with fewer than 15 fields or a non-numeric box
            (file and line are named).
    """
    objects = []
    with open(path, encoding='utf-8') as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 15:
                raise SampleError(f'{path}:{line_no}: {len(parts)} fields, a KITTI label '
                                  'line has 15', reason='bad annotation')
            try:
                box = tuple(float(v) for v in parts[4:8])
            except ValueError:
                raise SampleError(f'{path}:{line_no}: the box {parts[4:8]} is not numeric',
                                  reason='bad annotation') from None
            objects.append((parts[0], box, line_no))
    return objects


def _read_list(path: str) -> List[str]:
    with open(path, encoding='utf-8') as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise ValueError(f'{path}: empty split, it lists no image')
    return ids


def kitti_split(kitti_root: str, ids: Sequence[str],
                test_fraction: float = 0.5) -> Dict[str, tuple]:
    """The trainval/test split of the labelled images (see the module
    docstring for the rule).

    Args:
        kitti_root (str): The KITTI folder.
        ids (Sequence[str]): The labelled image ids.
        test_fraction (float): Test share of the hash split.

    Returns:
        dict[str, tuple]: ``{'trainval': (ids, rule), 'test': (ids, rule)}``.
    """
    lists = {s: osp.join(kitti_root, 'ImageSets', f'{s}.txt') for s in KITTI_SPLITS}
    if all(osp.isfile(p) for p in lists.values()):
        known = set(ids)
        out = {}
        for split, path in lists.items():
            listed = [confined_path(None, i, path, 'image id') for i in _read_list(path)]
            unknown = [i for i in listed if i not in known]
            if unknown:
                raise ValueError(f'{path}: image {unknown[0]!r} has no label file in '
                                 'training/label_2')
            out[split] = (listed, f'list file ImageSets/{split}.txt')
        both = set(out['trainval'][0]) & set(out['test'][0])
        if both:
            raise ValueError(f'KITTI: image {sorted(both)[0]!r} is in both '
                             f'{lists["trainval"]} and {lists["test"]}')
        return out
    if not 0 < test_fraction < 1:
        raise ValueError(f'KITTI: test_fraction must be in (0, 1), got {test_fraction}')
    rule = f"blake2b('kitti/<id>') mod 10000 < {round(10000 * test_fraction)} -> test"
    test = [i for i in ids if kitti_in_test(i, test_fraction)]
    trainval = [i for i in ids if not kitti_in_test(i, test_fraction)]
    return dict(trainval=(trainval, rule), test=(test, rule))


def import_kitti(kitti_root: str,
                 out_dir: str,
                 final_dir: str,
                 classes: Sequence[str],
                 splits: Sequence[str] = KITTI_SPLITS,
                 dataset: str = 'kitti',
                 test_fraction: float = 0.5,
                 person_sitting: str = 'pedestrian',
                 skip_bad: bool = False,
                 link_mode: str = 'symlink') -> List[ConversionStats]:
    """Import KITTI's labelled training images as UODB's trainval/test.

    Args:
        kitti_root (str): The folder with ``training/image_2`` and
            ``training/label_2``.
        out_dir (str): The dataset's output folder being written.
        final_dir (str): Where ``out_dir`` ends up.
        classes (Sequence[str]): ``('pedestrian', 'cyclist', 'car')``.
        splits (Sequence[str]): Of ``'trainval'`` and ``'test'``.
        dataset (str): Output dataset name.
        test_fraction (float): Test share of the hash split.
        person_sitting (str): ``'pedestrian'`` (DAMEX) or ``'ignore'``.
        skip_bad (bool): Skip and count bad samples.
        link_mode (str): How images get into ``JPEGImages/``.

    Returns:
        list[ConversionStats]: One per split.
    """
    if person_sitting not in ('pedestrian', 'ignore'):
        raise ValueError("KITTI: person_sitting must be 'pedestrian' or 'ignore', got "
                         f'{person_sitting!r}')
    label_dir = osp.join(kitti_root, 'training', 'label_2')
    img_dir = osp.join(kitti_root, 'training', 'image_2')
    if not osp.isdir(label_dir):
        raise FileNotFoundError(f'KITTI: label folder not found: {label_dir}')
    ids = sorted(osp.splitext(f)[0] for f in os.listdir(label_dir) if f.endswith('.txt'))
    if not ids:
        raise ValueError(f'KITTI: no label file in {label_dir}')
    name_map = dict(UODB_NAME_MAPS['kitti'])
    ignored = list(UODB_IGNORED_NAMES['kitti'])
    if person_sitting == 'ignore':
        del name_map['person_sitting']
        ignored.append('person_sitting')
    linker = ImageLinker.for_dataset(out_dir, final_dir, link_mode)
    results = []
    for split, (split_ids, rule) in kitti_split(kitti_root, ids, test_fraction).items():
        if split not in splits:
            continue
        builder = split_builder(dataset, split, final_dir,
                                ClassMap(dataset, classes, name_map, ignored),
                                'KITTI object training/label_2', rule)
        stats = builder.stats
        for image_id in split_ids:
            label_file = osp.join(label_dir, f'{image_id}.txt')
            try:
                objects = parse_kitti_label(label_file)
                found = next((f'{image_id}{e}' for e in ('.png', '.jpg')
                              if osp.isfile(osp.join(img_dir, f'{image_id}{e}'))), None)
                if found is None:
                    raise MissingImageError(f'image of {label_file} not found: '
                                            f'{osp.join(img_dir, image_id)}.png')
                confined_path(img_dir, found, label_file, 'image file')
                width, height = image_size(osp.join(img_dir, found))
                cats = [builder.class_map.lookup(t, f'{label_file}:{n}', stats)
                        for t, _, n in objects]
            except SampleError as err:
                skip_or_raise(err, skip_bad, stats)
                continue
            img = builder.add_image(found, width, height, label_file)
            for (_, box, _), cat in zip(objects, cats):
                if cat is not None:
                    builder.add_box(img, cat, box, width, height)
            linker.link(osp.join(img_dir, found), found)
        builder.write_split(out_dir, 'KITTI label_2')
        results.append(stats)
    return results
