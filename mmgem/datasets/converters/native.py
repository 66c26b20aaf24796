# Copyright (c) mmgem contributors. All rights reserved.
"""Rebuild all of UODB from the 11 datasets' own downloads.

:func:`convert_native` reads each dataset in the layout its download
unpacks to, under one root (each path can be moved with ``sources``):

==========  ==================  =============================================
dataset     default source      what it reads (see the importer's docstring)
==========  ==================  =============================================
kitti       ``kitti/``          ``training/{image_2,label_2}``
voc         ``VOCdevkit/``      ``VOC2007``, ``VOC2012``
widerface   ``widerface/``      ``WIDER_{train,val}/images``,
                                ``wider_face_split/*_bbx_gt.txt``
lisa        ``lisa/``           ``allAnnotations.csv`` and its frames
kitchen     ``kitchen/``        ``gmu_scene_00<k>/{Images,Annotations}``
coco        ``coco/``           ``annotations/instances_val{2014,2017}.json``,
                                ``val2014/``
dota        ``dota/``           ``{train,val}/{images,labelTxt}``
deeplesion  ``deeplesion/``     ``DL_info.csv``, ``Images_png/``
comic       ``comic/``          VOC-style (``Annotations``, ``JPEGImages``,
                                ``ImageSets/Main/{train,test}.txt``)
clipart     ``clipart/``        VOC-style
watercolor  ``watercolor/``     VOC-style
==========  ==================  =============================================

and writes UODB's COCO layout, the one ``configs/_base_/datasets/uodb.py``
reads::

    OUT/<name>/annotations/<split>.json
    OUT/<name>/JPEGImages/...        (links to the native images, or the
                                      DOTA patches and 8-bit DeepLesion slices)

A VOC-style source that already is ``OUT/<name>`` keeps its own
``JPEGImages``; only the annotations are added.

The run is all or nothing: everything is written into a staging folder in
``OUT`` and moved into place only when every dataset converted; a failure
leaves ``OUT`` as it was (and the caller's ``done`` list holds what had
converted before it).
"""
import os.path as osp
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from mmgem.utils import StagingDir

from ..uodb_meta import UODB_CLASSES, UODB_DATASETS
from .coco import import_coco
from .common import ConversionStats, ImageLinker
from .deeplesion import import_deeplesion
from .dota import import_dota
from .kitchen import import_kitchen
from .kitti import import_kitti
from .lisa import import_lisa
from .uodb import STAGING_PREFIX
from .voc import convert_voc_split, import_voc_devkit
from .widerface import import_widerface

#: Where each dataset's download is looked for, relative to the root.
NATIVE_SOURCES: Dict[str, str] = {
    'kitti': 'kitti',
    'voc': 'VOCdevkit',
    'widerface': 'widerface',
    'lisa': 'lisa',
    'kitchen': 'kitchen',
    'coco': 'coco',
    'dota': 'dota',
    'deeplesion': 'deeplesion',
    'comic': 'comic',
    'clipart': 'clipart',
    'watercolor': 'watercolor',
}

#: Options of each importer (the keyword arguments ``options[name]`` may
#: set), with their defaults.
NATIVE_OPTIONS: Dict[str, dict] = {
    'kitti': dict(test_fraction=0.5, person_sitting='pedestrian'),
    'voc': dict(),
    'widerface': dict(),
    'lisa': dict(test_fraction=0.2),
    'kitchen': dict(test_scenes=(2, 4, 5)),
    'coco': dict(version='2014'),
    'dota': dict(patch_size=1024, gap=200, thresh=0.7, keep_empty=False),
    'deeplesion': dict(window=(-1024.0, 3071.0)),
    'comic': dict(),
    'clipart': dict(),
    'watercolor': dict(),
}

#: The splits of the VOC-style cross-domain datasets.
CROSS_DOMAIN_SPLITS = ('train', 'test')


def _cross_domain(name: str) -> Callable:

    def run(src, out_dir, final_dir, classes, *, check_images, drop_unknown, skip_bad,
            link_mode, in_place, **_):
        linker = None if in_place else ImageLinker(
            osp.join(out_dir, 'JPEGImages'), osp.join(final_dir, 'JPEGImages'), link_mode)
        return [
            convert_voc_split(src, name, split, classes,
                              osp.join(out_dir, 'annotations', f'{split}.json'),
                              check_images=check_images or linker is not None,
                              drop_unknown=drop_unknown, skip_bad=skip_bad,
                              final_out_file=osp.join(final_dir, 'annotations', f'{split}.json'),
                              linker=linker, source=f'{name} VOC-style download')
            for split in CROSS_DOMAIN_SPLITS
        ]

    return run


def _importers() -> Dict[str, Callable]:
    """Per dataset, ``(src, out_dir, final_dir, classes, **common, **options)
    -> [stats]``."""

    def _kw(*names):
        return lambda kw: {k: kw[k] for k in names}

    common = dict(
        kitti=_kw('skip_bad', 'link_mode'),
        voc=_kw('check_images', 'drop_unknown', 'skip_bad', 'link_mode'),
        widerface=_kw('skip_bad', 'link_mode'),
        lisa=_kw('drop_unknown', 'skip_bad', 'link_mode'),
        kitchen=_kw('check_images', 'drop_unknown', 'skip_bad', 'link_mode'),
        coco=_kw('check_images', 'skip_bad', 'link_mode'),
        dota=_kw('drop_unknown', 'skip_bad'),
        deeplesion=_kw('skip_bad'),
    )
    funcs = dict(kitti=import_kitti, voc=import_voc_devkit, widerface=import_widerface,
                 lisa=import_lisa, kitchen=import_kitchen, coco=import_coco, dota=import_dota,
                 deeplesion=import_deeplesion)

    def wrap(name):
        def run(src, out_dir, final_dir, classes, **kw):
            options = {k: kw[k] for k in NATIVE_OPTIONS[name] if k in kw}
            return funcs[name](src, out_dir, final_dir, classes, dataset=name,
                               **common[name](kw), **options)
        return run

    out = {name: wrap(name) for name in funcs}
    out.update({name: _cross_domain(name) for name in ('comic', 'clipart', 'watercolor')})
    return out


def _same_dir(a: str, b: str) -> bool:
    return osp.isdir(a) and osp.isdir(b) and osp.samefile(a, b)


def convert_native(root: str,
                   out: Optional[str] = None,
                   datasets: Optional[Sequence[str]] = None,
                   sources: Optional[Mapping[str, str]] = None,
                   options: Optional[Mapping[str, dict]] = None,
                   check_images: bool = True,
                   drop_unknown: bool = False,
                   skip_bad: bool = False,
                   link_mode: str = 'symlink',
                   done: Optional[List[ConversionStats]] = None) -> List[ConversionStats]:
    """Convert the native downloads of UODB's datasets to UODB's COCO layout.

    Args:
        root (str): The folder holding the downloads (see the module
            docstring for each dataset's default place).
        out (str, optional): Output root (the configs' ``data_root``);
            defaults to ``root``.
        datasets (Sequence[str], optional): Which datasets; defaults to all
            11, in DAMEX Table 1's order.
        sources (Mapping[str, str], optional): Per dataset, its download's
            folder (absolute, or relative to ``root``), overriding
            :data:`NATIVE_SOURCES`.
        options (Mapping[str, dict], optional): Per dataset, importer
            options overriding :data:`NATIVE_OPTIONS` (e.g.
            ``dict(dota=dict(patch_size=800))``).
        check_images (bool): Check every image against its annotation (real
            file name and size win, counted); the KITTI, LISA, WIDER FACE,
            DOTA and DeepLesion importers always read the image sizes, as
            their annotations hold none.
        drop_unknown (bool): Drop and count boxes of class names a dataset
            does not have instead of failing.
        skip_bad (bool): Skip and count bad samples instead of failing.
        link_mode (str): ``'symlink'``, ``'hardlink'`` or ``'copy'``: how
            native images get into ``OUT/<name>/JPEGImages``.
        done (list, optional): Each split's stats are appended here as soon
            as it converted.

    Returns:
        list[ConversionStats]: One entry per converted dataset and split.
    """
    datasets = list(datasets) if datasets else list(UODB_DATASETS)
    unknown = [d for d in datasets if d not in NATIVE_SOURCES]
    if unknown:
        raise ValueError(f'no native importer for dataset(s) {unknown}; known: '
                         f'{list(NATIVE_SOURCES)}')
    bad = sorted(set(sources or {}) - set(NATIVE_SOURCES)) + \
        sorted(set(options or {}) - set(NATIVE_OPTIONS))
    if bad:
        raise ValueError(f'sources/options name unknown dataset(s) {bad}')
    for name, opts in (options or {}).items():
        extra = sorted(set(opts) - set(NATIVE_OPTIONS[name]))
        if extra:
            raise ValueError(f'{name}: unknown importer option(s) {extra}; it takes '
                             f'{sorted(NATIVE_OPTIONS[name])}')
    out = root if out is None else out
    results = [] if done is None else done
    importers = _importers()
    with StagingDir(out, prefix=STAGING_PREFIX) as stage:
        for name in datasets:
            src = osp.join(root, (sources or {}).get(name, NATIVE_SOURCES[name]))
            if not osp.isdir(src):
                raise FileNotFoundError(f'{name}: download folder not found: {src} (put it '
                                        f'there or pass sources={{{name!r}: <folder>}})')
            final_dir = osp.join(osp.abspath(out), name)
            in_place = name in ('comic', 'clipart', 'watercolor') and \
                _same_dir(osp.join(src, 'JPEGImages'), osp.join(final_dir, 'JPEGImages'))
            out_dir = osp.join(stage.path, name)
            if not in_place:
                stage.tree(f'{name}/JPEGImages')
            kwargs = dict(NATIVE_OPTIONS[name])
            kwargs.update((options or {}).get(name, {}))
            stats_list = importers[name](
                src, out_dir, final_dir, UODB_CLASSES[name], check_images=check_images,
                drop_unknown=drop_unknown, skip_bad=skip_bad, link_mode=link_mode,
                in_place=in_place, **kwargs)
            for stats in stats_list:
                stage.file(f'{name}/annotations/{stats.split}.json')
                results.append(stats)
        stage.commit()
    return list(results)
