# Copyright (c) mmgem contributors. All rights reserved.
"""How well global image statistics name the domain of an image.

Leave-one-out 1-nearest-neighbour on 14 global statistics of the first
images of every domain of a UODB-style root
(:mod:`tools.misc.mini_uodb.identifiability`). A generated mini-UODB's
manifest says which domains share a look; ``--shared`` names them for any
other root. Example::

    python tools/analysis_tools/domain_identifiability.py data/mini_uodb_v2
    python tools/analysis_tools/domain_identifiability.py data/uodb \\
        --domains kitti lisa voc clipart --split test --shared kitti lisa
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Optional, Sequence

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
from tools.misc.mini_uodb.identifiability import (  # noqa: E402
    domain_identifiability,
    format_identifiability,
    read_statistics,
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='folder with one VOC-style folder per domain')
    parser.add_argument('--domains', nargs='+', help='default: the manifest\'s, or every '
                        'folder with ImageSets/Main/<split>.txt')
    parser.add_argument('--split', default='train')
    parser.add_argument('--max-images', type=int, default=200, help='images per domain')
    parser.add_argument('--shared', nargs='+', default=None,
                        help='domains that share a look (default: from the manifest)')
    parser.add_argument('--bound', type=float, default=None,
                        help='bound for the shared-look accuracy, e.g. 0.6')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    manifest = {}
    path = osp.join(args.root, 'mini_uodb.json')
    if osp.isfile(path):
        with open(path) as f:
            manifest = json.load(f).get('domains', {})
    domains = args.domains or list(manifest) or sorted(
        d for d in os.listdir(args.root)
        if osp.isfile(osp.join(args.root, d, 'ImageSets', 'Main', f'{args.split}.txt')))
    if not domains:
        raise SystemExit(f'{args.root}: no domain with ImageSets/Main/{args.split}.txt')
    shared = args.shared
    if shared is None:
        looks = {d: manifest.get(d, {}).get('look') for d in domains}
        shared = [d for d in domains if looks[d] is not None
                  and sum(looks[o] == looks[d] for o in domains) > 1]
    stats = read_statistics(args.root, domains, args.split, args.max_images)
    print(format_identifiability(domain_identifiability(stats, shared), args.bound))
    return 0


if __name__ == '__main__':
    sys.exit(main())
