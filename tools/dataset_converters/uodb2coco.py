# Copyright (c) mmgem contributors. All rights reserved.
"""Convert UODB (its own VOC-style layout, or the datasets' own downloads)
to the COCO JSON that ``configs/_base_/datasets/uodb.py`` reads.

A thin command line over :mod:`mmgem.datasets.converters` (see the README's
Data section for what each dataset's download is and how it is split)::

    # the 11 datasets' own downloads under data/uodb_src -> data/uodb
    python tools/dataset_converters/uodb2coco.py data/uodb_src --from native \\
        --out data/uodb --check
    # UODB's VOC-style layout (one folder per dataset), DAMEX's splits
    python tools/dataset_converters/uodb2coco.py data/uodb
    # some datasets, explicit splits, another output root
    python tools/dataset_converters/uodb2coco.py data/uodb \\
        --datasets voc widerface --splits trainval test --out /tmp/uodb_json
    # the generated mini-UODB
    python tools/dataset_converters/uodb2coco.py data/mini_uodb --preset mini_uodb

Writes ``OUT/<name>/annotations/<split>.json`` (and, with ``--from
native``, ``OUT/<name>/JPEGImages/``) into a staging folder and moves it
into place only when every dataset converted; prints what was written,
fixed and skipped, and with ``--check`` the differences from the published
image and box counts. Exit status 1 (and nothing written) on an error, which
names the file at fault.
"""
import argparse
import sys
from typing import List, Optional, Sequence

from mmgem.datasets.converters import (
    NATIVE_SOURCES,
    PRESETS,
    check_counts,
    convert_native,
    convert_uodb,
    format_check,
    format_examples,
    format_stats,
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert UODB to COCO JSON, one file per dataset and split: '
        'OUT/<name>/annotations/<split>.json')
    parser.add_argument('root', help='folder with one folder per dataset (--from uodb) or '
                        "with the datasets' downloads (--from native)")
    parser.add_argument('--from', dest='source', default='uodb', choices=('uodb', 'native'),
                        help="input layout: UODB's VOC-style folders (default) or the "
                        "datasets' own downloads")
    parser.add_argument('--datasets', nargs='+', help='datasets (default: all)')
    parser.add_argument('--splits', nargs='+', help="splits for every dataset (--from uodb; "
                        "default: DAMEX's train/test split of each dataset)")
    parser.add_argument('--out', help='output root (default: ROOT)')
    parser.add_argument('--preset', default='uodb', choices=sorted(PRESETS),
                        help='class lists and splits to use (--from uodb)')
    parser.add_argument('--classes', nargs='+', help='class list for a dataset outside the '
                        'preset (needs exactly one dataset in --datasets; --from uodb)')
    parser.add_argument('--no-check-images', action='store_true',
                        help='do not require the images to exist (sizes come from the '
                        'annotations where they have them)')
    parser.add_argument('--skip-bad', action='store_true',
                        help='skip (and count) bad samples instead of stopping at the first')
    parser.add_argument('--drop-unknown-classes', action='store_true',
                        help="drop (and count) boxes of class names a dataset does not have "
                        'instead of stopping')
    parser.add_argument('--check', action='store_true',
                        help='compare image and box counts with the published figures')
    native = parser.add_argument_group('--from native')
    native.add_argument('--source', dest='sources', action='append', default=[],
                        metavar='NAME=PATH', help="a dataset's download folder (relative to "
                        f'ROOT or absolute); defaults: {NATIVE_SOURCES}')
    native.add_argument('--link', default='symlink', choices=('symlink', 'hardlink', 'copy'),
                        help='how native images get into OUT/<name>/JPEGImages')
    native.add_argument('--coco-version', default='2014', choices=('2014', '2017'),
                        help='2014: valminusminival/minival (UODB); 2017: train2017/val2017')
    native.add_argument('--kitti-test-fraction', type=float, default=0.5)
    native.add_argument('--kitti-person-sitting', default='pedestrian',
                        choices=('pedestrian', 'ignore'))
    native.add_argument('--lisa-test-fraction', type=float, default=0.2)
    native.add_argument('--kitchen-test-scenes', type=int, nargs='+', default=[2, 4, 5])
    native.add_argument('--dota-patch-size', type=int, default=1024)
    native.add_argument('--dota-gap', type=int, default=200)
    native.add_argument('--dota-thresh', type=float, default=0.7)
    native.add_argument('--dota-keep-empty', action='store_true')
    native.add_argument('--deeplesion-window', nargs='+', default=['-1024', '3071'],
                        metavar='HU', help="LOW HIGH in HU, or 'dicom' for each slice's "
                        'DICOM_windows')
    return parser.parse_args(argv)


def _native_options(args: argparse.Namespace) -> dict:
    window = args.deeplesion_window
    if window == ['dicom']:
        window = 'dicom'
    elif len(window) == 2:
        window = tuple(float(v) for v in window)
    else:
        raise SystemExit("--deeplesion-window takes LOW HIGH or 'dicom'")
    return dict(
        coco=dict(version=args.coco_version),
        kitti=dict(test_fraction=args.kitti_test_fraction,
                   person_sitting=args.kitti_person_sitting),
        lisa=dict(test_fraction=args.lisa_test_fraction),
        kitchen=dict(test_scenes=tuple(args.kitchen_test_scenes)),
        dota=dict(patch_size=args.dota_patch_size, gap=args.dota_gap,
                  thresh=args.dota_thresh, keep_empty=args.dota_keep_empty),
        deeplesion=dict(window=window))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    done: List = []
    try:
        if args.source == 'native':
            sources = {}
            for item in args.sources:
                name, sep, path = item.partition('=')
                if not sep:
                    raise SystemExit(f'--source takes NAME=PATH, got {item!r}')
                sources[name] = path
            results = convert_native(
                args.root, out=args.out, datasets=args.datasets, sources=sources,
                options=_native_options(args), check_images=not args.no_check_images,
                drop_unknown=args.drop_unknown_classes, skip_bad=args.skip_bad,
                link_mode=args.link, done=done)
        else:
            classes = None
            if args.classes:
                if not args.datasets or len(args.datasets) != 1:
                    raise SystemExit('--classes needs exactly one dataset in --datasets')
                classes = {args.datasets[0]: args.classes}
            results = convert_uodb(
                args.root, datasets=args.datasets, splits=args.splits, out=args.out,
                preset=args.preset, classes=classes, check_images=not args.no_check_images,
                drop_unknown=args.drop_unknown_classes, skip_bad=args.skip_bad, done=done)
    except (OSError, ValueError) as err:
        print(f'uodb2coco: error: {err}', file=sys.stderr)
        if done:
            print('uodb2coco: these splits had converted before the error; nothing was '
                  f'written:\n{format_stats(done)}', file=sys.stderr)
        else:
            print('uodb2coco: nothing was written', file=sys.stderr)
        return 1
    print(format_stats(results))
    examples = format_examples(results)
    if examples:
        print('\nfixed or skipped (first examples of each kind):\n' + examples)
    if args.check:
        print('\ncounts against published figures (converted minus reference):\n'
              + format_check(check_counts(results)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
