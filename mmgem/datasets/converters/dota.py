# Copyright (c) mmgem contributors. All rights reserved.
"""DOTA v1.0: oriented polygons to horizontal boxes, split into patches.

Reads DOTA-v1.0 as downloaded (``train/images``, ``val/images`` and the
``labelTxt`` folders of ``labelTxt-v1.0``)::

    <dota>/{train,val}/images/P0000.png
    <dota>/{train,val}/labelTxt/P0000.txt

A label file (DOTA's devkit and dataset page) starts with optional
``imagesource:...`` and ``gsd:...`` lines, then one object a line::

    x1 y1 x2 y2 x3 y3 x4 y4 category difficult

UODB trains and tests on fixed-size patches cut from DOTA's large images
(up to ~4,000 px), as DOTA's devkit (``ImgSplit.py``) cuts them. This
importer follows the devkit:

- patches of ``patch_size`` px with ``gap`` px overlap (devkit defaults
  1024 and 200, stride ``patch_size - gap``); along each axis the windows
  start at 0, ``stride``, ... and the last window is moved back to end at
  the image border (``max(width - patch_size, 0)``); an image smaller than
  a patch is one patch;
- every object polygon is clipped to the window; if all of it is inside it
  keeps its ``difficult`` flag; if the share of its area inside the window
  is above ``thresh`` (devkit: 0.7) it keeps its flag too; if the share is
  smaller but positive it is written as difficult (the devkit's ``2``), so
  it is ignored by training and evaluation (``iscrowd=1``);
- the horizontal box of an object is the bounding box of its (clipped)
  polygon, in patch coordinates;
- patches are named as the devkit names them,
  ``<image>__1__<left>___<top>.png``.

Differences from the devkit, on purpose: the window is the exact pixel
extent ``[left, left + size) x [top, top + size)`` (the devkit's polygon
stops at ``width - 1``); clipped polygons with more than 5 corners are kept
(the devkit drops them because it writes 4-point polygons; a horizontal box
needs no 4 points); patches without any object are dropped
(``keep_empty=False``, as mmrotate's splitter does by default) unless
``keep_empty=True``.
"""
import os
import os.path as osp
from typing import Iterator, List, Sequence, Tuple

from .common import (
    ClassMap,
    ConversionStats,
    MissingImageError,
    SampleError,
    confined_path,
    image_size,
    skip_or_raise,
    split_builder,
)

Point = Tuple[float, float]

DOTA_SPLITS = ('train', 'val')


def polygon_area(poly: Sequence[Point]) -> float:
    """Area of a simple polygon (shoelace formula, absolute value).

    Args:
        poly (Sequence[tuple]): Its corners in order.

    Returns:
        float: The area.
    """
    n = len(poly)
    twice = sum(poly[i][0] * poly[(i + 1) % n][1] - poly[(i + 1) % n][0] * poly[i][1]
                for i in range(n))
    return abs(twice) / 2.0


def clip_polygon(poly: Sequence[Point], x1: float, y1: float, x2: float,
                 y2: float) -> List[Point]:
    """Clip a polygon to an axis-aligned rectangle (Sutherland-Hodgman).

    Exact for any simple polygon against a convex window: the result has
    the area of the intersection.

    Args:
        poly (Sequence[tuple]): The polygon's corners in order.
        x1 (float): Window left.
        y1 (float): Window top.
        x2 (float): Window right.
        y2 (float): Window bottom.

    Returns:
        list[tuple]: The clipped polygon (empty if they do not overlap).
    """
    def clip(points, inside, cross):
        out = []
        for i, cur in enumerate(points):
            prev = points[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cross(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cross(prev, cur))
        return out

    def at_x(x):
        return lambda p, q: (x, p[1] + (q[1] - p[1]) * (x - p[0]) / (q[0] - p[0]))

    def at_y(y):
        return lambda p, q: (p[0] + (q[0] - p[0]) * (y - p[1]) / (q[1] - p[1]), y)

    points = [tuple(map(float, p)) for p in poly]
    for inside, cross in ((lambda p: p[0] >= x1, at_x(x1)), (lambda p: p[0] <= x2, at_x(x2)),
                          (lambda p: p[1] >= y1, at_y(y1)), (lambda p: p[1] <= y2, at_y(y2))):
        if not points:
            break
        points = clip(points, inside, cross)
    return points


def window_starts(length: int, patch_size: int, stride: int) -> List[int]:
    """Start offsets of the windows along one axis (DOTA devkit's rule).

    Args:
        length (int): Image width or height.
        patch_size (int): Window size.
        stride (int): ``patch_size - gap``.

    Returns:
        list[int]: The offsets, increasing; the last window ends at the
        border (or the only one starts at 0 for a short axis).
    """
    starts, pos = [], 0
    while True:
        if pos + patch_size >= length:
            starts.append(max(length - patch_size, 0))
            return starts
        starts.append(pos)
        pos += stride


def parse_dota_label(path: str) -> List[tuple]:
    """Read one DOTA ``labelTxt`` file.

    Args:
        path (str): The label file.

    Returns:
        list[tuple]: ``(category, polygon, difficult, line number)`` per
        object.

    Raises:
        SampleError: A line that is neither a header nor an object (file
            and line named).
    """
    objects = []
    with open(path, encoding='utf-8') as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts or (len(parts) == 1 and ':' in parts[0]):
                continue  # blank, imagesource:..., gsd:...
            if len(parts) < 9:
                raise SampleError(f'{path}:{line_no}: {line.strip()!r} is not '
                                  "'x1 y1 ... x4 y4 category difficult'", reason='bad annotation')
            try:
                coords = [float(v) for v in parts[:8]]
                difficult = int(parts[9]) if len(parts) > 9 else 0
            except ValueError:
                raise SampleError(f'{path}:{line_no}: non-numeric coordinates or difficult flag '
                                  f'in {line.strip()!r}', reason='bad annotation') from None
            poly = list(zip(coords[0::2], coords[1::2]))
            objects.append((parts[8], poly, difficult, line_no))
    return objects


def patch_objects(objects: Sequence[tuple], left: int, top: int, right: int, bottom: int,
                  thresh: float) -> Iterator[tuple]:
    """The objects of one patch, as the devkit keeps them.

    Args:
        objects (Sequence[tuple]): ``(category, polygon, difficult, line)``.
        left (int): Window left.
        top (int): Window top.
        right (int): Window right (exclusive).
        bottom (int): Window bottom (exclusive).
        thresh (float): Share of an object's area that must be inside for
            it to keep its own difficult flag.

    Yields:
        tuple: ``(category, (x1, y1, x2, y2) in patch coordinates,
        difficult, kind)`` with kind ``'whole'``, ``'cut'`` (kept as is) or
        ``'cut_difficult'``.
    """
    for name, poly, difficult, _ in objects:
        area = polygon_area(poly)
        if area <= 0:
            continue
        clipped = clip_polygon(poly, left, top, right, bottom)
        if len(clipped) < 3:
            continue
        inside = polygon_area(clipped)
        if inside <= 0:
            continue
        share = inside / area
        xs, ys = [p[0] for p in clipped], [p[1] for p in clipped]
        box = (min(xs) - left, min(ys) - top, max(xs) - left, max(ys) - top)
        if share >= 1 - 1e-9:
            yield name, box, bool(difficult), 'whole'
        elif share > thresh:
            yield name, box, bool(difficult), 'cut'
        else:
            yield name, box, True, 'cut_difficult'


def import_dota(dota_root: str,
                out_dir: str,
                final_dir: str,
                classes: Sequence[str],
                splits: Sequence[str] = DOTA_SPLITS,
                dataset: str = 'dota',
                patch_size: int = 1024,
                gap: int = 200,
                thresh: float = 0.7,
                keep_empty: bool = False,
                drop_unknown: bool = False,
                skip_bad: bool = False) -> List[ConversionStats]:
    """Import DOTA v1.0 train/val, cut into patches.

    Args:
        dota_root (str): Folder with ``<split>/images`` and
            ``<split>/labelTxt``.
        out_dir (str): The dataset's output folder being written (patches go
            to its ``JPEGImages/``).
        final_dir (str): Where ``out_dir`` ends up.
        classes (Sequence[str]): DOTA v1.0's 15 classes.
        splits (Sequence[str]): Of ``'train'`` and ``'val'``.
        dataset (str): Output dataset name.
        patch_size (int): Patch size in pixels.
        gap (int): Overlap of neighbouring patches in pixels.
        thresh (float): See :func:`patch_objects`.
        keep_empty (bool): Keep patches without objects.
        drop_unknown (bool): Drop unknown categories instead of failing.
        skip_bad (bool): Skip and count bad samples.

    Returns:
        list[ConversionStats]: One per split.
    """
    from PIL import Image
    if not 0 <= gap < patch_size:
        raise ValueError(f'DOTA: gap={gap} must be in [0, patch_size={patch_size})')
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # DOTA images are large
    try:
        return _import_dota(dota_root, out_dir, final_dir, classes, splits, dataset,
                            patch_size, patch_size - gap, thresh, keep_empty, drop_unknown,
                            skip_bad)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _import_dota(dota_root, out_dir, final_dir, classes, splits, dataset, patch_size, stride,
                 thresh, keep_empty, drop_unknown, skip_bad) -> List[ConversionStats]:
    from PIL import Image
    gap = patch_size - stride
    results = []
    img_out = osp.join(out_dir, 'JPEGImages')
    os.makedirs(img_out, exist_ok=True)
    for split in splits:
        label_dir = osp.join(dota_root, split, 'labelTxt')
        img_dir = osp.join(dota_root, split, 'images')
        if not osp.isdir(label_dir):
            raise FileNotFoundError(f'DOTA: label folder not found: {label_dir}')
        stems = sorted(osp.splitext(f)[0] for f in os.listdir(label_dir) if f.endswith('.txt'))
        if not stems:
            raise ValueError(f'DOTA: no label file in {label_dir}')
        class_map = ClassMap(dataset, classes, drop_unknown=drop_unknown)
        builder = split_builder(dataset, split, final_dir, class_map,
                                f'DOTA-v1.0 {split}/labelTxt',
                                f'DOTA {split}, patches {patch_size} px, gap {gap} px')
        stats = builder.stats
        for stem in stems:
            label_file = osp.join(label_dir, f'{stem}.txt')
            try:
                objects = parse_dota_label(label_file)
                cats = {line: class_map.lookup(name, f'{label_file}:{line}', stats)
                        for name, _, _, line in objects}
                found = next((f'{stem}{e}' for e in ('.png', '.jpg', '.tif', '.bmp')
                              if osp.isfile(osp.join(img_dir, f'{stem}{e}'))), None)
                if found is None:
                    raise MissingImageError(f'image of {label_file} not found: '
                                            f'{osp.join(img_dir, stem)}.png')
                confined_path(img_dir, found, label_file, 'image file')
                width, height = image_size(osp.join(img_dir, found))
            except SampleError as err:
                skip_or_raise(err, skip_bad, stats)
                continue
            objects = [o for o in objects if cats[o[3]] is not None]
            stats.notes['source images'] += 1
            image = None
            for top in window_starts(height, patch_size, stride):
                for left in window_starts(width, patch_size, stride):
                    right, bottom = min(left + patch_size, width), min(top + patch_size, height)
                    kept = list(patch_objects(
                        [(cats[o[3]], ) + o[1:] for o in objects], left, top, right,
                        bottom, thresh))
                    if not kept and not keep_empty:
                        continue
                    name = f'{stem}__1__{left}___{top}.png'
                    pw, ph = right - left, bottom - top
                    img_id = builder.add_image(name, pw, ph, label_file)
                    for cat, box, difficult, kind in kept:
                        if builder.add_box(img_id, cat, box, pw, ph, difficult=difficult) \
                                and kind != 'whole':
                            stats.notes[kind] += 1
                    if image is None:
                        image = Image.open(osp.join(img_dir, found))
                        image.load()
                    image.crop((left, top, right, bottom)).save(osp.join(img_out, name))
            if image is not None:
                image.close()
        builder.write_split(out_dir, 'DOTA-v1.0 patches')
        results.append(stats)
    return results

