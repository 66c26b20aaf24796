# Copyright (c) mmgem contributors. All rights reserved.
"""LISA traffic signs: ``allAnnotations.csv`` to UODB's four classes.

Reads the LISA Traffic Sign Dataset (Møgelmose et al., 2012) as
downloaded: its root folder holds ``allAnnotations.csv`` and the frame
folders the csv's ``Filename`` column points into (relative to the root).
The csv is ``;``-separated with the header::

    Filename;Annotation tag;Upper left corner X;Upper left corner Y;
    Lower right corner X;Lower right corner Y;Occluded,On another road;
    Origin file;Origin frame number;Origin track;Origin track frame number

(one row per sign; the ``Occluded,On another road`` column holds two
comma-separated flags). Corners are pixel coordinates, used as the box
``[x1, y1, x2, y2]``.

UODB keeps four classes of LISA's 47 sign tags. :data:`LISA_TAG_TO_CLASS`
is the one table that maps every tag: regulatory speed limits to
``speedlimit``, the yellow warning signs (including advisory speeds and
"zone ahead") to ``warning``, the no-turn signs to ``noturn``, ``stop`` to
``stop``, and every other tag to None (dropped, counted). A tag that is not
in the table is an error naming the csv line (or dropped with
``drop_unknown``). Every annotated frame is kept, also one whose signs are
all dropped (as UODB's loader keeps its images).

LISA has no official split. UODB's train/test split is rebuilt
deterministically from the csv: a frame goes to ``test`` when the video it
was taken from (``Origin file``, or the frame's folder when it is empty)
hashes below ``test_fraction`` (``blake2b('lisa/<origin>') mod 10000 <
10000 * test_fraction``, default 0.2), so frames of one video never land
on both sides.
"""
import csv
import hashlib
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from .common import (
    ClassMap,
    ConversionStats,
    ImageLinker,
    SampleError,
    confined_path,
    image_size,
    skip_or_raise,
    split_builder,
)

_SPEED = ('speedLimit15', 'speedLimit25', 'speedLimit30', 'speedLimit35', 'speedLimit40',
          'speedLimit45', 'speedLimit50', 'speedLimit55', 'speedLimit65', 'speedLimitUrdbl',
          'schoolSpeedLimit25', 'truckSpeedLimit55')
_WARNING = ('addedLane', 'curveLeft', 'curveRight', 'dip', 'intersection', 'laneEnds', 'merge',
            'pedestrianCrossing', 'rampSpeedAdvisory20', 'rampSpeedAdvisory35',
            'rampSpeedAdvisory40', 'rampSpeedAdvisory45', 'rampSpeedAdvisory50',
            'rampSpeedAdvisoryUrdbl', 'roundabout', 'school', 'signalAhead', 'slow',
            'stopAhead', 'thruMergeLeft', 'thruMergeRight', 'turnLeft', 'turnRight',
            'yieldAhead', 'zoneAhead25', 'zoneAhead45')
_NOTURN = ('noLeftTurn', 'noRightTurn')
_DROPPED = ('doNotEnter', 'doNotPass', 'keepRight', 'rightLaneMustTurn',
            'thruTrafficMergeLeft', 'yield')

#: LISA's 47 annotation tags -> UODB class (None: dropped).
LISA_TAG_TO_CLASS: Dict[str, Optional[str]] = OrderedDict(
    [('stop', 'stop')] + [(t, 'speedlimit') for t in _SPEED] + [(t, 'warning') for t in _WARNING]
    + [(t, 'noturn') for t in _NOTURN] + [(t, None) for t in _DROPPED])

LISA_SPLITS = ('train', 'test')

_COLUMNS = ('Filename', 'Annotation tag', 'Upper left corner X', 'Upper left corner Y',
            'Lower right corner X', 'Lower right corner Y')


def lisa_in_test(origin: str, test_fraction: float) -> bool:
    """Whether the frames of a LISA video belong to ``test``.

    Args:
        origin (str): The ``Origin file`` (video) of the frame.
        test_fraction (float): Target share of videos in ``test``.

    Returns:
        bool: True for ``test``.
    """
    digest = hashlib.blake2b(f'lisa/{origin}'.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'big') % 10000 < round(10000 * test_fraction)


def read_lisa_csv(csv_file: str) -> 'OrderedDict[str, dict]':
    """Read ``allAnnotations.csv`` grouped by frame.

    Args:
        csv_file (str): The csv file.

    Returns:
        OrderedDict[str, dict]: ``Filename`` -> dict(origin, signs=[(tag,
        box, occluded, line)]) in file order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: A missing column (the file is named).
        SampleError: A row with a non-numeric corner (file and line named).
    """
    if not osp.isfile(csv_file):
        raise FileNotFoundError(f'LISA: {csv_file} not found')
    frames: 'OrderedDict[str, dict]' = OrderedDict()
    with open(csv_file, encoding='utf-8', newline='') as f:
        reader = csv.reader(f, delimiter=';')
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in _COLUMNS if c not in header]
        if missing:
            raise ValueError(f'{csv_file}: no column(s) {missing} in the header {header}')
        col = {name: header.index(name) for name in header}
        for line_no, row in enumerate(reader, 2):
            if not any(cell.strip() for cell in row):
                continue
            where = f'{csv_file}:{line_no}'
            try:
                box = tuple(float(row[col[c]]) for c in _COLUMNS[2:])
            except (ValueError, IndexError):
                raise SampleError(f'{where}: the corners {row[2:6]} are not numeric',
                                  reason='bad annotation') from None
            flags = row[col['Occluded,On another road']] if 'Occluded,On another road' in col \
                and col['Occluded,On another road'] < len(row) else ''
            occluded = flags.split(',')[0].strip() == '1'
            name = row[col['Filename']].strip()
            origin = row[col['Origin file']].strip() if 'Origin file' in col and \
                col['Origin file'] < len(row) else ''
            frame = frames.setdefault(name, dict(origin=origin or osp.dirname(name), signs=[]))
            frame['signs'].append((row[col['Annotation tag']].strip(), box, occluded, line_no))
    if not frames:
        raise ValueError(f'{csv_file}: no annotation row')
    return frames


def import_lisa(root: str,
                out_dir: str,
                final_dir: str,
                classes: Sequence[str],
                splits: Sequence[str] = LISA_SPLITS,
                dataset: str = 'lisa',
                test_fraction: float = 0.2,
                drop_unknown: bool = False,
                skip_bad: bool = False,
                link_mode: str = 'symlink') -> List[ConversionStats]:
    """Import the LISA traffic signs with UODB's four classes.

    Args:
        root (str): The dataset folder with ``allAnnotations.csv``.
        out_dir (str): The dataset's output folder being written.
        final_dir (str): Where ``out_dir`` ends up.
        classes (Sequence[str]): ``('stop', 'speedlimit', 'warning',
            'noturn')``.
        splits (Sequence[str]): Of ``'train'`` and ``'test'``.
        dataset (str): Output dataset name.
        test_fraction (float): Share of videos in ``test``.
        drop_unknown (bool): Drop tags that are not in the table.
        skip_bad (bool): Skip and count bad samples.
        link_mode (str): How images get into ``JPEGImages/``.

    Returns:
        list[ConversionStats]: One per split.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f'LISA: test_fraction must be in (0, 1), got {test_fraction}')
    csv_file = osp.join(root, 'allAnnotations.csv')
    frames = read_lisa_csv(csv_file)
    table = {k.lower(): v for k, v in LISA_TAG_TO_CLASS.items()}
    name_map = {k: v for k, v in table.items() if v is not None and k != v}
    ignored = [k for k, v in table.items() if v is None]
    linker = ImageLinker.for_dataset(out_dir, final_dir, link_mode)
    rule = (f"blake2b('lisa/<Origin file>') mod 10000 < {round(10000 * test_fraction)} "
            '-> test')
    results = []
    for split in splits:
        if split not in LISA_SPLITS:
            raise ValueError(f'LISA: unknown split {split!r}, expected one of {LISA_SPLITS}')
        builder = split_builder(dataset, split, final_dir,
                                ClassMap(dataset, classes, name_map, ignored, drop_unknown),
                                'LISA allAnnotations.csv', rule)
        stats = builder.stats
        for name, frame in frames.items():
            if lisa_in_test(frame['origin'], test_fraction) != (split == 'test'):
                continue
            where = f'{csv_file}:{frame["signs"][0][3]}'
            try:
                confined_path(root, name, where, 'Filename')
                width, height = image_size(osp.join(root, name))
                cats = [builder.class_map.lookup(tag, f'{csv_file}:{line}', stats)
                        for tag, _, _, line in frame['signs']]
            except SampleError as err:
                skip_or_raise(err, skip_bad, stats)
                continue
            img = builder.add_image(name, width, height, where)
            for (_, box, occluded, _), cat in zip(frame['signs'], cats):
                if cat is not None and builder.add_box(img, cat, box, width, height):
                    stats.notes['occluded'] += int(occluded)
            linker.link(osp.join(root, name), name)
        builder.write_split(out_dir, 'LISA allAnnotations.csv')
        results.append(stats)
    return results
