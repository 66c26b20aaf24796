# Copyright (c) mmgem contributors. All rights reserved.
"""Generate mini-UODB: small synthetic detection domains in UODB's layout.

mini-UODB stands in for UODB in tests, the demo and the benchmarks. It is
written in the same VOC-style layout as real UODB, so the converter
(``tools/dataset_converters/uodb2coco.py``) runs on it end to end::

    OUT/<domain>/Annotations/<stem>.xml
    OUT/<domain>/JPEGImages/<stem>.jpg
    OUT/<domain>/ImageSets/Main/{train,test}.txt
    OUT/<domain>/annotations/{train,test}.json     (after conversion)
    OUT/mini_uodb.json                             (what was generated)

The domains (names, classes, splits and sizes per scale) are defined in
``mmgem/datasets/mini_uodb_meta.py`` and mirror UODB's difficulties:
imbalanced sizes (50 : 1 between ``natural`` and ``medical`` at ``small``
scale), distinct looks (textured natural scenes, flat clip-art, grey-scale
medical slices, aerial views with many small objects, street scenes with
small signs), label sets that overlap across looks (``natural`` and
``clipart``; ``car`` in ``aerial``) and diverge within a look (``clipart``
and ``icons`` share the clip-art look but no label). Every class has its own
shape and colour scheme, so it can be learnt from pixels.

Usage::

    python tools/misc/make_mini_uodb.py --out data/mini_uodb --seed 0 \\
        --scale tiny

or in Python (tests, the demo)::

    from tools.misc import make_mini_uodb
    manifest = make_mini_uodb.make_mini_uodb(out, seed=0, scale='tiny')

Generation is deterministic: every image is drawn from its own random
generator seeded by ``(seed, domain, split, index)``, so the same seed gives
byte-identical files. Box convention: the XML holds ``xmin = x0 + 1``,
``xmax = x1 + 1`` for a drawn object covering ``[x0, x1)``, so mmdet's VOC
convention (subtract 1) gives back exactly the drawn box.
"""
import argparse
import io
import json
import os
import os.path as osp
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from typing import Dict, Optional, Sequence

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
from mmgem.datasets.mini_uodb_meta import (  # noqa: E402
    MINI_UODB_CLASSES,
    MINI_UODB_DATASETS,
    MINI_UODB_SIZES,
    MINI_UODB_SPLITS,
)
from mmgem.datasets.mini_uodb_v2_meta import (  # noqa: E402
    MINI_UODB_V2_CLASSES,
    MINI_UODB_V2_DATASETS,
    MINI_UODB_V2_LOOKS,
    MINI_UODB_V2_SIZES,
    MINI_UODB_V2_SPLITS,
    MINI_UODB_V2_STANDS_FOR,
)
from mmgem.utils import atomic_write  # noqa: E402
from tools.misc.mini_uodb.identifiability import (  # noqa: E402
    domain_identifiability,
    format_identifiability,
    read_statistics,
)
from tools.misc.mini_uodb.v1_scenes import draw_image  # noqa: E402
from tools.misc.mini_uodb.v2_scenes import draw_image as draw_image_v2  # noqa: E402

MANIFEST = 'mini_uodb.json'


def _voc_xml(domain: str, stem: str, w: int, h: int, depth: int,
             objects: Sequence[tuple]) -> bytes:
    """VOC XML of one image; an object is ``(class, box[, difficult])``."""
    root = ET.Element('annotation')
    ET.SubElement(root, 'folder').text = domain
    ET.SubElement(root, 'filename').text = f'{stem}.jpg'
    source = ET.SubElement(root, 'source')
    ET.SubElement(source, 'database').text = 'mini-UODB (mmgem, synthetic)'
    size = ET.SubElement(root, 'size')
    ET.SubElement(size, 'width').text = str(w)
    ET.SubElement(size, 'height').text = str(h)
    ET.SubElement(size, 'depth').text = str(depth)
    ET.SubElement(root, 'segmented').text = '0'
    for name, (x0, y0, x1, y1), *difficult in objects:
        obj = ET.SubElement(root, 'object')
        ET.SubElement(obj, 'name').text = name
        ET.SubElement(obj, 'pose').text = 'Unspecified'
        ET.SubElement(obj, 'truncated').text = '0'
        ET.SubElement(obj, 'difficult').text = str(int(bool(difficult and difficult[0])))
        bnd = ET.SubElement(obj, 'bndbox')
        for tag, v in zip(('xmin', 'ymin', 'xmax', 'ymax'),
                          (x0 + 1, y0 + 1, x1 + 1, y1 + 1)):
            ET.SubElement(bnd, tag).text = str(v)
    ET.indent(root, space='\t')
    return ET.tostring(root, encoding='utf-8') + b'\n'


def _load_converter():
    from mmgem.datasets import converters
    return converters


#: What each version draws: domains, classes, splits, sizes, the drawing
#: function, the domains that share a look (reported apart by the
#: identifiability check), the bound their 1-NN accuracy must stay below,
#: and the default output root.
VERSIONS: Dict[int, dict] = {
    1: dict(datasets=MINI_UODB_DATASETS, classes=MINI_UODB_CLASSES,
            splits=MINI_UODB_SPLITS, sizes=MINI_UODB_SIZES, draw=draw_image,
            shared_look=('icons', 'clipart'), bound=None,
            out='data/mini_uodb'),
    2: dict(datasets=MINI_UODB_V2_DATASETS, classes=MINI_UODB_V2_CLASSES,
            splits=MINI_UODB_V2_SPLITS, sizes=MINI_UODB_V2_SIZES,
            draw=draw_image_v2,
            shared_look=tuple(
                d for d in MINI_UODB_V2_DATASETS
                if list(MINI_UODB_V2_LOOKS.values()).count(
                    MINI_UODB_V2_LOOKS[d]) > 1),
            bound=0.6, out='data/mini_uodb_v2'),
}


def _version(version: int) -> dict:
    if version not in VERSIONS:
        raise ValueError(f'unknown mini-UODB version {version!r}, expected '
                         f'one of {sorted(VERSIONS)}')
    return VERSIONS[version]


def make_mini_uodb(out: str,
                   seed: int = 0,
                   scale: str = 'tiny',
                   convert: bool = True,
                   domains: Optional[Sequence[str]] = None,
                   version: int = 1) -> dict:
    """Write mini-UODB in UODB's VOC-style layout (and convert it).

    Args:
        out (str): Output root; one folder per domain is (re)created in it.
        seed (int): Random seed; the same seed gives identical files.
        scale (str): ``'tiny'`` (a few dozen images per domain, for tests)
            or ``'small'`` (a few thousand in all, for the demo and the
            benchmarks).
        convert (bool): Also run ``uodb2coco`` to write
            ``<domain>/annotations/<split>.json``. Defaults to True.
        domains (Sequence[str], optional): A subset of the domains.
        version (int): 1 (the six domains of ``mini_uodb_meta``, kept
            byte-identical) or 2 (the eleven of ``mini_uodb_v2_meta``).
            Defaults to 1.

    Returns:
        dict: The manifest also written to ``OUT/mini_uodb.json``: seed,
        scale, and per domain its classes and, per split, the image stems
        with their objects (``[class, [x0, y0, x1, y1]]``, exclusive
        ``x1``/``y1``). Version 2 adds ``version``, each domain's ``look``
        and ``stands_for``, and a third entry per object, 1 for
        ``difficult`` (mostly occluded) objects, else 0.
    """
    spec = _version(version)
    if scale not in spec['sizes']:
        raise ValueError(f'unknown scale {scale!r}, expected one of '
                         f'{sorted(spec["sizes"])}')
    domains = tuple(domains) if domains else spec['datasets']
    for domain in domains:
        if domain not in spec['datasets']:
            raise ValueError(f'unknown mini-UODB domain {domain!r}, expected '
                             f'one of {spec["datasets"]} (version {version})')
    os.makedirs(out, exist_ok=True)
    manifest = dict(seed=seed, scale=scale, domains={})
    if version != 1:  # version 1's manifest stays byte-identical
        manifest['version'] = version
    for domain in domains:
        ddir = osp.join(out, domain)
        if osp.isdir(ddir):  # remove stale images of an earlier run
            shutil.rmtree(ddir)
        for sub in ('Annotations', 'JPEGImages',
                    osp.join('ImageSets', 'Main')):
            os.makedirs(osp.join(ddir, sub))
        entry = dict(classes=list(spec['classes'][domain]), splits={})
        if version == 2:
            entry.update(look=MINI_UODB_V2_LOOKS[domain],
                         stands_for=MINI_UODB_V2_STANDS_FOR[domain])
        offset = 0
        for split_index, (split, count) in enumerate(
                zip(spec['splits'][domain], spec['sizes'][scale][domain])):
            stems, objects_of = [], {}
            for i in range(count):
                stem = f'{offset + i:06d}'
                img, objects = spec['draw'](domain, seed, split_index, i)
                buf = io.BytesIO()
                img.save(buf, format='JPEG', quality=92)
                atomic_write(
                    osp.join(ddir, 'JPEGImages', f'{stem}.jpg'),
                    buf.getvalue())
                depth = 1 if img.mode == 'L' else 3
                atomic_write(
                    osp.join(ddir, 'Annotations', f'{stem}.xml'),
                    _voc_xml(domain, stem, img.width, img.height, depth,
                             objects))
                stems.append(stem)
                objects_of[stem] = [[n, list(b), *[int(x) for x in rest]]
                                    for n, b, *rest in objects]
            offset += count
            atomic_write(
                osp.join(ddir, 'ImageSets', 'Main', f'{split}.txt'),
                ''.join(s + '\n' for s in stems).encode())
            entry['splits'][split] = dict(stems=stems, objects=objects_of)
        manifest['domains'][domain] = entry
    atomic_write(
        osp.join(out, MANIFEST),
        json.dumps(manifest, separators=(',', ':')).encode())
    if convert:
        _load_converter().convert_uodb(
            out, datasets=domains, preset='mini_uodb',
            classes={d: spec['classes'][d] for d in domains})
    return manifest


def check_identifiability(out: str, version: int = 1,
                          domains: Optional[Sequence[str]] = None,
                          max_images: Optional[int] = 200) -> dict:
    """How well global statistics name the domain of a generated image.

    Leave-one-out 1-NN on the 14 statistics of
    :mod:`tools.misc.mini_uodb.identifiability` over the first
    ``max_images`` training images of every domain.

    Args:
        out (str): A root written by :func:`make_mini_uodb`.
        version (int): Its version.
        domains (Sequence[str], optional): The domains written (default:
            all of the version).
        max_images (int, optional): Images per domain.

    Returns:
        dict: :func:`domain_identifiability`'s result plus ``bound`` (the
        version's bound on the shared-look accuracy, or None) and ``met``.
    """
    spec = _version(version)
    domains = tuple(domains) if domains else spec['datasets']
    split = {d: spec['splits'][d][0] for d in domains}
    stats = {}
    for d in domains:
        stats.update(read_statistics(out, [d], split[d], max_images))
    shared = [d for d in spec['shared_look'] if d in domains]
    # a look shared by only one of the chosen domains is shared with nobody
    if version == 2:
        shared = [d for d in shared if sum(
            MINI_UODB_V2_LOOKS[o] == MINI_UODB_V2_LOOKS[d] for o in domains) > 1]
    elif len(shared) < 2:
        shared = []
    result = domain_identifiability(stats, shared)
    result['bound'] = spec['bound']
    result['met'] = (None if spec['bound'] is None or result['shared_look'] is None
                     else bool(result['shared_look'] < spec['bound']))
    return result


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate mini-UODB in UODB\'s VOC-style layout')
    parser.add_argument(
        '--version', type=int, default=1, choices=sorted(VERSIONS),
        help='1: six domains (the original, byte-identical); 2: eleven '
        'domains standing for UODB\'s eleven datasets')
    parser.add_argument(
        '--out', default=None,
        help='output root (default: data/mini_uodb, data/mini_uodb_v2)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--scale', default='tiny', choices=sorted(MINI_UODB_SIZES),
        help='tiny: a few dozen images per domain; small: a few thousand')
    parser.add_argument(
        '--domains', nargs='+',
        choices=sorted(set(MINI_UODB_DATASETS) | set(MINI_UODB_V2_DATASETS)),
        help='only these domains of the version (default: all)')
    parser.add_argument(
        '--no-convert', action='store_true',
        help='only write the VOC-style layout, not the COCO JSON')
    parser.add_argument(
        '--check-images', type=int, default=200,
        help='training images per domain of the identifiability check '
        '(0: no check)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = args.out or _version(args.version)['out']
    start = time.perf_counter()
    manifest = make_mini_uodb(out, args.seed, args.scale,
                              convert=not args.no_convert,
                              domains=args.domains, version=args.version)
    print('| domain | classes | ' + ' | '.join(
        f'{s} images' for s in ('train', 'test')) + ' | boxes |')
    print('|---|---|---|---|---|')
    for domain, entry in manifest['domains'].items():
        counts = [len(v['stems']) for v in entry['splits'].values()]
        boxes = sum(
            len(objs) for v in entry['splits'].values()
            for objs in v['objects'].values())
        print(f'| {domain} | {", ".join(entry["classes"])} | '
              f'{counts[0]} | {counts[1]} | {boxes} |')
    print(f'wrote {out} (version {args.version}, seed {args.seed}, scale '
          f'{args.scale}) in {time.perf_counter() - start:.1f} s')
    if args.check_images > 0:
        result = check_identifiability(out, args.version, args.domains,
                                       args.check_images)
        print()
        print(format_identifiability(result, result['bound']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
