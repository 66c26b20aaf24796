# Copyright (c) mmgem contributors. All rights reserved.
"""DeepLesion: key CT slices from ``DL_info.csv`` and the 16-bit PNGs.

Reads DeepLesion as downloaded from the NIH (``DL_info.csv`` and the
``Images_png_*.zip`` parts unpacked into one folder)::

    <deeplesion>/DL_info.csv
    <deeplesion>/Images_png/<patient>_<study>_<series>/<slice>.png

``DL_info.csv`` has one row per lesion. The columns used (DeepLesion's
readme): ``File_name`` (``000001_01_01_109.png``: patient, study, series,
key slice), ``Bounding_boxes`` (``"x1, y1, x2, y2"``, 0-based pixels),
``Image_size``, ``DICOM_windows``, ``Possibly_noisy`` and ``Train_Val_Test``
(1 train, 2 val, 3 test; the official patient-level split). Rows of one
key slice become one image with one ``lesion`` box each.

The 16-bit PNGs store ``HU + 32768``. Each key slice is windowed to 8 bits:
``(HU - low) / (high - low) * 255``, clipped, with the single wide window
``[-1024, 3071]`` HU that DeepLesion's authors (Yan et al., 2018) use for
all lesion types by default, or each row's own ``DICOM_windows`` with
``window='dicom'``; the result is a grey-scale 8-bit PNG named
``File_name``. Only the key slice is used (no neighbouring slices, no
resampling to a common pixel spacing). Noisy rows (``Possibly_noisy=1``)
are kept and counted.

Splits written: ``train`` (1), ``val`` (2), ``trainval`` (1 + 2, DAMEX's
training split) and ``test`` (3).
"""
import csv
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .common import (
    ClassMap,
    ConversionStats,
    MissingImageError,
    SampleError,
    check_size,
    confined_path,
    skip_or_raise,
    split_builder,
)

#: DeepLesion's default window (HU): bone, soft tissue and lung at once.
DEEPLESION_WINDOW = (-1024.0, 3071.0)

#: Output split -> ``Train_Val_Test`` values.
DEEPLESION_SPLITS: Dict[str, Tuple[int, ...]] = {
    'train': (1, ),
    'val': (2, ),
    'trainval': (1, 2),
    'test': (3, ),
}

_COLUMNS = ('File_name', 'Bounding_boxes', 'Image_size', 'DICOM_windows', 'Train_Val_Test')


def _numbers(text: str, count: int, where: str, column: str) -> List[float]:
    try:
        values = [float(v) for v in text.replace(';', ',').split(',')]
    except ValueError:
        values = []
    if len(values) != count:
        raise SampleError(f'{where}: {column} is {text!r}, expected {count} numbers',
                          reason='bad annotation')
    return values


def read_dl_info(csv_file: str) -> Dict[str, dict]:
    """Read ``DL_info.csv`` grouped by key slice.

    Args:
        csv_file (str): The csv file.

    Returns:
        dict[str, dict]: ``File_name`` -> dict(boxes, split, size, windows,
        noisy, rows) in file order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: A missing column, or rows of one slice that disagree on
            the split or the size (file and line named).
    """
    if not osp.isfile(csv_file):
        raise FileNotFoundError(f'DeepLesion: {csv_file} not found')
    slices: Dict[str, dict] = {}
    with open(csv_file, encoding='utf-8', newline='') as f:
        reader = csv.DictReader(f)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f'{csv_file}: no column(s) {missing} (has {reader.fieldnames})')
        for line_no, row in enumerate(reader, 2):
            where = f'{csv_file}:{line_no}'
            name = row['File_name'].strip()
            box = _numbers(row['Bounding_boxes'], 4, where, 'Bounding_boxes')
            size = tuple(int(v) for v in _numbers(row['Image_size'], 2, where, 'Image_size'))
            window = tuple(_numbers(row['DICOM_windows'], 2, where, 'DICOM_windows'))
            try:
                split = int(row['Train_Val_Test'])
            except ValueError:
                raise ValueError(f'{where}: Train_Val_Test is {row["Train_Val_Test"]!r}, not '
                                 '1, 2 or 3') from None
            if split not in (1, 2, 3):
                raise ValueError(f'{where}: Train_Val_Test is {split}, not 1, 2 or 3')
            entry = slices.setdefault(name, dict(boxes=[], split=split, size=size,
                                                 windows=[], noisy=0, rows=[]))
            if entry['split'] != split or entry['size'] != size:
                raise ValueError(f'{where}: {name} has Train_Val_Test {split} and size {size}, '
                                 f'but line {entry["rows"][0]} says {entry["split"]} and '
                                 f'{entry["size"]}')
            entry['boxes'].append(box)
            entry['windows'].append(window)
            entry['noisy'] += int(float(row.get('Possibly_noisy') or 0) > 0)
            entry['rows'].append(line_no)
    if not slices:
        raise ValueError(f'{csv_file}: no lesion row')
    return slices


def slice_path(images_dir: str, file_name: str) -> str:
    """Where a key slice's 16-bit PNG is.

    Args:
        images_dir (str): The ``Images_png`` folder.
        file_name (str): ``File_name``, e.g. ``000001_01_01_109.png``.

    Returns:
        str: ``Images_png/000001_01_01/109.png``.
    """
    folder, _, slice_name = file_name.rpartition('_')
    return osp.join(images_dir, folder, slice_name)


def window_hu(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """16-bit DeepLesion pixels (``HU + 32768``) to 8 bits in a window.

    Args:
        pixels (np.ndarray): The PNG's values.
        low (float): Window bottom in HU (maps to 0).
        high (float): Window top in HU (maps to 255).

    Returns:
        np.ndarray: uint8 image.
    """
    hu = pixels.astype(np.float64) - 32768.0
    scaled = (hu - low) / (high - low) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def import_deeplesion(root: str,
                      out_dir: str,
                      final_dir: str,
                      classes: Sequence[str] = ('lesion', ),
                      splits: Sequence[str] = tuple(DEEPLESION_SPLITS),
                      dataset: str = 'deeplesion',
                      window: Union[str, Tuple[float, float]] = DEEPLESION_WINDOW,
                      skip_bad: bool = False) -> List[ConversionStats]:
    """Import DeepLesion's key slices with their lesion boxes.

    Args:
        root (str): Folder with ``DL_info.csv`` and ``Images_png/``.
        out_dir (str): The dataset's output folder being written (8-bit
            slices go to its ``JPEGImages/``).
        final_dir (str): Where ``out_dir`` ends up.
        classes (Sequence[str]): ``('lesion', )``.
        splits (Sequence[str]): Of ``train``, ``val``, ``trainval``,
            ``test``.
        dataset (str): Output dataset name.
        window (str | tuple): ``(low, high)`` HU, or ``'dicom'`` for each
            slice's ``DICOM_windows`` (the first lesion row's).
        skip_bad (bool): Skip and count bad samples.

    Returns:
        list[ConversionStats]: One per split.
    """
    from PIL import Image
    if window != 'dicom':
        low, high = (float(v) for v in window)
        if not high > low:
            raise ValueError(f'DeepLesion: window {window} needs low < high')
    csv_file = osp.join(root, 'DL_info.csv')
    slices = read_dl_info(csv_file)
    images_dir = osp.join(root, 'Images_png')
    img_out = osp.join(out_dir, 'JPEGImages')
    os.makedirs(img_out, exist_ok=True)
    class_map = ClassMap(dataset, classes)
    written: Dict[str, Optional[Tuple[int, int]]] = {}
    results = []
    for split in splits:
        if split not in DEEPLESION_SPLITS:
            raise ValueError(f'DeepLesion: unknown split {split!r}, expected one of '
                             f'{sorted(DEEPLESION_SPLITS)}')
        codes = DEEPLESION_SPLITS[split]
        rule = 'DL_info.csv Train_Val_Test in ' + '/'.join(map(str, codes))
        builder = split_builder(dataset, split, final_dir, class_map,
                                'DeepLesion DL_info.csv + Images_png', rule)
        stats = builder.stats
        for name in sorted(slices):
            entry = slices[name]
            if entry['split'] not in codes:
                continue
            where = f'{csv_file}:{entry["rows"][0]}'
            if name not in written:
                try:
                    confined_path(None, name, where, 'File_name')
                    confined_path(images_dir, osp.relpath(slice_path(images_dir, name),
                                                          images_dir), where, 'File_name')
                    written[name] = _write_slice(
                        slice_path(images_dir, name), osp.join(img_out, name), where,
                        entry['windows'][0] if window == 'dicom' else (low, high), Image)
                except SampleError as err:
                    written[name] = None
                    skip_or_raise(err, skip_bad, stats)
                    continue
            if written[name] is None:
                stats.skipped_images['bad image'] += 1
                continue
            width, height = check_size(stats, where, entry['size'], written[name])
            img_id = builder.add_image(name, width, height, where)
            for box in entry['boxes']:
                builder.add_box(img_id, 1, box, width, height)
            stats.notes['possibly noisy'] += entry['noisy']
        builder.write_split(out_dir, 'DeepLesion key slices')
        results.append(stats)
    return results


def _write_slice(src: str, dst: str, where: str, window: Tuple[float, float],
                 Image) -> Tuple[int, int]:
    """Window one 16-bit slice to an 8-bit PNG; returns its size."""
    if not osp.isfile(src):
        raise MissingImageError(f'key slice of {where} not found: {src}')
    try:
        with Image.open(src) as img:
            pixels = np.asarray(img)
    except OSError as err:
        raise SampleError(f'{src}: cannot read the slice ({err})',
                          reason='unreadable image') from None
    if pixels.ndim != 2:
        raise SampleError(f'{src}: a DeepLesion slice is one 16-bit channel, got shape '
                          f'{pixels.shape}', reason='unreadable image')
    Image.fromarray(window_hu(pixels, *window)).save(dst)  # uint8 2-D: mode L
    return pixels.shape[1], pixels.shape[0]
