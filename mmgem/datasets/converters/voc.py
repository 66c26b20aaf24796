# Copyright (c) mmgem contributors. All rights reserved.
"""VOC XML: the UODB layout, Pascal VOC's devkits and the cross-domain sets.

A VOC-style folder is::

    <dir>/Annotations/<stem>.xml
    <dir>/JPEGImages/<stem>.jpg            (or .png, ...)
    <dir>/ImageSets/Main/<split>.txt       (one stem a line)

which is how UODB kept all 11 datasets, how the VOC2007 / VOC2012 devkits
unpack (``VOCdevkit/VOC2007``, ``VOCdevkit/VOC2012``) and how Clipart1k,
Watercolor2k and Comic2k (Inoue et al., CVPR 2018) are downloaded.

Conventions (mmdet's ``XMLDataset`` and ``tools/dataset_converters/
pascal_voc.py``): VOC corners are 1-based, so the COCO box is
``[xmin - 1, ymin - 1, xmax - xmin, ymax - ymin]``; ``difficult`` objects
get ``iscrowd=1`` (mmdet ignores them in training, COCO evaluation and the
VOC07 AP ignore them); image ids are 1-based positions in the split.
"""
import os.path as osp
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

from .common import (
    IMAGE_EXTENSIONS,
    ClassMap,
    CocoBuilder,
    ConversionStats,
    ImageLinker,
    MissingImageError,
    SampleError,
    check_size,
    confined_path,
    find_image,
    image_size,
    skip_or_raise,
    split_builder,
)


class MissingAnnotationError(SampleError, FileNotFoundError):
    """An annotation file that does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason='missing annotation')


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
        folder (str | None): ``<folder>``, if any.
    """
    path: str
    filename: Optional[str]
    width: int
    height: int
    objects: List[VOCObject]
    folder: Optional[str] = None


def _text(elem: ET.Element, tag: str, path: str) -> str:
    child = elem.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise SampleError(f'{path}: <{elem.tag}> has no <{tag}>', reason='bad annotation')
    return child.text.strip()


def _number(elem: ET.Element, tag: str, path: str) -> float:
    text = _text(elem, tag, path)
    try:
        return float(text)
    except ValueError:
        raise SampleError(f'{path}: <{tag}> of <{elem.tag}> is {text!r}, not a number',
                          reason='bad annotation') from None


def _flag(obj: ET.Element, tag: str, name: str, path: str) -> bool:
    text = obj.findtext(tag)
    if text is None or not text.strip():
        return False
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise SampleError(f'{path}: <{tag}> of object {name!r} is {text.strip()!r}, '
                          'not 0 or 1', reason='bad annotation')
    return bool(value)


def parse_voc_xml(path: str) -> VOCAnnotation:
    """Read one VOC-style annotation file.

    Args:
        path (str): The XML file.

    Returns:
        VOCAnnotation: Its file name, size and objects.

    Raises:
        MissingAnnotationError: If the file does not exist.
        SampleError: If it is not well-formed XML, misses a box field or has
            a non-numeric value; the message names the file.
    """
    if not osp.isfile(path):
        raise MissingAnnotationError(f'annotation file not found: {path}')
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise SampleError(f'{path}: cannot parse XML ({err})', reason='bad annotation') from None
    if root.tag != 'annotation':
        raise SampleError(f'{path}: root element is <{root.tag}>, expected <annotation>',
                          reason='bad annotation')
    filename = (root.findtext('filename') or '').strip() or None
    folder = (root.findtext('folder') or '').strip() or None
    width = height = 0
    size = root.find('size')
    if size is not None:
        if (size.findtext('width') or '').strip():
            width = int(_number(size, 'width', path))
        if (size.findtext('height') or '').strip():
            height = int(_number(size, 'height', path))
    objects = []
    for obj in root.findall('object'):
        name = _text(obj, 'name', path).lower()
        box = obj.find('bndbox')
        if box is None:
            raise SampleError(f'{path}: object {name!r} has no <bndbox>', reason='bad annotation')
        bbox = tuple(_number(box, tag, path) for tag in ('xmin', 'ymin', 'xmax', 'ymax'))
        objects.append(VOCObject(name=name, bbox=bbox,
                                 difficult=_flag(obj, 'difficult', name, path)))
    return VOCAnnotation(path, filename, width, height, objects, folder)


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
                raise ValueError(f'{split_file}: line {line_no} repeats image {stem!r} '
                                 f'(first on line {seen[stem]})')
            seen[stem] = line_no
            stems.append(stem)
    if not stems:
        raise ValueError(f'{split_file}: empty split, it lists no image')
    return stems


def add_voc_annotation(builder: CocoBuilder, ann: VOCAnnotation, file_name: str,
                       width: int, height: int) -> int:
    """Add one parsed VOC annotation (its image and objects) to a split.

    Args:
        builder (CocoBuilder): The split being built.
        ann (VOCAnnotation): The annotation.
        file_name (str): The image's name in the output image folder.
        width (int): Real image width.
        height (int): Real image height.

    Returns:
        int: The image id.

    Raises:
        SampleError: An unknown class (the file and name are given); the
            image is not added then.
    """
    stats = builder.stats
    cat_ids = [builder.class_map.lookup(obj.name, ann.path, stats) for obj in ann.objects]
    image_id = builder.add_image(file_name, width, height, ann.path)
    for obj, cat_id in zip(ann.objects, cat_ids):
        if cat_id is None:
            continue
        xmin, ymin, xmax, ymax = obj.bbox
        builder.add_box(image_id, cat_id, (xmin - 1, ymin - 1, xmax - 1, ymax - 1),
                        width, height, difficult=obj.difficult)
    return image_id


def add_voc_images(builder: CocoBuilder,
                   dataset_dir: str,
                   stems: Sequence[str],
                   check_images: bool = True,
                   skip_bad: bool = False,
                   linker: Optional[ImageLinker] = None,
                   file_name_of=None,
                   image_folder: str = 'JPEGImages') -> None:
    """Add the images of a VOC-style folder to a split.

    Args:
        builder (CocoBuilder): The split being built.
        dataset_dir (str): The folder with ``Annotations/`` and
            ``JPEGImages/``.
        stems (Sequence[str]): The images, by annotation stem.
        check_images (bool): Require every image to exist, and take its file
            name and size from the file (see the module docstring of
            :mod:`.common`).
        skip_bad (bool): Skip and count bad samples instead of failing.
        linker (ImageLinker, optional): Link (or copy) each image into the
            output image folder.
        file_name_of (callable, optional): ``(stem, found file name,
            annotation) -> output file name``; defaults to the found name.
        image_folder (str): The image subfolder (GMU Kitchen: ``Images``).
    """
    ann_dir = osp.join(dataset_dir, 'Annotations')
    img_dir = osp.join(dataset_dir, image_folder)
    stats = builder.stats
    for stem in stems:
        try:
            confined_path(ann_dir, stem,
                          f'the split list in {osp.join(dataset_dir, "ImageSets", "Main")}',
                          'image id')
            ann = parse_voc_xml(osp.join(ann_dir, f'{stem}.xml'))
            found = confined_path(img_dir, ann.filename or f'{stem}.jpg', ann.path,
                                  '<filename>' if ann.filename else 'image file')
            width, height = ann.width, ann.height
            if check_images or linker is not None:
                found = find_image(img_dir, stem, ann.filename, ann.path)
                if found is None:
                    tried = osp.join(img_dir, ann.filename or f'{stem}.jpg')
                    raise MissingImageError(
                        f'image of {ann.path} not found: tried {tried} and '
                        f'{stem}{{{",".join(IMAGE_EXTENSIONS)}}}')
                if ann.filename and found != ann.filename:
                    stats.filename_fixed += 1
                    stats.example('filename_fixed', f'{ann.path}: <filename> is '
                                  f'{ann.filename!r}, using {found!r}')
                width, height = check_size(stats, ann.path, (width, height),
                                           image_size(osp.join(img_dir, found)))
            if width <= 0 or height <= 0:
                raise SampleError(f'{ann.path}: no image size in <size> and no image to read '
                                  'it from', reason='bad annotation')
            file_name = found if file_name_of is None else file_name_of(stem, found, ann)
            add_voc_annotation(builder, ann, file_name, width, height)
        except SampleError as err:
            skip_or_raise(err, skip_bad, stats)
            continue
        if linker is not None:
            linker.link(osp.join(img_dir, found), file_name)


def convert_voc_split(dataset_dir: str,
                      dataset: str,
                      split: str,
                      classes: Sequence[str],
                      out_file: str,
                      name_map: Optional[Mapping[str, str]] = None,
                      ignored_names: Sequence[str] = (),
                      check_images: bool = True,
                      drop_unknown: bool = False,
                      skip_bad: bool = False,
                      final_out_file: Optional[str] = None,
                      linker: Optional[ImageLinker] = None,
                      source: str = 'VOC-style folder') -> ConversionStats:
    """Convert one split of a VOC-style folder to a COCO JSON file.

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
            ``JPEGImages/`` and take its real file name and size from it.
            Defaults to True.
        drop_unknown (bool): Drop and count boxes of names outside the class
            list instead of failing.
        skip_bad (bool): Skip and count bad samples instead of failing.
        final_out_file (str, optional): Where ``out_file`` ends up after a
            staged run (for the stats); defaults to ``out_file``.
        linker (ImageLinker, optional): Link the images into an output image
            folder.
        source (str): What was read, for the JSON's info.

    Returns:
        ConversionStats: Counts of what was written and skipped.

    Raises:
        FileNotFoundError: A missing split file, XML or image (named).
        ValueError: An unparsable XML, an empty split, an image without a
            size, or a class not in ``classes`` (file and name given).
    """
    class_map = ClassMap(dataset, classes, name_map, ignored_names, drop_unknown)
    stems = read_split(osp.join(dataset_dir, 'ImageSets', 'Main', f'{split}.txt'))
    stats = ConversionStats(dataset=dataset, split=split,
                            out_file=final_out_file or out_file, source=source,
                            split_rule=f'ImageSets/Main/{split}.txt')
    builder = CocoBuilder(stats, class_map)
    add_voc_images(builder, dataset_dir, stems, check_images, skip_bad, linker)
    builder.write(out_file, f'UODB {dataset} {split} from {source}, converted by mmgem')
    return stats


#: Splits of the VOC 07+12 protocol: split -> [(year, image set), ...].
VOC0712_SPLITS = {
    'trainval': (('2007', 'trainval'), ('2012', 'trainval')),
    'test': (('2007', 'test'), ),
}


def import_voc_devkit(devkit: str,
                      out_dir: str,
                      final_dir: str,
                      classes: Sequence[str],
                      splits: Sequence[str] = ('trainval', 'test'),
                      dataset: str = 'voc',
                      check_images: bool = True,
                      drop_unknown: bool = False,
                      skip_bad: bool = False,
                      link_mode: str = 'symlink') -> List[ConversionStats]:
    """Import Pascal VOC 07+12 from the devkits as downloaded.

    Reads ``VOCdevkit/VOC2007`` (``VOCtrainval_06-Nov-2007.tar`` and
    ``VOCtest_06-Nov-2007.tar``) and ``VOCdevkit/VOC2012``
    (``VOCtrainval_11-May-2012.tar``). ``trainval`` is 07 trainval followed
    by 12 trainval (16,551 images), ``test`` is 07 test (4,952 images), the
    07+12 protocol of UODB and DAMEX. The two years' stems do not collide
    (``000005`` vs ``2008_000002``; a collision is an error), so their images
    share one output folder.

    Args:
        devkit (str): The ``VOCdevkit`` folder.
        out_dir (str): The dataset's output folder being written
            (``annotations/`` and ``JPEGImages/`` go there).
        final_dir (str): Where ``out_dir`` ends up (for links and stats).
        classes (Sequence[str]): VOC's 20 classes.
        splits (Sequence[str]): Of ``'trainval'`` and ``'test'``.
        dataset (str): Output dataset name.
        check_images (bool): See :func:`add_voc_images`.
        drop_unknown (bool): See :class:`~.common.ClassMap`.
        skip_bad (bool): Skip and count bad samples.
        link_mode (str): How images get into ``JPEGImages/``.

    Returns:
        list[ConversionStats]: One per split.
    """
    results = []
    linker = ImageLinker.for_dataset(out_dir, final_dir, link_mode)
    for split in splits:
        if split not in VOC0712_SPLITS:
            raise ValueError(f'VOC: unknown split {split!r}, expected one of '
                             f'{sorted(VOC0712_SPLITS)}')
        parts = VOC0712_SPLITS[split]
        builder = split_builder(dataset, split, final_dir,
                                ClassMap(dataset, classes, drop_unknown=drop_unknown),
                                'VOCdevkit ' + ' + '.join(f'VOC{y} {s}' for y, s in parts),
                                ' + '.join(f'VOC{y}/ImageSets/Main/{s}.txt' for y, s in parts))
        stats = builder.stats
        seen = {}
        for year, image_set in parts:
            year_dir = osp.join(devkit, f'VOC{year}')
            if not osp.isdir(year_dir):
                raise FileNotFoundError(f'VOC: devkit folder not found: {year_dir}')
            stems = read_split(osp.join(year_dir, 'ImageSets', 'Main', f'{image_set}.txt'))
            for stem in stems:
                if stem in seen:
                    raise ValueError(f'VOC: image {stem!r} is in both VOC{seen[stem]} and '
                                     f'VOC{year} {image_set}')
                seen[stem] = year
            add_voc_images(builder, year_dir, stems, check_images, skip_bad, linker)
        builder.write_split(out_dir, stats.source)
        results.append(stats)
    return results
