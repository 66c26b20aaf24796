# Copyright (c) mmgem contributors. All rights reserved.
"""WIDER FACE: ``wider_face_{train,val}_bbx_gt.txt`` to COCO.

Reads WIDER FACE as downloaded (``WIDER_train.zip``, ``WIDER_val.zip``,
``wider_face_split.zip``)::

    <widerface>/WIDER_{train,val}/images/<event>/<image>.jpg
    <widerface>/wider_face_split/wider_face_{train,val}_bbx_gt.txt

The ground-truth file (WIDER FACE's ``readme.txt``) repeats, per image: its
path under ``images/``, the number of faces ``N``, then ``N`` lines::

    x1 y1 w h blur expression illumination invalid occlusion pose

An image with no face has ``N = 0`` followed by one line of zeros.
Boxes are ``[x1, y1, w, h]`` in pixels and written as such.

As the benchmark defines them: faces flagged ``invalid`` are kept as
ignore regions (``iscrowd=1``: neither positives in training nor counted in
evaluation); faces of zero width or height (there are some in the train
file) are skipped and counted (``zero_area``).
"""
import os.path as osp
from typing import List, Sequence

from .common import (
    ClassMap,
    ConversionStats,
    ImageLinker,
    SampleError,
    UnsafePathError,
    confined_path,
    image_size,
    skip_or_raise,
    split_builder,
)

WIDERFACE_SPLITS = ('train', 'val')


def parse_bbx_gt(path: str) -> List[tuple]:
    """Read a ``wider_face_*_bbx_gt.txt`` file.

    Args:
        path (str): The file.

    Returns:
        list[tuple]: ``(image path, [(x1, y1, w, h, invalid)], line)`` per
        image, in file order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: A malformed count or face line (file and line named).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'WIDER FACE: {path} not found')
    with open(path, encoding='utf-8') as f:
        lines = [line.strip() for line in f]
    images, i = [], 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        name, start = lines[i], i + 1
        try:
            count = int(lines[i + 1])
        except (IndexError, ValueError):
            raise ValueError(f'{path}:{i + 2}: expected the face count of {name}, got '
                             f'{lines[i + 1] if i + 1 < len(lines) else "end of file"!r}'
                             ) from None
        i += 2
        faces = []
        for k in range(max(count, 1)):
            if i >= len(lines):
                raise ValueError(f'{path}: {name} (line {start}) announces {count} faces but '
                                 'the file ends')
            parts = lines[i].split()
            try:
                values = [float(v) for v in parts]
            except ValueError:
                values = []
            if len(values) < 4 or (count > 0 and len(values) < 8):
                raise ValueError(f'{path}:{i + 1}: {lines[i]!r} is not '
                                 "'x1 y1 w h blur expression illumination invalid ...'")
            i += 1
            if count == 0:  # the line of zeros of an image without faces
                break
            faces.append((values[0], values[1], values[2], values[3], int(values[7]) == 1))
        images.append((name, faces, start))
    if not images:
        raise ValueError(f'{path}: no image listed')
    return images


def import_widerface(root: str,
                     out_dir: str,
                     final_dir: str,
                     classes: Sequence[str] = ('face', ),
                     splits: Sequence[str] = WIDERFACE_SPLITS,
                     dataset: str = 'widerface',
                     skip_bad: bool = False,
                     link_mode: str = 'symlink') -> List[ConversionStats]:
    """Import WIDER FACE train / val.

    Args:
        root (str): Folder with ``WIDER_<split>/images`` and
            ``wider_face_split/``.
        out_dir (str): The dataset's output folder being written.
        final_dir (str): Where ``out_dir`` ends up.
        classes (Sequence[str]): ``('face', )``.
        splits (Sequence[str]): Of ``'train'`` and ``'val'``.
        dataset (str): Output dataset name.
        skip_bad (bool): Skip and count bad samples.
        link_mode (str): How images get into ``JPEGImages/``.

    Returns:
        list[ConversionStats]: One per split; images are named
        ``WIDER_<split>/<event>/<image>.jpg``.
    """
    linker = ImageLinker.for_dataset(out_dir, final_dir, link_mode)
    results = []
    for split in splits:
        if split not in WIDERFACE_SPLITS:
            raise ValueError(f'WIDER FACE: unknown split {split!r}, expected one of '
                             f'{WIDERFACE_SPLITS}')
        gt_file = osp.join(root, 'wider_face_split', f'wider_face_{split}_bbx_gt.txt')
        img_dir = osp.join(root, f'WIDER_{split}', 'images')
        builder = split_builder(dataset, split, final_dir, ClassMap(dataset, classes),
                                f'WIDER FACE {osp.basename(gt_file)}', f'WIDER FACE {split}')
        stats = builder.stats
        for name, faces, line in parse_bbx_gt(gt_file):
            where = f'{gt_file}:{line}'
            try:
                confined_path(img_dir, name, where, 'image path')
                width, height = image_size(osp.join(img_dir, name))
            except UnsafePathError as err:
                skip_or_raise(err, skip_bad, stats)
                continue
            except SampleError as err:
                skip_or_raise(SampleError(f'{where}: {err}', err.reason), skip_bad, stats)
                continue
            file_name = f'WIDER_{split}/{name}'
            img = builder.add_image(file_name, width, height, where)
            for x1, y1, w, h, invalid in faces:
                if builder.add_box(img, 1, (x1, y1, x1 + w, y1 + h), width, height,
                                   difficult=invalid):
                    stats.notes['invalid'] += int(invalid)
            linker.link(osp.join(img_dir, name), file_name)
        builder.write_split(out_dir, 'WIDER FACE')
        results.append(stats)
    return results
