# Copyright (c) mmgem contributors. All rights reserved.
"""Convert a UODB-style root (one VOC-style folder per dataset) to COCO.

UODB kept each of its 11 datasets in a VOC-style folder::

    ROOT/<name>/Annotations/<stem>.xml
    ROOT/<name>/JPEGImages/<stem>.jpg          (or .png)
    ROOT/<name>/ImageSets/Main/<split>.txt     (one stem a line)

:func:`convert_uodb` writes one COCO JSON file per dataset and split, with
that dataset's own class list (``mmgem.datasets.uodb_meta.UODB_CLASSES``, or
``MINI_UODB_CLASSES`` with ``preset='mini_uodb'``)::

    OUT/<name>/annotations/<split>.json        (OUT defaults to ROOT)

so an mmdet ``CocoDataset`` reads it with ``data_root=ROOT``,
``ann_file='<name>/annotations/<split>.json'`` and
``data_prefix=dict(img='<name>/JPEGImages/')``, which is what
``configs/_base_/datasets/uodb.py`` and ``mini_uodb.py`` do.

COCO's part may come from COCO's own JSON: when
``ROOT/coco/annotations/instances_<split>2014.json`` exists (Detectron's
``instances_minival2014.json`` / ``instances_valminusminival2014.json``), it
is filtered the same way and written as ``coco/annotations/<split>.json``
with COCO's ids. Put (or link) COCO's ``val2014`` images in
``ROOT/coco/JPEGImages/``. To start from the datasets' own downloads instead
of UODB's folders, see :func:`~.native.convert_native`.

The run is all or nothing: every file is written into a staging folder in
``OUT`` and moved into place only when every dataset and split converted.
"""
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence

from mmgem.utils import StagingDir

from ..mini_uodb_meta import MINI_UODB_CLASSES, MINI_UODB_SPLITS
from ..uodb_meta import UODB_CLASSES, UODB_IGNORED_NAMES, UODB_NAME_MAPS, UODB_SPLITS
from .coco import convert_coco_json
from .common import ConversionStats
from .voc import convert_voc_split

PRESETS = {
    'uodb': (UODB_CLASSES, UODB_SPLITS, UODB_NAME_MAPS, UODB_IGNORED_NAMES),
    'mini_uodb': (MINI_UODB_CLASSES, MINI_UODB_SPLITS, {}, {}),
}

STAGING_PREFIX = '.uodb2coco-staging-'


def coco_json_source(root: str, split: str) -> str:
    """Where COCO's own JSON for a UODB COCO split is looked for.

    Args:
        root (str): The UODB root.
        split (str): ``'valminusminival'`` or ``'minival'``.

    Returns:
        str: ``ROOT/coco/annotations/instances_<split>2014.json``.
    """
    return osp.join(root, 'coco', 'annotations', f'instances_{split}2014.json')


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
                 check_images: bool = True,
                 drop_unknown: bool = False,
                 skip_bad: bool = False,
                 done: Optional[List[ConversionStats]] = None) -> List[ConversionStats]:
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
        check_images (bool): Require every image and take its file name and
            size from the file (see :func:`~.voc.convert_voc_split`).
        drop_unknown (bool): Drop and count boxes of names outside a
            dataset's class list instead of failing.
        skip_bad (bool): Skip and count bad samples instead of failing.
        done (list, optional): Each split's stats are appended here as soon
            as it converted, so a caller still has them when a later split
            fails (nothing is written then).

    Returns:
        list[ConversionStats]: One entry per converted dataset and split.
    """
    if preset not in PRESETS:
        raise ValueError(f'unknown preset {preset!r}, expected one of {sorted(PRESETS)}')
    preset_classes, preset_splits, name_maps, ignored = PRESETS[preset]
    all_classes: Dict[str, Sequence[str]] = dict(preset_classes)
    all_classes.update(classes or {})
    datasets = list(datasets) if datasets else list(preset_classes)
    for name in datasets:
        if name not in all_classes:
            raise ValueError(f'dataset {name!r} has no class list in preset {preset!r} '
                             f'(known: {sorted(all_classes)}); pass classes for it')
    out = root if out is None else out
    results = [] if done is None else done
    with StagingDir(out, prefix=STAGING_PREFIX) as stage:
        for name in datasets:
            for split in (splits or preset_splits.get(name, ('train', 'test'))):
                rel = osp.relpath(output_file(out, name, split), out)
                staged, final = stage.file(rel), output_file(out, name, split)
                coco_src = coco_json_source(root, split)
                if name == 'coco' and osp.isfile(coco_src):
                    img_dir = osp.join(root, name, 'JPEGImages')
                    stats = convert_coco_json(coco_src, name, split, all_classes[name], staged,
                                              img_dir if check_images else None, skip_bad,
                                              final_out_file=final)
                else:
                    stats = convert_voc_split(
                        osp.join(root, name), name, split, all_classes[name], staged,
                        name_maps.get(name), ignored.get(name, ()), check_images,
                        drop_unknown, skip_bad, final_out_file=final,
                        source='UODB VOC-style folder')
                results.append(stats)
        stage.commit()
    return list(results)
