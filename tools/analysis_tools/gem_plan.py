# Copyright (c) mmgem contributors. All rights reserved.
"""Make a GEM plan offline: print it, write its JSON and its heat map.

From a statistics file (JSON/YAML: image counts, class lists, prior groups)::

    python tools/analysis_tools/gem_plan.py \\
        --stats configs/_base_/datasets/uodb_stats.json --experts 8 \\
        [--capacity-factor 1.25] [--beta 0] [--similarity prior,labels] \\
        [--solver ECOS] [--out-dir work_dirs/gem_plan]

or from a training config whose ``train_dataloader.dataset`` lists COCO-style
datasets (``ann_file``, ``metainfo.classes``, optional ``dataset_names``);
the image counts are read from the annotation files (``--data-root``
overrides the config's)::

    python tools/analysis_tools/gem_plan.py \\
        --config configs/gem/gem-dino-4scale_r50_8xb2-36e_uodb.py --experts 8

``--capacity-factor none`` disables the capacity limit; ``--prior`` adds or
replaces prior groups (``"coco,voc,comic;kitti,lisa"``). The plan is written
to ``<out-dir>/gem_plan.json`` and ``<out-dir>/gem_plan.png``.
"""
import argparse
import json
import os.path as osp
import sys
import types
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _import_planner():
    """Import mmgem.planner; without mmdet installed, bypass mmgem/__init__."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    try:
        import mmgem.planner as planner
    except ImportError:
        pkg = types.ModuleType('mmgem')
        pkg.__path__ = [osp.join(ROOT, 'mmgem')]
        sys.modules['mmgem'] = pkg
        import mmgem.planner as planner
    return planner


def _walk_datasets(cfg: Dict, data_root: Optional[str]) -> List[Dict]:
    """Leaf dataset configs (with an ``ann_file``) of a dataset config."""
    root = cfg.get('data_root', data_root)
    if 'datasets' in cfg:
        names = cfg.get('dataset_names')
        out = []
        for i, sub in enumerate(cfg['datasets']):
            leaves = _walk_datasets(dict(sub), root)
            if names is not None and len(leaves) == 1:
                leaves[0]['name'] = names[i]
            out += leaves
        return out
    if 'dataset' in cfg:  # wrappers such as RepeatDataset
        return _walk_datasets(dict(cfg['dataset']), root)
    if 'ann_file' not in cfg:
        raise SystemExit(f'dataset config {cfg.get("type")} has no ann_file')
    ann = cfg['ann_file']
    if root and not osp.isabs(ann):
        ann = osp.join(root, ann)
    meta = cfg.get('metainfo') or {}
    return [dict(name=cfg.get('dataset_name'), ann_file=ann,
                 classes=list(meta.get('classes', [])) or None)]


def stats_from_config(config: str, data_root: Optional[str] = None):
    """Dataset statistics from a training config's annotation files.

    Args:
        config (str): An mmdet/mmgem training config.
        data_root (str, optional): Overrides the config's ``data_root``.

    Returns:
        DatasetStats: Names, image counts (``len(images)`` of each COCO
        JSON) and class lists.
    """
    planner = _import_planner()
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    ds_cfg = cfg.train_dataloader.dataset.to_dict()
    if data_root is not None:
        ds_cfg['data_root'] = data_root
    leaves = _walk_datasets(ds_cfg, None)
    entries = []
    for i, leaf in enumerate(leaves):
        ann = leaf['ann_file']
        if not osp.isfile(ann):
            raise SystemExit(f'annotation file {ann!r} of dataset {leaf["name"] or i} does not '
                             'exist; convert the data first or pass --data-root')
        with open(ann, encoding='utf-8') as f:
            coco = json.load(f)
        name = leaf['name'] or osp.splitext(osp.basename(ann))[0]
        classes = leaf['classes'] or [c['name'] for c in coco.get('categories', [])]
        entries.append(dict(name=name, num_images=len(coco.get('images', [])),
                            classes=classes, ann_file=ann))
    return planner.stats.parse_dataset_stats(dict(datasets=entries, source=config),
                                             source=f'config {config!r}')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Make a GEM plan (LP + capacity-aware rounding), print it, write JSON '
        'and a heat map.')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--stats', help='dataset statistics file (.json/.yaml)')
    src.add_argument('--config', help='training config; counts read from its ann files')
    parser.add_argument('--data-root', help='with --config: override data_root')
    parser.add_argument('--experts', type=int, required=True, help='number of experts M')
    parser.add_argument('--capacity-factor', default='1.25',
                        help='capacity factor >= 1, or "none" for no limit (default 1.25)')
    parser.add_argument('--beta', type=float, default=0.0, help='fairness exponent in [0, 1]')
    parser.add_argument('--similarity', default=None,
                        help='comma-separated sources among prior, labels, features '
                        '(default: every source the statistics provide)')
    parser.add_argument('--weights', default=None,
                        help='source weights, e.g. "prior=1,labels=0.5" (default equal)')
    parser.add_argument('--prior', default=None,
                        help='prior groups "a,b;c,d" (replaces the file\'s prior)')
    parser.add_argument('--solver', default='ECOS', help='CVXPY LP solver (default ECOS)')
    parser.add_argument('--fallback-solvers', default=None,
                        help='comma-separated solvers tried if --solver is missing or fails')
    parser.add_argument('--out-dir', default='work_dirs/gem_plan',
                        help='where gem_plan.json and gem_plan.png go')
    parser.add_argument('--no-plot', action='store_true', help='skip the PNG')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    planner = _import_planner()
    if args.stats:
        stats = planner.load_dataset_stats(args.stats)
    else:
        stats = stats_from_config(args.config, args.data_root)
    prior = stats.prior
    if args.prior:
        prior = [[n.strip() for n in g.split(',') if n.strip()] for g in args.prior.split(';')]
    available = dict(prior=prior, labels=stats.labels if len(stats.labels) == len(
        stats.names) else None, features=stats.features)
    if args.similarity:
        sources = [s.strip() for s in args.similarity.split(',') if s.strip()]
    else:
        sources = [k for k, v in available.items() if v is not None]
    for s in sources:
        if s not in available:
            raise SystemExit(f'--similarity: unknown source {s!r} (prior, labels, features)')
        if available[s] is None:
            raise SystemExit(f'--similarity {s}: the statistics give no {s}')
    weights = None
    if args.weights:
        weights = {}
        for item in args.weights.split(','):
            key, _, val = item.partition('=')
            weights[key.strip()] = float(val)
    sim = planner.build_similarity(stats.names, weights=weights,
                                   **{s: available[s] for s in sources})
    cf = args.capacity_factor
    capacity_factor = None if str(cf).lower() in ('none', 'off', '') else float(cf)
    fallback = ([s.strip() for s in args.fallback_solvers.split(',') if s.strip()]
                if args.fallback_solvers else None)
    try:
        plan = planner.make_plan(stats.names, stats.loads, sim, args.experts,
                                 capacity_factor=capacity_factor, beta=args.beta,
                                 solver=args.solver, fallback_solvers=fallback)
    except planner.PlanError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'similarity: {", ".join(sources)}')
    print(plan)
    print('groups:')
    for g in plan.groups:
        print(f'  experts {g["experts"]}: {", ".join(g["datasets"])} (anchor {g["anchor"]})')
    json_path = plan.save(osp.join(args.out_dir, 'gem_plan.json'))
    print(f'plan written to {json_path}')
    if not args.no_plot:
        png = plan.plot(osp.join(args.out_dir, 'gem_plan.png'))
        print(f'heat map written to {png}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
