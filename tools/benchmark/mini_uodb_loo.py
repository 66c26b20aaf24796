# Copyright (c) mmgem contributors. All rights reserved.
"""Unseen domains on mini-UODB v2: leave one domain out.

The GEM paper's out-of-distribution domains as a leave-one-domain-out
scenario: every method of ``--methods`` (dense DINO, DAMEX, GEM) trains on
the ten v2 domains other than ``--holdout`` (default ``watercolor``, whose
classes are ``comic``'s) and is tested on the held-out domain's test split
with the dataset unknown: the model's dataset count, label space, domain
classifier and GEM plan cover the ten; GEM routes each held-out image
through the plan row of the domain classifier's top prediction among the
ten (its nearest known domain); boxes are labelled in the ten's unified
label space by class name and ``UODBMetric`` maps them to the held-out
domain's classes by name (``model_dataset_names``). The configs are
``configs/gem/{dino,damex-dino,gem-dino}-tiny_r18_mini-uodb-v2_loo-watercolor.py``;
another ``--holdout`` applies :func:`loo_overrides` to them.

Each (method, seed) cell is saved and resumed as in ``mini_uodb_table.py``
(``mini_uodb_runs.py``: jobs, cell store, fingerprints). The report shows
the held-out domain's box AP and AP50 per method (mean over seeds with the
95 % t-interval), where the domain classifier sends its images, GEM minus
each baseline on the same seed, and, for reference, the same methods' AP
on that domain when trained *with* it, read from the saved cells of
``--reference`` (default the current v2 table's,
``results/mini_uodb_table_v2_1000it_r2``) when present. Examples::

    # watercolor held out, 1000 iterations, 3 seeds (resumable)
    python tools/benchmark/mini_uodb_loo.py --holdout watercolor --seeds 0 1 2
    # re-render the report from the saved cells, no training
    python tools/benchmark/mini_uodb_loo.py --holdout watercolor --render
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
from tools.benchmark import mini_uodb_few_shot as few_shot  # noqa: E402
from tools.benchmark import mini_uodb_runs as runs  # noqa: E402
from tools.benchmark import mini_uodb_table as table  # noqa: E402
from tools.benchmark.cell_store import CellStore  # noqa: E402
from tools.benchmark.seed_statistics import (  # noqa: E402
    format_interval,
    paired_difference,
    t_interval,
)

#: method -> (row title, config stem); the config is
#: ``configs/gem/<stem>-tiny_r18_mini-uodb-v2_loo-watercolor.py``
METHODS: Dict[str, tuple] = {
    'dino': ('DINO (mixed)', 'dino'),
    'damex': ('DAMEX', 'damex-dino'),
    'gem': ('GEM', 'gem-dino'),
}
BASELINES = ('dino', 'damex')
DEFAULT_HOLDOUT = 'watercolor'
#: the table whose cells give the reference (trained with the domain): the
#: current v2 table's (its first run, ``mini_uodb_table_v2_1000it``, is of
#: older code)
DEFAULT_REFERENCE = osp.join(runs.REPO, 'tools', 'benchmark', 'results',
                             'mini_uodb_table_v2_1000it_r2')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    runs.add_common_args(parser, default_iters=None)
    parser.add_argument('--holdout', default=DEFAULT_HOLDOUT,
                        help='the unseen domain, held out of training')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    parser.add_argument('--reference', default=DEFAULT_REFERENCE,
                        help='mini_uodb_table.py results folder of the reference (the same '
                        'methods trained with the held-out domain; default: the current v2 '
                        'table, results/mini_uodb_table_v2_1000it_r2); missing: no reference')
    args = parser.parse_args(argv)
    if args.data_version != 2:
        parser.error('the leave-one-domain-out scenario is defined on mini-UODB v2 '
                     '(--data-version 2)')
    names = runs.DATA_VERSIONS[2]['names']
    if args.holdout not in names:
        parser.error(f'--holdout {args.holdout!r} is not a domain of mini-UODB v2: '
                     f'{list(names)}')
    args.iters = args.iters or table.DEFAULT_ITERS[2]
    runs.resolve_paths(args, 'mini_uodb_loo', f'{args.holdout}_{args.iters}it')
    return args


def method_config(method: str) -> str:
    """str: The leave-one-domain-out tiny config of ``method``."""
    if method not in METHODS:
        raise ValueError(f'unknown method {method!r}, expected one of {list(METHODS)}')
    return osp.join(runs.REPO, 'configs', 'gem',
                    f'{METHODS[method][1]}-tiny_r18_mini-uodb-v2_loo-watercolor.py')


def train_names(holdout: str) -> List[str]:
    """list[str]: The v2 domains trained on, in v2 order, without ``holdout``."""
    names = list(runs.DATA_VERSIONS[2]['names'])
    if holdout not in names:
        raise ValueError(f'{holdout!r} is not a domain of mini-UODB v2: {names}')
    return [n for n in names if n != holdout]


def loo_overrides(config: str, holdout: str) -> dict:
    """Config options that hold ``holdout`` out of a ``_loo-watercolor`` config.

    Training selects the other ten domains and the model's label space
    follows them (``mini_uodb_few_shot.dataset_overrides``); the val / test
    loaders select ``holdout`` alone and the evaluators get the ten's names
    and classes (the model's datasets). For ``watercolor`` every value equals
    the config's own, so the cells are the config's.

    Args:
        config (str): A ``*_loo-watercolor.py`` config.
        holdout (str): The unseen domain.

    Returns:
        dict: Dotted config keys and their values.
    """
    names = train_names(holdout)
    out = few_shot.dataset_overrides(config, names, 'all', holdout)
    cfg = runs.build_cfg(config, '.', 1, 0, '.')
    dataset = cfg.train_dataloader.dataset
    classes = {n: list(d['metainfo']['classes'])
               for n, d in zip(dataset.dataset_names, dataset.datasets)}
    for split in ('val', 'test'):
        out[f'{split}_dataloader.dataset.select'] = [holdout]
        out[f'{split}_evaluator.label_mapping'] = 'name'
        out[f'{split}_evaluator.model_dataset_names'] = names
        out[f'{split}_evaluator.model_dataset_classes'] = [classes[n] for n in names]
    return out


def make_jobs(args: argparse.Namespace, data_fp: str) -> List[dict]:
    """The jobs of every (method, seed) cell, ``--holdout`` held out.

    Args:
        args (argparse.Namespace): :func:`parse_args`' options (methods,
            seeds, held-out domain, budget, folders).
        data_fp (str): The data's fingerprint.

    Returns:
        list[dict]: One job per (method, seed), each with its one cell
        (``<method>_s<seed>``): the methods' ``_loo-watercolor`` configs
        with :func:`loo_overrides` applied.
    """
    def method_cell(method: str) -> dict:
        config = method_config(method)
        return dict(config=config, meta=dict(method=method, holdout=args.holdout),
                    overrides=loo_overrides(config, args.holdout))

    return runs.method_seed_jobs(args, data_fp, method_cell)


def load_reference(folder: str, methods: Sequence[str],
                   seeds: Sequence[int]) -> Dict[str, tuple]:
    """The reference cells: each method trained with the held-out domain.

    The table's dataset-unknown row (``<method>_unknown``) is taken where it
    was saved, else its dataset-known row.

    Args:
        folder (str): A ``mini_uodb_table.py`` results folder.
        methods (Sequence[str]): Methods of this benchmark.
        seeds (Sequence[int]): Seeds to look for.

    Returns:
        dict: method -> (protocol, {seed: cell}); methods without cells
        are left out.
    """
    if not osp.isdir(folder):
        return {}
    store = CellStore(folder)
    out = {}
    for m in methods:
        for row, protocol in ((f'{m}_unknown', 'dataset unknown'), (m, 'dataset known')):
            cells = {s: c for s in seeds
                     if (c := store.load(runs.cell_key(row, s))) is not None}
            if cells:
                out[m] = (protocol, cells)
                break
    return out


def held_out_ap(cell: dict, holdout: str, metric: str = 'bbox_mAP') -> float:
    """float: The cell's ``metric`` on the held-out domain."""
    return float(cell['metrics'][f'uodb/{holdout}_{metric}'])


def routed_shares(by_seed: Dict[int, dict], holdout: str) -> Dict[str, float]:
    """Mean over seeds of the share (%) of held-out images the domain
    classifier predicts as each known domain (largest first)."""
    prefix = f'uodb/{holdout}_routed_'
    names = sorted({k[len(prefix):] for c in by_seed.values() for k in c['metrics']
                    if k.startswith(prefix)})
    shares = {n: float(np.mean([c['metrics'].get(prefix + n, 0.0) for c in by_seed.values()]))
              for n in names}
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))


def _routed_text(by_seed: Dict[int, dict], holdout: str, display: Dict[str, str]) -> str:
    shares = routed_shares(by_seed, holdout)
    if not shares:
        return '-'
    return ', '.join(f'{display.get(n, n)} {v:.0f}%' for n, v in list(shares.items())[:3])


def render(args: argparse.Namespace) -> str:
    """The markdown report of the saved cells."""
    store = CellStore(args.results_dir)
    cells = {}
    for m in args.methods:
        by_seed = {s: c for s in args.seeds if (c := store.load(runs.cell_key(m, s))) is not None}
        if by_seed:
            cells[m] = by_seed
    if not cells:
        return f'no saved cells in {args.results_dir}'
    h = args.holdout
    display = dict(runs.DATA_VERSIONS[2]['display'])
    title = display.get(h, h)
    first = next(iter(next(iter(cells.values())).values()))
    seeds = ' '.join(str(s) for s in args.seeds)
    command = (f'python tools/benchmark/mini_uodb_loo.py --holdout {h} --iters {args.iters} '
               f'--seeds {seeds} --methods {" ".join(args.methods)}')
    mach = first['machine']
    reference = load_reference(args.reference, args.methods, args.seeds)
    lines = [f'# mini-UODB v2 unseen domain: {title} held out', '',
             f'`{command}` on {mach["machine"]} CPU ({mach["cpus"]} cores, {mach["threads"]} '
             f'torch thread(s) per cell), torch {mach["torch"]}. Tiny DINO (ResNet-18 from '
             f'scratch, 160 px), {first["iters"]} iterations x batch 4 per cell, trained on the '
             'ten other domains (training images: '
             + ', '.join(f'{n} {k}' for n, k in zip(first['train_names'], first['lengths']))
             + f'), tested on {title}\'s test split ({sum(first["test_images"])} images) with '
             'the dataset unknown: labels by class name in the ten\'s unified space, GEM routed '
             'by the domain classifier\'s top prediction among the ten. '
             + runs.cost_line([c for b in cells.values() for c in b.values()]), '',
             'Every number is the mean over seeds ± the half-width of its 95 % Student-t '
             'interval (no interval from one seed). *Routed to*: the share of the held-out '
             'images the domain classifier predicts as each known domain (top three; GEM '
             f'routes them through that domain\'s plan row). *Trained with {title}*: the '
             'same method in the full table (`'
             + osp.relpath(args.reference, runs.REPO) + '`), AP on the same test split.', '',
             f'| Method | seeds | {title} AP | {title} AP50 | Routed to | '
             f'Trained with {title}: AP (protocol, seeds) |',
             '|---|---|---|---|---|---|']
    for m, by_seed in cells.items():
        ap = format_interval(t_interval([held_out_ap(c, h) for c in by_seed.values()]))
        ap50 = format_interval(t_interval([held_out_ap(c, h, 'bbox_mAP_50')
                                           for c in by_seed.values()]))
        ref = '-'
        if m in reference:
            protocol, ref_cells = reference[m]
            ref = (format_interval(t_interval([held_out_ap(c, h) for c in ref_cells.values()]))
                   + f' ({protocol}, {len(ref_cells)})')
        lines.append(f'| {METHODS[m][0]} | {len(by_seed)} | {ap} | {ap50} | '
                     f'{_routed_text(by_seed, h, display)} | {ref} |')
    lines.append('')
    paired = []
    for b in BASELINES:
        if 'gem' in cells and b in cells:
            iv = paired_difference({s: held_out_ap(c, h) for s, c in cells['gem'].items()},
                                   {s: held_out_ap(c, h) for s, c in cells[b].items()})
            mark = ' *' if iv.excludes_zero() else ''
            paired.append(f'| GEM − {METHODS[b][0]} | '
                          f'{format_interval(iv, signed=True, show_n=True)}{mark} |')
    if paired:
        lines += [f'**Paired differences of {title} AP** (same seed, 95 % paired '
                  't-interval, n seeds; * the interval excludes 0)', '',
                  '| Comparison | AP |', '|---|---|'] + paired + ['']
    if 'gem' in cells:
        seed, cell = min(cells['gem'].items())
        lines += [f'**GEM plan over the ten** (seed {seed}): '] + table.plan_lines(
            cell.get('plan')) + ['']
    return '\n'.join(lines).rstrip() + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    return runs.run_benchmark(parse_args(argv), lambda a, fp: [make_jobs(a, fp)], render)


if __name__ == '__main__':
    sys.exit(main())
