# Copyright (c) mmgem contributors. All rights reserved.
"""Box AP against the training budget for one method on mini-UODB.

Trains ``--method`` once per budget of ``--budgets`` (each a full run with
its own schedule: warm-up, then the step at 3/4 of that budget, as every
cell of ``mini_uodb_table.py``) and seed, evaluates each, and writes the
curve as a markdown table and a PNG plot beside the saved cells, with the
benchmark table's budget marked. Cells are saved and resumed as in
``mini_uodb_table.py``. Example::

    python tools/benchmark/mini_uodb_curve.py --data-version 2 --method gem \\
        --budgets 100 250 500 1000 --seeds 0
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional, Sequence

import numpy as np

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
from tools.benchmark import mini_uodb_runs as runs  # noqa: E402
from tools.benchmark import mini_uodb_table as table  # noqa: E402
from tools.benchmark.cell_store import CellStore  # noqa: E402
from tools.benchmark.seed_statistics import format_interval, t_interval  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    runs.add_common_args(parser, default_iters=None)
    parser.add_argument('--method', default='gem', choices=list(runs.METHODS))
    parser.add_argument('--budgets', type=int, nargs='+', default=[100, 250, 500, 1000],
                        help='training iterations of each point')
    parser.set_defaults(seeds=[0])
    args = parser.parse_args(argv)
    args.budgets = sorted(set(args.budgets))
    runs.resolve_paths(args, 'mini_uodb_curve', args.method)
    return args


def cell_key(method: str, seed: int, iters: int) -> str:
    """str: The key of one point of the curve."""
    return f'{method}_s{seed}_it{iters}'


def make_jobs(args: argparse.Namespace, data_fp: str) -> List[dict]:
    """One job per (budget, seed)."""
    cells = [dict(key=cell_key(args.method, s, b), config=runs.method_config(
        args.method, args.data_version), iters=b, seed=s, meta=dict(method=args.method))
        for b in args.budgets for s in args.seeds]
    return runs.group_jobs(cells, args.results_dir, args.work_dir, args.data_dir, data_fp)


def render(args: argparse.Namespace) -> str:
    """The markdown of the saved points (and the PNG beside it)."""
    store = CellStore(args.results_dir)
    points = {b: [c for c in (store.load(cell_key(args.method, s, b)) for s in args.seeds) if c]
              for b in args.budgets}
    points = {b: cs for b, cs in points.items() if cs}
    if not points:
        return f'no saved cells in {args.results_dir}'
    first = next(iter(points.values()))[0]
    names = first['names']
    rare = runs.rarest(args.data_version, args.scale)
    budget = table.DEFAULT_ITERS[args.data_version]
    seeds = ' '.join(str(s) for s in args.seeds)
    lines = [f'# mini-UODB v{args.data_version}: box AP against iterations, '
             f'{runs.METHODS[args.method][0]}', '',
             f'`python tools/benchmark/mini_uodb_curve.py --data-version {args.data_version} '
             f'--method {args.method} --budgets {" ".join(map(str, args.budgets))} --seeds '
             f'{seeds}`: one full training run per budget (warm-up, step at 3/4), batch 4, '
             f'{first["machine"]["threads"]} torch thread(s), {first["machine"]["cpus"]} '
             f'cores. The benchmark table uses {budget} iterations per cell.', '',
             '| iterations | seeds | mean box AP | AP50 | rarest two (' + ', '.join(rare)
             + ') | training min | s/iter (median) |', '|---|---|---|---|---|---|---|']
    means = []
    for b, cs in points.items():
        iv = t_interval([table.ap(c, names) for c in cs])
        means.append((b, iv))
        med = [c['iter_median_s'] for c in cs if c.get('iter_median_s')]
        mark = ' (table budget)' if b == budget else ''
        lines.append(
            f'| {b}{mark} | {len(cs)} | {format_interval(iv)} | '
            f'{format_interval(t_interval([table.ap(c, names, "bbox_mAP_50") for c in cs]))} | '
            f'{format_interval(t_interval([table.ap(c, rare) for c in cs]))} | '
            f'{np.mean([c["train_s"] for c in cs]) / 60:.1f} | '
            + (f'{np.median(med):.2f}' if med else '–') + ' |')
    png = osp.splitext(args.out)[0] + '.png'
    _plot(means, budget, png, runs.METHODS[args.method][0])
    lines += ['', f'![AP against iterations]({osp.basename(png)})']
    return '\n'.join(lines) + '\n'


def _plot(means, budget: int, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    xs = [b for b, _ in means]
    ys = [100 * iv.mean for _, iv in means]
    err = [100 * iv.half_width if iv.n > 1 else 0 for _, iv in means]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.errorbar(xs, ys, yerr=err, marker='o', capsize=3)
    ax.axvline(budget, color='grey', linestyle='--', label=f'table budget ({budget})')
    ax.set_xlabel('training iterations (batch 4)')
    ax.set_ylabel('mean box AP@[.5:.95]')
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp)
    plt.close(fig)
    import os
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return runs.run_benchmark(parse_args(argv), lambda a, fp: [make_jobs(a, fp)], render)


if __name__ == '__main__':
    sys.exit(main())
