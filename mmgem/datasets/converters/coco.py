# Copyright (c) mmgem contributors. All rights reserved.
"""COCO: UODB's 2014 valminusminival / minival from the official files.

UODB (and DAMEX) train on COCO 2014 ``valminusminival`` (35,504 images) and
test on ``minival`` (5,000 images), Detectron's split of ``val2014``. Those
two files are not in COCO's official downloads, but ``val2017`` *is* the
2014 minival: the same 5,000 images with the same image ids. So
:func:`import_coco` reads the official ``instances_val2014.json`` (from
``annotations_trainval2014.zip``) and ``instances_val2017.json`` (from
``annotations_trainval2017.zip``) and writes

- ``minival``: the val2014 images whose ids are in val2017, and
- ``valminusminival``: the other val2014 images,

with the 2014 annotations of those images, COCO's image, annotation and
category ids, and the 2014 file names (images from ``val2014/``). With
``version='2017'`` it writes ``train2017`` / ``val2017`` instead (images
from ``train2017/`` and ``val2017/``).

Only box fields are kept (segmentations are dropped); broken boxes are
skipped and counted as for every importer; ``iscrowd`` is kept.
"""
import json
import os.path as osp
from typing import Dict, List, Optional, Sequence, Set

from .common import (
    ClassMap,
    CocoBuilder,
    ConversionStats,
    ImageLinker,
    MissingImageError,
    SampleError,
    check_size,
    confined_path,
    image_size,
    skip_or_raise,
)


def _load_json(path: str) -> dict:
    if not osp.isfile(path):
        raise FileNotFoundError(f'COCO annotation file not found: {path}')
    try:
        with open(path, encoding='utf-8') as f:
            src = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f'{path}: cannot parse JSON ({err})') from None
    for key in ('images', 'annotations', 'categories'):
        if key not in src:
            raise ValueError(f'{path}: no {key!r} in COCO JSON')
    return src


def _categories(src: dict, src_file: str, dataset: str,
                classes: Sequence[str]) -> Dict[int, str]:
    order = {c: i for i, c in enumerate(classes)}
    cats = {}
    for cat in src['categories']:
        if cat['name'] not in order:
            raise ValueError(f'{src_file}: class {cat["name"]!r} is not in the class list '
                             f'of {dataset!r}')
        cats[cat['id']] = cat['name']
    missing = [c for c in classes if c not in cats.values()]
    if missing:
        raise ValueError(f'{src_file}: class(es) {missing} of {dataset!r} are not categories '
                         'of the file')
    return cats


def coco_subset(src: dict,
                src_file: str,
                dataset: str,
                split: str,
                classes: Sequence[str],
                out_file: str,
                image_ids: Optional[Set[int]] = None,
                img_dir: Optional[str] = None,
                skip_bad: bool = False,
                linker: Optional[ImageLinker] = None,
                final_out_file: Optional[str] = None,
                split_rule: str = '') -> ConversionStats:
    """Write the images ``image_ids`` of a loaded COCO file as one split.

    Args:
        src (dict): The loaded COCO instances JSON.
        src_file (str): Its path (for messages).
        dataset (str): Dataset name.
        split (str): Split name.
        classes (Sequence[str]): The expected category names, in label
            order; a category of the file not in it is an error.
        out_file (str): The JSON to write.
        image_ids (set[int], optional): The images to keep (all if None).
        img_dir (str, optional): If given, every image must exist there; its
            real size wins over the file's ``width``/``height``.
        skip_bad (bool): Skip and count missing/unreadable images.
        linker (ImageLinker, optional): Link the images into the output
            image folder.
        final_out_file (str, optional): Final path of ``out_file``.
        split_rule (str): How the split was made.

    Returns:
        ConversionStats: Counts of what was written and skipped.
    """
    cats = _categories(src, src_file, dataset, classes)
    order = {c: i for i, c in enumerate(classes)}
    stats = ConversionStats(dataset=dataset, split=split,
                            out_file=final_out_file or out_file,
                            source=osp.basename(src_file), split_rule=split_rule)
    builder = CocoBuilder(stats, ClassMap(dataset, classes))
    sizes: Dict[int, tuple] = {}
    for img in sorted(src['images'], key=lambda i: i['id']):
        if image_ids is not None and img['id'] not in image_ids:
            continue
        width, height = img['width'], img['height']
        try:
            confined_path(img_dir, img.get('file_name'), f'{src_file} image {img["id"]}',
                          'file_name')
            if img_dir is not None:
                path = osp.join(img_dir, img['file_name'])
                if not osp.isfile(path):
                    raise MissingImageError(f'image of {src_file} not found: {path}')
                width, height = check_size(stats, f'{src_file} image {img["id"]}',
                                           (width, height), image_size(path))
        except SampleError as err:
            skip_or_raise(err, skip_bad, stats)
            continue
        builder.add_image(img['file_name'], width, height, src_file, image_id=img['id'])
        sizes[img['id']] = (width, height)
        if linker is not None:
            linker.link(osp.join(img_dir, img['file_name']), img['file_name'])
    if not builder.images:
        raise ValueError(f'{src_file}: empty split {split!r}, it lists no image')
    known = {img['id'] for img in src['images']}
    for ann in sorted(src['annotations'], key=lambda a: a['id']):
        if ann['image_id'] not in known:
            raise ValueError(f'{src_file}: annotation {ann["id"]} refers to unknown image '
                             f'{ann["image_id"]}')
        if ann['image_id'] not in sizes:
            continue
        if ann['category_id'] not in cats:
            raise ValueError(f'{src_file}: annotation {ann["id"]} has unknown category id '
                             f'{ann["category_id"]}')
        x, y, w, h = ann['bbox']
        width, height = sizes[ann['image_id']]
        builder.add_box(ann['image_id'], ann['category_id'], (x, y, x + w, y + h), width,
                        height, difficult=bool(ann.get('iscrowd', 0)), ann_id=ann['id'],
                        area=ann.get('area'))
    categories = sorted(
        (dict(id=cid, name=name, supercategory=dataset) for cid, name in cats.items()),
        key=lambda c: order[c['name']])
    builder.write(out_file, f'UODB {dataset} {split} from {osp.basename(src_file)}, '
                  'converted by mmgem', categories)
    return stats


def convert_coco_json(src_file: str,
                      dataset: str,
                      split: str,
                      classes: Sequence[str],
                      out_file: str,
                      img_dir: Optional[str] = None,
                      skip_bad: bool = False,
                      final_out_file: Optional[str] = None) -> ConversionStats:
    """Filter a whole COCO JSON into the converters' output form.

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
        skip_bad (bool): Skip and count missing/unreadable images.
        final_out_file (str, optional): Final path of ``out_file``.

    Returns:
        ConversionStats: Counts of what was written and skipped.

    Raises:
        FileNotFoundError: A missing source file or image (named).
        ValueError: An unparsable file, a file without images, or an
            unknown category (file and name given).
    """
    src = _load_json(src_file)
    return coco_subset(src, src_file, dataset, split, classes, out_file, img_dir=img_dir,
                       skip_bad=skip_bad, final_out_file=final_out_file,
                       split_rule=f'all images of {osp.basename(src_file)}')


def import_coco(coco_root: str,
                out_dir: str,
                final_dir: str,
                classes: Sequence[str],
                version: str = '2014',
                dataset: str = 'coco',
                check_images: bool = True,
                skip_bad: bool = False,
                link_mode: str = 'symlink') -> List[ConversionStats]:
    """Import COCO from the official annotation files and image folders.

    Args:
        coco_root (str): Folder with ``annotations/instances_val2014.json``,
            ``annotations/instances_val2017.json`` and ``val2014/`` (version
            ``'2014'``), or ``annotations/instances_{train,val}2017.json``
            and ``{train,val}2017/`` (version ``'2017'``).
        out_dir (str): The dataset's output folder being written.
        final_dir (str): Where ``out_dir`` ends up.
        classes (Sequence[str]): COCO's 80 class names in label order.
        version (str): ``'2014'``: UODB's valminusminival / minival;
            ``'2017'``: train2017 / val2017.
        dataset (str): Output dataset name.
        check_images (bool): Require the images and check their sizes.
        skip_bad (bool): Skip and count missing/unreadable images.
        link_mode (str): How images get into ``JPEGImages/``.

    Returns:
        list[ConversionStats]: One per split.
    """
    ann_dir = osp.join(coco_root, 'annotations')
    linker = ImageLinker.for_dataset(out_dir, final_dir, link_mode)
    results = []

    def _write(src, src_file, split, ids, img_dir, rule):
        results.append(coco_subset(
            src, src_file, dataset, split, classes,
            osp.join(out_dir, 'annotations', f'{split}.json'), image_ids=ids,
            img_dir=img_dir if check_images else None, skip_bad=skip_bad,
            linker=linker if check_images else None,
            final_out_file=osp.join(final_dir, 'annotations', f'{split}.json'),
            split_rule=rule))
        if not check_images:  # still link, without checking (the names are confined)
            for img in src['images']:
                if ids is None or img['id'] in ids:
                    try:
                        confined_path(img_dir, img['file_name'],
                                      f'{src_file} image {img["id"]}', 'file_name')
                    except SampleError:
                        if skip_bad:  # counted by coco_subset
                            continue
                        raise
                    linker.link(osp.join(img_dir, img['file_name']), img['file_name'])

    if version == '2014':
        val14_file = osp.join(ann_dir, 'instances_val2014.json')
        val17_file = osp.join(ann_dir, 'instances_val2017.json')
        val14 = _load_json(val14_file)
        minival = {img['id'] for img in _load_json(val17_file)['images']}
        ids14 = {img['id'] for img in val14['images']}
        stray = sorted(minival - ids14)
        if stray:
            raise ValueError(f'{val17_file}: image id {stray[0]} (and {len(stray) - 1} more) '
                             f'is not an image of {val14_file}; val2017 should be the 2014 '
                             'minival')
        img_dir = osp.join(coco_root, 'val2014')
        _write(val14, val14_file, 'valminusminival', ids14 - minival, img_dir,
               'val2014 images not in val2017')
        _write(val14, val14_file, 'minival', minival, img_dir,
               'val2014 images in val2017 (val2017 is the 2014 minival)')
    elif version == '2017':
        for split in ('train2017', 'val2017'):
            src_file = osp.join(ann_dir, f'instances_{split}.json')
            _write(_load_json(src_file), src_file, split, None,
                   osp.join(coco_root, split), f'all images of instances_{split}.json')
    else:
        raise ValueError(f"COCO: version must be '2014' or '2017', got {version!r}")
    return results
