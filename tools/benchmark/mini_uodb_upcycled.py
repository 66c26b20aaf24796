# Copyright (c) mmgem contributors. All rights reserved.
"""The upcycled protocol on mini-UODB: every row starts from one dense DINO.

Per seed, in two stages (``mini_uodb_runs``' jobs, cells and cell store):

1. dense DINO (the ``dino`` method config) trains for ``--stage1-iters``
   (default half of ``--iters``, the total budget) and keeps its
   checkpoint; its test cell is the table's first row;
2. every row of ``--methods`` trains the remaining ``--iters -
   --stage1-iters`` iterations from that checkpoint: the MoE rows upcycled
   (``model.upcycle_from``: every expert starts as the dense FFN, every
   other weight as the dense model's), the dense row (the control) loading
   it and training on. Upcycling happens in ``init_weights``, before
   ``GEMPlannerHook`` plans in ``before_train``, so GEM's ``features``
   similarity probes the trained dense backbone. Each stage has
   ``build_cfg``'s schedule over its own iterations (stage 2 warms up again);
   no optimizer state is carried over, for any row.

A stage-2 cell's fingerprint includes the stage-1 training's, so a
changed stage 1 invalidates its stage-2 cells; a stage 1 whose checkpoint
is gone trains again while a stage-2 cell of its seed is unsaved. The
rows' dataset-unknown protocols (``*_unknown``) are test-only and share
their method's training.

The report holds the table's columns: per-domain box AP and AP50 with
their means (mean over seeds ± 95 % t half-width), the rarest two domains
and the label-conflict pair, the specialisation (NMI per MoE layer), the
domain classifier's (balanced) accuracy, and the paired differences GEM minus each
row on the same seed (dataset-known GEM against the dataset-known rows,
dataset-unknown GEM against the dataset-unknown ones) with paired
t-intervals, * where the interval excludes 0 and † where the comparison
survives Holm's correction at 0.05 over its column. Examples::

    # the v2 protocol: 500 dense + 500 upcycled iterations, 3 seeds
    python tools/benchmark/mini_uodb_upcycled.py --data-version 2 --seeds 0 1 2
    # with the router rows
    python tools/benchmark/mini_uodb_upcycled.py --methods dino damex gem soft_moe remoe
    # re-render the markdown from the saved cells, no training
    python tools/benchmark/mini_uodb_upcycled.py --render
"""
import argparse
import sys
from typing import Dict, Iterator, List, Optional, Sequence

from mmengine.config import Config

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
from tools.benchmark import mini_uodb_runs as runs  # noqa: E402
from tools.benchmark import mini_uodb_table as table  # noqa: E402
from tools.benchmark.cell_store import CellStore  # noqa: E402
from tools.benchmark.seed_statistics import format_interval, t_interval  # noqa: E402

#: the rows by default: the dense control, DAMEX and GEM, each in both protocols
DEFAULT_METHODS = ('dino', 'damex', 'gem', 'dino_unknown', 'damex_unknown', 'gem_unknown')
#: the stage-1 row's method key (its config: ``dino``'s)
STAGE1 = 'stage1'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    runs.add_common_args(parser, default_iters=None)
    parser.add_argument('--methods', nargs='+', default=list(DEFAULT_METHODS),
                        choices=list(runs.METHODS))
    parser.add_argument('--stage1-iters', type=int, default=None,
                        help='dense iterations before upcycling (default: half of --iters)')
    args = parser.parse_args(argv)
    args.iters = args.iters or table.DEFAULT_ITERS[args.data_version]
    args.stage1_iters = args.stage1_iters or args.iters // 2
    if not 0 < args.stage1_iters < args.iters:
        parser.error(f'--stage1-iters must lie in (0, --iters = {args.iters}), got '
                     f'{args.stage1_iters}')
    runs.resolve_paths(args, 'mini_uodb_upcycled', f'{args.iters}it')
    return args


def is_dense(method: str, version: int) -> bool:
    """bool: Whether ``method``'s config is dense (no MoE layer)."""
    cfg = Config.fromfile(runs.method_config(method, version))
    return not tuple(cfg.model.get('moe_layers', ()))


def stage1_job(args: argparse.Namespace, data_fp: str, seed: int) -> dict:
    """The dense stage-1 job of ``seed`` (checkpoint kept, one test cell)."""
    config = runs.method_config('dino', args.data_version)
    return runs.make_job(
        table.cell_key(STAGE1, seed), args.results_dir, args.work_dir, args.data_dir, data_fp,
        dict(config=config, iters=args.stage1_iters, seed=seed),
        [dict(key=table.cell_key(STAGE1, seed), config=config, meta=dict(method=STAGE1))],
        keep_checkpoint=True)


def stage2_jobs(args: argparse.Namespace, data_fp: str, first: dict) -> List[dict]:
    """The rows' jobs of one seed, each starting from ``first``'s checkpoint."""
    seed = first['train']['seed']
    jobs = []
    for mode in ('load', 'upcycle'):
        cells = [dict(key=table.cell_key(m, seed), config=runs.method_config(m, args.data_version),
                      iters=args.iters - args.stage1_iters, seed=seed,
                      meta=dict(method=m, start=mode), overrides=runs.method_overrides(m))
                 for m in args.methods if is_dense(m, args.data_version) == (mode == 'load')]
        jobs += runs.group_jobs(cells, args.results_dir, args.work_dir, args.data_dir, data_fp,
                                args.keep_checkpoints, runs.start_from_job(first, mode))
    return jobs


def make_stages(args: argparse.Namespace, data_fp: str) -> Iterator[List[dict]]:
    """Stage 1 (every seed's dense job), then stage 2 (every row's job)."""
    firsts = [stage1_job(args, data_fp, seed) for seed in args.seeds]
    seconds = [stage2_jobs(args, data_fp, first) for first in firsts]
    for first, jobs in zip(firsts, seconds):
        first['checkpoint_needed'] = any(runs.pending(j) for j in jobs)
    yield firsts
    yield [j for jobs in seconds for j in jobs]


def row_titles(args: argparse.Namespace, methods: Sequence[str]) -> Dict[str, str]:
    """dict: method -> its row title (how it started in stage 2)."""
    titles = {STAGE1: f'DINO (dense, stage 1: {args.stage1_iters} it)'}
    for m in methods:
        if m != STAGE1:
            how = 'dense, continued' if is_dense(m, args.data_version) else 'upcycled'
            titles[m] = f'{runs.METHODS[m][0]} [{how}]'
    return titles


def comparison_pairs(methods: Sequence[str]) -> List[tuple]:
    """GEM minus each other row of the same protocol (dataset known / unknown)."""
    pairs = []
    for gem in ('gem', 'gem_unknown'):
        unknown = gem.endswith('_unknown')
        pairs += [(gem, m) for m in methods
                  if not m.startswith('gem') and m.endswith('_unknown') == unknown]
    return pairs


def group_table(cells: Dict[str, Dict[int, dict]], groups: Dict[str, List[str]],
                titles: Dict[str, str]) -> List[str]:
    """Each row's box AP over each group of domains (mean over seeds ± t)."""
    lines = ['| Method | seeds | ' + ' | '.join(groups) + ' | Mean AP50 |',
             '|---' * (len(groups) + 3) + '|']
    for m, by_seed in cells.items():
        row = [format_interval(t_interval([table.ap(c, names) for c in by_seed.values()]))
               for names in groups.values()]
        names = next(iter(groups.values()))
        row.append(format_interval(t_interval([table.ap(c, names, 'bbox_mAP_50')
                                               for c in by_seed.values()])))
        lines.append(f'| {titles[m]} | {len(by_seed)} | ' + ' | '.join(row) + ' |')
    return lines


def render(args: argparse.Namespace) -> str:
    """The markdown report of the saved cells."""
    methods = [STAGE1] + list(args.methods)
    cells = table.load_cells(CellStore(args.results_dir), methods, args.seeds)
    if not cells:
        return f'no saved cells in {args.results_dir}'
    first = next(iter(next(iter(cells.values())).values()))
    names, domain_titles = first['names'], first['display']
    groups = runs.comparison_groups(args.data_version, args.scale, names)
    titles = row_titles(args, cells)
    seeds = ' '.join(str(s) for s in args.seeds)
    command = (f'python tools/benchmark/mini_uodb_upcycled.py --data-version '
               f'{args.data_version} --iters {args.iters} --stage1-iters {args.stage1_iters} '
               f'--seeds {seeds} --methods {" ".join(args.methods)}')
    lines = [f'# mini-UODB v{args.data_version}: the upcycled protocol', '',
             table.caption(cells, args, command), '',
             f'Stage 1: dense DINO, {args.stage1_iters} iterations per seed. Stage 2: every '
             f'row {args.iters - args.stage1_iters} more iterations from that checkpoint '
             '(MoE rows upcycled, every expert starting as the dense FFN and GEM planning on '
             'the trained dense backbone; the dense control continuing). Every number is the '
             'mean over seeds ± the half-width of its 95 % Student-t interval.', '',
             '**Box AP by domain group**', ''] + group_table(cells, groups, titles) + ['']
    for metric, title in (('bbox_mAP', 'box AP@[.5:.95]'), ('bbox_mAP_50', 'box AP50')):
        lines += [f'**{title}**', '']
        lines += table.ap_table(cells, names, domain_titles, metric, titles) + ['']
    rows = [m for m in cells if m != STAGE1]  # the stage-1 row had half the budget
    paired = table.paired_lines(cells, groups, comparison_pairs(rows), titles)
    if len(paired) > 2:
        lines += ['**Paired differences of box AP** (GEM minus each row of the same protocol '
                  'on the same seed, mean over seeds ± 95 % paired t-interval, n seeds; '
                  f'{table.PAIRED_MARKS})', ''] + paired + ['']
    lines += table.specialisation_lines(cells, titles) + table.domain_accuracy_lines(cells, titles)
    for m in ('gem', 'gem_unknown'):
        if m in cells:
            seed, cell = min(cells[m].items())
            lines += [f'**GEM plan** (seed {seed}, made on the upcycled model): ']
            lines += table.plan_lines(cell.get('plan')) + ['']
            break
    return '\n'.join(lines).rstrip() + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    return runs.run_benchmark(parse_args(argv), make_stages, render)


if __name__ == '__main__':
    sys.exit(main())
