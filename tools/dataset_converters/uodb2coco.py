# Copyright (c) mmgem contributors. All rights reserved.
"""Convert UODB datasets (VOC-style layout or COCO's JSON) to COCO JSON.

UODB keeps each of its 11 datasets in a VOC-style folder::

    ROOT/<name>/Annotations/<stem>.xml
    ROOT/<name>/JPEGImages/<stem>.jpg          (or .png)
    ROOT/<name>/ImageSets/Main/<split>.txt     (one stem a line)

This tool writes one COCO JSON file per dataset and split, with that
dataset's own class list (``mmgem.datasets.uodb_meta.UODB_CLASSES``, or
``MINI_UODB_CLASSES`` with ``--preset mini_uodb``)::

    OUT/<name>/annotations/<split>.json        (OUT defaults to ROOT)

so an mmdet ``CocoDataset`` reads it with ``data_root=ROOT``,
``ann_file='<name>/annotations/<split>.json'`` and
``data_prefix=dict(img='<name>/JPEGImages/')``, which is what
``configs/_base_/datasets/uodb.py`` and ``mini_uodb.py`` do.

Usage::

    # all 11 UODB datasets with DAMEX's splits
    python tools/dataset_converters/uodb2coco.py data/uodb
    # some datasets, explicit splits, another output root
    python tools/dataset_converters/uodb2coco.py data/uodb \\
        --datasets voc widerface --splits trainval test --out /tmp/uodb_json
    # the generated mini-UODB
    python tools/dataset_converters/uodb2coco.py data/mini_uodb --preset mini_uodb

Conventions (those of mmdet's ``tools/dataset_converters/pascal_voc.py`` and
``XMLDataset``):

- VOC coordinates are 1-based: the COCO box is
  ``[xmin - 1, ymin - 1, xmax - xmin, ymax - ymin]`` (floats are kept).
- ``difficult`` objects get ``iscrowd=1`` (mmdet ignores them in training,
  COCO evaluation ignores them).
- Image ids are the 1-based line numbers of the split file, so they are
  stable as long as the split file is.
- Names are compared lower-cased and stripped. KITTI's ``van``, ``truck``
  and ``tram`` become ``car`` as in UODB; its ``dontcare``, ``misc`` and
  ``person_sitting`` boxes are dropped and counted. Any other name that is
  not in the dataset's class list is an error naming the file and the name.
- Broken boxes are skipped and counted, never fatal: zero or negative width
  or height (``zero_area``) and boxes with no area inside the image
  (``outside``). Boxes that stick out of the image are clipped (``clipped``).
- A missing split file, XML or image (with ``--check-images``, the default)
  or an unparsable XML fails with its path; an empty split fails too.
- VOC 07+12 lives in one folder ``ROOT/voc``: the XMLs and images of both
  years (their stems do not collide) with ``trainval.txt`` listing 07's and
  12's trainval and ``test.txt`` 07's test.
- COCO's part may come from COCO's own JSON: when
  ``ROOT/coco/annotations/instances_<split>2014.json`` exists (UODB's COCO
  splits are ``valminusminival`` and ``minival`` of 2014), it is filtered the
  same way and written as ``coco/annotations/<split>.json`` with COCO's
  image and category ids. Put (or link) COCO's ``val2014`` images in
  ``ROOT/coco/JPEGImages/``.

Every output file is written atomically (temporary file, then rename), and
the output is deterministic: converting twice gives identical bytes.
"""
import argparse
import json
import os.path as osp
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

try:
    from mmgem.datasets.mini_uodb_meta import MINI_UODB_CLASSES, MINI_UODB_SPLITS
    from mmgem.datasets.uodb_meta import (
        UODB_CLASSES,
        UODB_IGNORED_NAMES,
        UODB_NAME_MAPS,
        UODB_SPLITS,
    )
    from mmgem.utils import atomic_write
except ImportError:  # pragma: no cover - run from a checkout, not installed
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
    from mmgem.datasets.mini_uodb_meta import MINI_UODB_CLASSES, MINI_UODB_SPLITS
    from mmgem.datasets.uodb_meta import (
        UODB_CLASSES,
        UODB_IGNORED_NAMES,
        UODB_NAME_MAPS,
        UODB_SPLITS,
    )
    from mmgem.utils import atomic_write

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')

PRESETS = {
    'uodb': (UODB_CLASSES, UODB_SPLITS, UODB_NAME_MAPS, UODB_IGNORED_NAMES),
    'mini_uodb': (MINI_UODB_CLASSES, MINI_UODB_SPLITS, {}, {}),
}


@dataclass
class ConversionStats:
    """What a conversion kept and dropped.

    Attributes:
        dataset (str): Dataset name.
        split (str): Split name.
        out_file (str): The written COCO JSON file.
        images (int): Images written.
        annotations (int): Boxes written.
        difficult (int): Boxes written with ``iscrowd=1``.
        clipped (int): Boxes clipped to the image.
        zero_area (int): Boxes skipped for zero or negative width/height.
        outside (int): Boxes skipped for lying outside the image.
        mapped (Counter): Names folded into a class, e.g. ``{'van': 3}``.
        ignored (Counter): Names whose boxes were dropped on purpose.
    """
    dataset: str
    split: str
    out_file: str = ''
    images: int = 0
    annotations: int = 0
    difficult: int = 0
    clipped: int = 0
    zero_area: int = 0
    outside: int = 0
    mapped: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)

    @property
    def skipped(self) -> int:
        """int: Broken boxes skipped (zero area or outside the image)."""
        return self.zero_area + self.outside


@dataclass
class VOCObject:
    """One ``<object>`` of a VOC XML file.

    Attributes:
        name (str): Lower-cased, stripped class name.
        bbox (tuple): ``(xmin, ymin, xmax, ymax)`` as written (1-based).
        difficult (bool): The ``difficult`` flag.
    """
    name: str
    bbox: Tuple[float, float, float, float]
    difficult: bool = False


@dataclass
class VOCAnnotation:
    """The content of one VOC XML file.

    Attributes:
        path (str): The XML file.
        filename (str | None): ``<filename>``, if any.
        width (int): ``<size><width>`` (0 if missing).
        height (int): ``<size><height>`` (0 if missing).
        objects (list[VOCObject]): The objects.
    """
    path: str
    filename: Optional[str]
    width: int
    height: int
    objects: List[VOCObject]


def _text(elem: ET.Element, tag: str, path: str) -> str:
    child = elem.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f'{path}: <{elem.tag}> has no <{tag}>')
    return child.text.strip()


def _number(elem: ET.Element, tag: str, path: str) -> float:
    text = _text(elem, tag, path)
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f'{path}: <{tag}> of <{elem.tag}> is {text!r}, not a number'
        ) from None


def parse_voc_xml(path: str) -> VOCAnnotation:
    """Read one VOC-style annotation file.

    Args:
        path (str): The XML file.

    Returns:
        VOCAnnotation: Its file name, size and objects.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not well-formed XML or misses a box field; the
            message names the file.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'annotation file not found: {path}')
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f'{path}: cannot parse XML ({err})') from None
    if root.tag != 'annotation':
        raise ValueError(
            f'{path}: root element is <{root.tag}>, expected <annotation>')
    filename = root.findtext('filename')
    filename = filename.strip() if filename and filename.strip() else None
    width = height = 0
    size = root.find('size')
    if size is not None:
        if size.findtext('width'):
            width = int(_number(size, 'width', path))
        if size.findtext('height'):
            height = int(_number(size, 'height', path))
    objects = []
    for obj in root.findall('object'):
        name = _text(obj, 'name', path).lower()
        box = obj.find('bndbox')
        if box is None:
            raise ValueError(f'{path}: object {name!r} has no <bndbox>')
        bbox = tuple(
            _number(box, tag, path)
            for tag in ('xmin', 'ymin', 'xmax', 'ymax'))
        difficult = obj.findtext('difficult')
        objects.append(
            VOCObject(
                name=name,
                bbox=bbox,
                difficult=bool(int(float(difficult)))
                if difficult and difficult.strip() else False))
    return VOCAnnotation(path, filename, width, height, objects)


def read_split(split_file: str) -> List[str]:
    """Read the image stems of an ``ImageSets/Main/<split>.txt`` file.

    Only the first column of each line is used (VOC's per-class files add a
    ``1``/``-1`` column).

    Args:
        split_file (str): The split file.

    Returns:
        list[str]: The stems, in file order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it lists no image or an image twice.
    """
    if not osp.isfile(split_file):
        raise FileNotFoundError(f'split file not found: {split_file}')
    stems, seen = [], {}
    with open(split_file, encoding='utf-8') as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            stem = parts[0]
            if stem in seen:
                raise ValueError(
                    f'{split_file}: line {line_no} repeats image {stem!r} '
                    f'(first on line {seen[stem]})')
            seen[stem] = line_no
            stems.append(stem)
    if not stems:
        raise ValueError(f'{split_file}: empty split, it lists no image')
    return stems


def dump_json_atomic(obj: object, out_file: str) -> None:
    """Write JSON to ``out_file`` through a temporary file and a rename.

    Args:
        obj (object): JSON-serialisable content.
        out_file (str): Destination; its folder is created if needed.
    """
    atomic_write(out_file, json.dumps(obj, separators=(',', ':')))


def _find_image(img_dir: str, stem: str,
                filename: Optional[str]) -> Optional[str]:
    candidates = [filename] if filename else []
    candidates += [stem + ext for ext in IMAGE_EXTENSIONS]
    for cand in candidates:
        if osp.isfile(osp.join(img_dir, cand)):
            return cand
    return None


def _image_size(path: str) -> Tuple[int, int]:
    from PIL import Image
    with Image.open(path) as img:
        return img.size


def _clip_box(x1: float, y1: float, x2: float, y2: float, width: int,
              height: int) -> Tuple[str, Tuple[float, float, float, float]]:
    """Classify and clip an ``x1y1x2y2`` box (0-based, continuous)."""
    if x2 <= x1 or y2 <= y1:
        return 'zero_area', (x1, y1, x2, y2)
    cx1, cy1 = max(x1, 0.), max(y1, 0.)
    cx2, cy2 = min(x2, float(width)), min(y2, float(height))
    if cx2 <= cx1 or cy2 <= cy1:
        return 'outside', (x1, y1, x2, y2)
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        return 'clipped', (cx1, cy1, cx2, cy2)
    return 'ok', (x1, y1, x2, y2)


def _number_out(value: float):
    """Write integral floats as ints so the JSON stays compact."""
    return int(value) if float(value).is_integer() else round(value, 3)


def convert_voc_split(dataset_dir: str,
                      dataset: str,
                      split: str,
                      classes: Sequence[str],
                      out_file: str,
                      name_map: Optional[Mapping[str, str]] = None,
                      ignored_names: Sequence[str] = (),
                      check_images: bool = True) -> ConversionStats:
    """Convert one split of a VOC-style dataset to a COCO JSON file.

    Args:
        dataset_dir (str): The dataset's folder (holding ``Annotations/``,
            ``JPEGImages/`` and ``ImageSets/Main/``).
        dataset (str): Dataset name, used in messages and the JSON's info.
        split (str): Split name: reads ``ImageSets/Main/<split>.txt``.
        classes (Sequence[str]): The dataset's classes in label order; they
            become categories ``1..C``.
        out_file (str): The COCO JSON to write (atomically).
        name_map (Mapping[str, str], optional): Names folded into a class,
            e.g. ``{'van': 'car'}``.
        ignored_names (Sequence[str]): Names whose boxes are dropped.
        check_images (bool): Require every image to exist in
            ``JPEGImages/`` (and take its real file name and, when the XML
            has none, its size from it). Defaults to True.

    Returns:
        ConversionStats: Counts of what was written and skipped.

    Raises:
        FileNotFoundError: A missing split file, XML or image (named).
        ValueError: An unparsable XML, an empty split, an image without a
            size, or a class not in ``classes`` (file and name given).
    """
    classes = tuple(c.lower().strip() for c in classes)
    if len(set(classes)) != len(classes):
        raise ValueError(f'{dataset}: duplicate class names in {classes}')
    cat_ids = {name: i + 1 for i, name in enumerate(classes)}
    name_map = {k.lower(): v.lower() for k, v in (name_map or {}).items()}
    ignored = {n.lower() for n in ignored_names}
    for src, dst in name_map.items():
        if dst not in cat_ids:
            raise ValueError(
                f'{dataset}: name map sends {src!r} to {dst!r}, '
                f'which is not one of its classes {classes}')

    split_file = osp.join(dataset_dir, 'ImageSets', 'Main', f'{split}.txt')
    ann_dir = osp.join(dataset_dir, 'Annotations')
    img_dir = osp.join(dataset_dir, 'JPEGImages')
    stems = read_split(split_file)

    stats = ConversionStats(dataset=dataset, split=split, out_file=out_file)
    images, annotations = [], []
    for image_id, stem in enumerate(stems, 1):
        ann = parse_voc_xml(osp.join(ann_dir, f'{stem}.xml'))
        file_name = ann.filename or f'{stem}.jpg'
        width, height = ann.width, ann.height
        if check_images:
            found = _find_image(img_dir, stem, ann.filename)
            if found is None:
                raise FileNotFoundError(
                    f'image of {ann.path} not found: tried '
                    f'{osp.join(img_dir, file_name)} and '
                    f'{stem}{{{",".join(IMAGE_EXTENSIONS)}}}')
            file_name = found
            if width <= 0 or height <= 0:
                width, height = _image_size(osp.join(img_dir, found))
        if width <= 0 or height <= 0:
            raise ValueError(
                f'{ann.path}: no image size in <size> and no image to read '
                f'it from')
        images.append(
            dict(id=image_id, file_name=file_name, width=width,
                 height=height))
        stats.images += 1
        for obj in ann.objects:
            name = obj.name
            if name in ignored:
                stats.ignored[name] += 1
                continue
            if name in name_map:
                stats.mapped[name] += 1
                name = name_map[name]
            if name not in cat_ids:
                raise ValueError(
                    f'{ann.path}: class {obj.name!r} is not in the class list '
                    f'of {dataset!r} {classes}')
            xmin, ymin, xmax, ymax = obj.bbox
            status, (x1, y1, x2, y2) = _clip_box(xmin - 1, ymin - 1,
                                                 xmax - 1, ymax - 1, width,
                                                 height)
            if status in ('zero_area', 'outside'):
                setattr(stats, status, getattr(stats, status) + 1)
                continue
            if status == 'clipped':
                stats.clipped += 1
            w, h = x2 - x1, y2 - y1
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=cat_ids[name],
                    bbox=[_number_out(v) for v in (x1, y1, w, h)],
                    area=_number_out(w * h),
                    iscrowd=int(obj.difficult)))
            stats.annotations += 1
            stats.difficult += int(obj.difficult)

    coco = dict(
        info=dict(
            description=f'UODB {dataset} {split}, converted by mmgem '
            'tools/dataset_converters/uodb2coco.py',
            dataset=dataset,
            split=split),
        images=images,
        annotations=annotations,
        categories=[
            dict(id=cat_ids[c], name=c, supercategory=dataset)
            for c in classes
        ])
    dump_json_atomic(coco, out_file)
    return stats


def convert_coco_json(src_file: str,
                      dataset: str,
                      split: str,
                      classes: Sequence[str],
                      out_file: str,
                      img_dir: Optional[str] = None) -> ConversionStats:
    """Filter COCO's own JSON into the converters' output form.

    Keeps COCO's image and category ids, the categories in ``classes``
    order, and only bbox fields (segmentations are dropped). Broken boxes are
    skipped and counted as for XML.

    Args:
        src_file (str): COCO instances JSON, e.g.
            ``instances_minival2014.json``.
        dataset (str): Dataset name (``'coco'``).
        split (str): Split name, for the JSON's info and messages.
        classes (Sequence[str]): Expected category names; a category of the
            file not in it is an error.
        out_file (str): The JSON to write (atomically).
        img_dir (str, optional): If given, every image must exist there.

    Returns:
        ConversionStats: Counts of what was written and skipped.

    Raises:
        FileNotFoundError: A missing source file or image (named).
        ValueError: An unparsable file, a file without images, or an
            unknown category (file and name given).
    """
    if not osp.isfile(src_file):
        raise FileNotFoundError(f'COCO annotation file not found: {src_file}')
    try:
        with open(src_file, encoding='utf-8') as f:
            src = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f'{src_file}: cannot parse JSON ({err})') from None
    for key in ('images', 'annotations', 'categories'):
        if key not in src:
            raise ValueError(f'{src_file}: no {key!r} in COCO JSON')
    if not src['images']:
        raise ValueError(f'{src_file}: empty split, it lists no image')
    order = {c: i for i, c in enumerate(classes)}
    cats = {}
    for cat in src['categories']:
        if cat['name'] not in order:
            raise ValueError(
                f'{src_file}: class {cat["name"]!r} is not in the class list '
                f'of {dataset!r}')
        cats[cat['id']] = cat['name']
    stats = ConversionStats(dataset=dataset, split=split, out_file=out_file)
    images, sizes = [], {}
    for img in sorted(src['images'], key=lambda i: i['id']):
        if img_dir is not None and not osp.isfile(
                osp.join(img_dir, img['file_name'])):
            raise FileNotFoundError(
                f'image of {src_file} not found: '
                f'{osp.join(img_dir, img["file_name"])}')
        images.append(
            dict(id=img['id'], file_name=img['file_name'],
                 width=img['width'], height=img['height']))
        sizes[img['id']] = (img['width'], img['height'])
    stats.images = len(images)
    annotations = []
    for ann in sorted(src['annotations'], key=lambda a: a['id']):
        if ann['image_id'] not in sizes:
            raise ValueError(
                f'{src_file}: annotation {ann["id"]} refers to unknown image '
                f'{ann["image_id"]}')
        if ann['category_id'] not in cats:
            raise ValueError(
                f'{src_file}: annotation {ann["id"]} has unknown category id '
                f'{ann["category_id"]}')
        x, y, w, h = ann['bbox']
        width, height = sizes[ann['image_id']]
        status, (x1, y1, x2, y2) = _clip_box(x, y, x + w, y + h, width,
                                             height)
        if status in ('zero_area', 'outside'):
            setattr(stats, status, getattr(stats, status) + 1)
            continue
        if status == 'clipped':
            stats.clipped += 1
        annotations.append(
            dict(
                id=ann['id'],
                image_id=ann['image_id'],
                category_id=ann['category_id'],
                bbox=[_number_out(v) for v in (x1, y1, x2 - x1, y2 - y1)],
                area=_number_out(ann.get('area', (x2 - x1) * (y2 - y1))),
                iscrowd=int(ann.get('iscrowd', 0))))
        stats.annotations += 1
        stats.difficult += int(ann.get('iscrowd', 0))
    categories = sorted(
        (dict(id=cid, name=name, supercategory=dataset)
         for cid, name in cats.items()),
        key=lambda c: order[c['name']])
    coco = dict(
        info=dict(
            description=f'UODB {dataset} {split} from {osp.basename(src_file)}'
            ', converted by mmgem tools/dataset_converters/uodb2coco.py',
            dataset=dataset,
            split=split),
        images=images,
        annotations=annotations,
        categories=categories)
    dump_json_atomic(coco, out_file)
    return stats


def coco_json_source(root: str, split: str) -> str:
    """Where COCO's own JSON for a UODB COCO split is looked for.

    Args:
        root (str): The UODB root.
        split (str): ``'valminusminival'`` or ``'minival'``.

    Returns:
        str: ``ROOT/coco/annotations/instances_<split>2014.json``.
    """
    return osp.join(root, 'coco', 'annotations',
                    f'instances_{split}2014.json')


def output_file(out_root: str, dataset: str, split: str) -> str:
    """The COCO JSON path of a dataset's split: ``OUT/<name>/annotations/
    <split>.json``.

    Args:
        out_root (str): Output root.
        dataset (str): Dataset name.
        split (str): Split name.

    Returns:
        str: The path.
    """
    return osp.join(out_root, dataset, 'annotations', f'{split}.json')


def convert_uodb(root: str,
                 datasets: Optional[Sequence[str]] = None,
                 splits: Optional[Sequence[str]] = None,
                 out: Optional[str] = None,
                 preset: str = 'uodb',
                 classes: Optional[Mapping[str, Sequence[str]]] = None,
                 check_images: bool = True) -> List[ConversionStats]:
    """Convert several datasets and splits of a UODB-style root.

    Args:
        root (str): Folder holding one VOC-style folder per dataset.
        datasets (Sequence[str], optional): Dataset names; defaults to all
            of the preset's.
        splits (Sequence[str], optional): Splits to convert for every
            dataset; defaults to each dataset's (train, test) of the preset
            (DAMEX's for ``'uodb'``).
        out (str, optional): Output root; defaults to ``root``.
        preset (str): ``'uodb'`` or ``'mini_uodb'``: the class lists, splits
            and name maps to use.
        classes (Mapping[str, Sequence[str]], optional): Class lists that
            override or extend the preset's, by dataset name.
        check_images (bool): See :func:`convert_voc_split`.

    Returns:
        list[ConversionStats]: One entry per converted dataset and split.
    """
    if preset not in PRESETS:
        raise ValueError(
            f'unknown preset {preset!r}, expected one of {sorted(PRESETS)}')
    preset_classes, preset_splits, name_maps, ignored = PRESETS[preset]
    all_classes: Dict[str, Sequence[str]] = dict(preset_classes)
    all_classes.update(classes or {})
    datasets = list(datasets) if datasets else list(preset_classes)
    out = root if out is None else out
    results = []
    for name in datasets:
        if name not in all_classes:
            raise ValueError(
                f'dataset {name!r} has no class list in preset {preset!r} '
                f'(known: {sorted(all_classes)}); pass classes for it')
        for split in (splits or preset_splits.get(name, ('train', 'test'))):
            out_file = output_file(out, name, split)
            coco_src = coco_json_source(root, split)
            if name == 'coco' and osp.isfile(coco_src):
                img_dir = osp.join(root, name, 'JPEGImages')
                stats = convert_coco_json(
                    coco_src, name, split, all_classes[name], out_file,
                    img_dir if check_images else None)
            else:
                stats = convert_voc_split(
                    osp.join(root, name), name, split, all_classes[name],
                    out_file, name_maps.get(name), ignored.get(name, ()),
                    check_images)
            results.append(stats)
    return results


def format_stats(results: Sequence[ConversionStats]) -> str:
    """Render conversion counts as a markdown table.

    Args:
        results (Sequence[ConversionStats]): Conversion results.

    Returns:
        str: The table.
    """
    lines = [
        '| dataset | split | images | boxes | difficult | clipped | '
        'skipped zero-area | skipped outside | mapped | dropped |',
        '|---|---|---|---|---|---|---|---|---|---|'
    ]
    for s in results:
        mapped = ', '.join(f'{k}:{v}' for k, v in sorted(s.mapped.items()))
        dropped = ', '.join(f'{k}:{v}' for k, v in sorted(s.ignored.items()))
        lines.append(f'| {s.dataset} | {s.split} | {s.images} | '
                     f'{s.annotations} | {s.difficult} | {s.clipped} | '
                     f'{s.zero_area} | {s.outside} | {mapped or "-"} | '
                     f'{dropped or "-"} |')
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert UODB (VOC-style or COCO JSON) to COCO JSON, one '
        'file per dataset and split: OUT/<name>/annotations/<split>.json')
    parser.add_argument('root', help='folder with one folder per dataset')
    parser.add_argument(
        '--datasets', nargs='+', help='datasets (default: all of the preset)')
    parser.add_argument(
        '--splits',
        nargs='+',
        help='splits for every dataset (default: DAMEX\'s train/test split '
        'of each dataset)')
    parser.add_argument('--out', help='output root (default: ROOT)')
    parser.add_argument(
        '--preset',
        default='uodb',
        choices=sorted(PRESETS),
        help='class lists and splits to use')
    parser.add_argument(
        '--classes',
        nargs='+',
        help='class list for a dataset outside the preset (needs exactly one '
        'dataset in --datasets)')
    parser.add_argument(
        '--no-check-images',
        action='store_true',
        help='do not require the images to exist (sizes come from the XML)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    classes = None
    if args.classes:
        if not args.datasets or len(args.datasets) != 1:
            raise SystemExit('--classes needs exactly one dataset in '
                             '--datasets')
        classes = {args.datasets[0]: args.classes}
    try:
        results = convert_uodb(
            args.root,
            datasets=args.datasets,
            splits=args.splits,
            out=args.out,
            preset=args.preset,
            classes=classes,
            check_images=not args.no_check_images)
    except (FileNotFoundError, ValueError) as err:
        print(f'uodb2coco: error: {err}', file=sys.stderr)
        return 1
    print(format_stats(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
