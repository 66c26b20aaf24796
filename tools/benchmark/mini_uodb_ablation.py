# Copyright (c) mmgem contributors. All rights reserved.
"""Ablations of GEM's planner inputs on mini-UODB.

GEM (dataset known) trained with one planner input changed at a time from
the tiny config's (beta 0, capacity factor 1.25, similarity = labels and
features at 0.5 each):

- ``beta``: 0 (every dataset weighs the same) vs 1 (datasets weigh by
  volume);
- ``capacity``: factor 1.0, 1.25, none;
- ``similarity``: labels, features, both, a hand-made prior of groups
  (v2: ``MINI_UODB_V2_PRIOR``, by look and label set).

Each (variant, seed) is a saved, resumable cell as in
``mini_uodb_table.py``; the report gives each variant's mean AP, the two
rarest domains, the label-conflict pair, the difference to the base
variant (paired by seed) and the plan it made. Example::

    python tools/benchmark/mini_uodb_ablation.py --data-version 2 --seeds 0
"""
import argparse
import sys
from typing import Dict, List, Optional, Sequence

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
from mmgem.datasets.mini_uodb_v2_meta import MINI_UODB_V2_PRIOR  # noqa: E402
from tools.benchmark import mini_uodb_runs as runs  # noqa: E402
from tools.benchmark import mini_uodb_table as table  # noqa: E402
from tools.benchmark.cell_store import CellStore  # noqa: E402
from tools.benchmark.seed_statistics import (  # noqa: E402
    format_interval,
    paired_difference,
    t_interval,
)

#: a hand-made prior for v1: the photo labels (natural, clipart), the rest alone
V1_PRIOR = (('natural', 'clipart'), ('icons', ), ('aerial', ), ('signs', ), ('medical', ))
PRIORS = {1: V1_PRIOR, 2: MINI_UODB_V2_PRIOR}
BOTH = dict(sources=dict(labels=0.5, features=0.5), prior=None)


def variants(version: int) -> Dict[str, tuple]:
    """dict: variant -> (title, GEMPlannerHook arguments); ``base`` first."""
    prior = [list(g) for g in PRIORS[version]]
    return {
        'base': ('base: beta 0, capacity 1.25, labels + features', {}),
        'beta1': ('beta 1', dict(beta=1.0)),
        'cap1.0': ('capacity factor 1.0', dict(capacity_factor=1.0)),
        'capnone': ('no capacity limit', dict(capacity_factor=None)),
        'simlabels': ('similarity: labels', dict(similarity=dict(sources=dict(labels=1.0),
                                                                 prior=None))),
        'simfeatures': ('similarity: features',
                        dict(similarity=dict(sources=dict(features=1.0), prior=None))),
        'simprior': ('similarity: hand-made prior',
                     dict(similarity=dict(sources=dict(prior=1.0), prior=prior))),
    }


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    runs.add_common_args(parser, default_iters=None)
    parser.add_argument('--variants', nargs='+', default=None,
                        help=f'default: all of {list(variants(2))}')
    parser.set_defaults(seeds=[0])
    args = parser.parse_args(argv)
    args.iters = args.iters or table.DEFAULT_ITERS[args.data_version]
    known = variants(args.data_version)
    args.variants = args.variants or list(known)
    bad = [v for v in args.variants if v not in known]
    if bad:
        parser.error(f'unknown variants {bad}; expected some of {list(known)}')
    runs.resolve_paths(args, 'mini_uodb_ablation', f'{args.iters}it')
    return args


cell_key = runs.cell_key


def make_jobs(args: argparse.Namespace, data_fp: str) -> List[dict]:
    """One GEM training per (variant, seed)."""
    known = variants(args.data_version)
    config = runs.method_config('gem', args.data_version)
    cells = [dict(key=cell_key(v, s), config=config, iters=args.iters, seed=s,
                  planner=known[v][1] or None, meta=dict(variant=v))
             for v in args.variants for s in args.seeds]
    return runs.group_jobs(cells, args.results_dir, args.work_dir, args.data_dir, data_fp)


def render(args: argparse.Namespace) -> str:
    """The markdown report of the saved ablation cells."""
    store = CellStore(args.results_dir)
    known = variants(args.data_version)
    cells = {v: {s: c for s in args.seeds if (c := store.load(cell_key(v, s)))}
             for v in args.variants}
    cells = {v: c for v, c in cells.items() if c}
    if not cells:
        return f'no saved cells in {args.results_dir}'
    names = next(iter(next(iter(cells.values())).values()))['names']
    groups = runs.comparison_groups(args.data_version, args.scale, names)
    seeds = ' '.join(str(s) for s in args.seeds)
    lines = [f'# mini-UODB v{args.data_version}: ablations of GEM\'s planner inputs', '',
             f'`python tools/benchmark/mini_uodb_ablation.py --data-version {args.data_version} '
             f'--iters {args.iters} --seeds {seeds} --variants {" ".join(args.variants)}`: GEM '
             'dataset-known, one planner input changed at a time; box AP, mean over seeds ± '
             '95 % t-interval; Δ: paired difference to the base variant. '
             + runs.cost_line([c for by in cells.values() for c in by.values()]), '',
             '| Variant | seeds | ' + ' | '.join(groups) + ' | Δ mean AP vs base |',
             '|---' * (len(groups) + 3) + '|']
    for v, by_seed in cells.items():
        row = [format_interval(t_interval([table.ap(c, n) for c in by_seed.values()]))
               for n in groups.values()]
        if v != 'base' and 'base' in cells:
            row.append(format_interval(paired_difference(
                {s: table.ap(c, names) for s, c in by_seed.items()},
                {s: table.ap(c, names) for s, c in cells['base'].items()}), signed=True))
        else:
            row.append('–')
        lines.append(f'| {known[v][0]} | {len(by_seed)} | ' + ' | '.join(row) + ' |')
    lines += ['', '**Plans** (first seed of each variant)', '']
    for v, by_seed in cells.items():
        lines.append(f'- {known[v][0]}: ' + ' '.join(
            table.plan_lines(by_seed[min(by_seed)].get('plan'))))
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    return runs.run_benchmark(parse_args(argv), lambda a, fp: [make_jobs(a, fp)], render)


if __name__ == '__main__':
    sys.exit(main())
