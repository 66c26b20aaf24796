# Copyright (c) mmgem contributors. All rights reserved.
"""Dense DINO vs DINO-MoE vs DAMEX vs GEM on mini-UODB, over several seeds.

Trains every method of ``--methods`` with every seed of ``--seeds`` (the
same seeds for every method), the same data, budget and schedule, and
evaluates each domain's test split. Each (method, seed) cell is saved as
JSON under the results folder as soon as it finishes; rerunning the same
command skips the saved cells, so a long run survives interruption.
Every method's dataset-known and dataset-unknown rows (and GEM's 2 x 2
table of {true, predicted} routing x {dataset, name-mapped} labels, its
soft-routing row and its row with the domain classifier refitted after
training, ``gem_refit_unknown``) share one training run per seed (they differ
only in testing).

The report (markdown, printed and written beside the cells) holds:

- per-dataset box AP@[.5:.95] and AP50 and their mean, each the mean over
  seeds with the half-width of the 95 % Student-t interval;
- paired differences, GEM (each protocol) minus each baseline on the same
  seed, with a paired t-interval: on the mean AP, on the two rarest
  domains and on the label-conflict pair (v2: street / signs); † marks the
  comparisons that survive Holm's correction at 0.05 over their column;
- the domain classifier's accuracy, time per cell, expert utilisation and
  GEM's plan.

The table is a measurement: the data generator is not tuned to any
method's result. Examples::

    # the v2 benchmark, 1000 iterations, 3 seeds (about 4 h here; resumable)
    python tools/benchmark/mini_uodb_table.py --data-version 2 --seeds 0 1 2
    # the start of training: the same at 300 iterations
    python tools/benchmark/mini_uodb_table.py --data-version 2 --iters 300 --seeds 0 1 2
    # the v1 table of 600 iterations, one seed (issue 10's rerun)
    python tools/benchmark/mini_uodb_table.py --data-version 1 --iters 600 --seeds 0
    # re-render the markdown from the saved cells, no training
    python tools/benchmark/mini_uodb_table.py --data-version 2 --render
"""
import argparse
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
from mmgem.models.utils.routing_stats import (  # noqa: E402
    expert_dataset_nmi,
    top_expert_share,
)
from tools.benchmark import mini_uodb_runs as runs  # noqa: E402
from tools.benchmark.cell_store import CellStore  # noqa: E402
from tools.benchmark.seed_statistics import (  # noqa: E402
    format_interval,
    holm_reject,
    paired_difference,
    t_interval,
)

#: iterations per cell by data version: v2's is where the curve shows learning
#: (``mini_uodb_curve.py``; README "where the budget sits"), about 20 min a cell here
DEFAULT_ITERS = {1: 600, 2: 1000}
BASELINES = ('dino', 'moe', 'damex', 'soft_moe', 'sinkhorn', 'moe_pp', 'remoe', 'mumoe')
GEM_ROWS = ('gem', 'gem_unknown')
#: GEM's dataset-unknown rows (one training): the plain one, soft routing and
#: the refitted classifier; rendered next to each other (:func:`row_order`)
GEM_UNKNOWN_ROWS = ('gem_unknown', 'gem_soft_unknown', 'gem_refit_unknown')
#: GEM's 2 x 2 table: (routing, labels) -> method
GEM_2X2 = {('true', 'dataset'): 'gem', ('true', 'name-mapped'): 'gem_true_routing_names',
           ('predicted', 'dataset'): 'gem_predicted_labels',
           ('predicted', 'name-mapped'): 'gem_unknown'}


def comparisons(methods: Sequence[str]) -> List[tuple]:
    """The (GEM row, other row) pairs of the paired-difference table.

    GEM dataset-known minus every dataset-known baseline, GEM dataset-unknown
    minus every dataset-unknown baseline, and GEM dataset-unknown minus GEM
    dataset-known and minus dense DINO dataset-known (issue 25's targets),
    and GEM with its classifier refitted minus GEM dataset-unknown as trained.

    Args:
        methods (Sequence[str]): The methods with saved cells.

    Returns:
        list[tuple]: ``(minuend, subtrahend)`` method pairs, both present.
    """
    pairs = [('gem', b) for b in BASELINES]
    pairs += [('gem_unknown', f'{b}_unknown') for b in BASELINES]
    pairs += [('gem_unknown', 'gem'), ('gem_unknown', 'dino')]
    pairs += [('gem_refit_unknown', 'gem_unknown')]
    return [(a, b) for a, b in pairs if a in methods and b in methods]


def row_order(methods: Sequence[str]) -> List[str]:
    """The methods in report order: as given, GEM's dataset-unknown rows
    (:data:`GEM_UNKNOWN_ROWS`) moved together where the first of them is.

    Args:
        methods (Sequence[str]): Method keys.

    Returns:
        list[str]: The same keys, reordered.
    """
    unknown = [m for m in GEM_UNKNOWN_ROWS if m in methods]
    out: List[str] = []
    for m in methods:
        if m not in GEM_UNKNOWN_ROWS:
            out.append(m)
        elif not any(u in out for u in unknown):
            out += unknown
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    runs.add_common_args(parser, default_iters=None)
    parser.add_argument('--methods', nargs='+', default=list(runs.METHODS),
                        choices=list(runs.METHODS))
    args = parser.parse_args(argv)
    args.iters = args.iters or DEFAULT_ITERS[args.data_version]
    runs.resolve_paths(args, 'mini_uodb_table', f'{args.iters}it')
    return args


cell_key = runs.cell_key


def make_jobs(args: argparse.Namespace, data_fp: str) -> List[dict]:
    """The jobs of every (method, seed) cell, GEM's protocols sharing one.

    Args:
        args (argparse.Namespace): :func:`parse_args`' options (methods,
            seeds, data version, budget, folders).
        data_fp (str): The data's fingerprint.

    Returns:
        list[dict]: Per seed, one job per training run: the rows of a
        method that differ only in testing (its dataset-known and
        dataset-unknown rows, GEM's 2 x 2 table) are cells of one job.
    """
    return runs.method_seed_jobs(args, data_fp, lambda m: dict(
        config=runs.method_config(m, args.data_version), meta=dict(method=m),
        overrides=runs.method_overrides(m), refit=runs.method_refit(m)))


def load_cells(store: CellStore, methods: Sequence[str],
               seeds: Sequence[int]) -> Dict[str, Dict[int, dict]]:
    """dict: method -> seed -> saved cell (missing cells left out)."""
    out: Dict[str, Dict[int, dict]] = {}
    for m in methods:
        for s in seeds:
            cell = store.load(cell_key(m, s))
            if cell is not None:
                out.setdefault(m, {})[s] = cell
    return out


def ap(cell: dict, names: Sequence[str], metric: str = 'bbox_mAP') -> float:
    """float: Mean over ``names`` of the cell's per-dataset ``metric``."""
    return float(np.mean([cell['metrics'][f'uodb/{n}_{metric}'] for n in names]))


def ap_table(cells: Dict[str, Dict[int, dict]], names: Sequence[str], titles: Sequence[str],
             metric: str, row_titles: Optional[Dict[str, str]] = None) -> List[str]:
    """Per-domain ``metric`` and its mean, one row per method.

    Args:
        cells (dict): method -> seed -> saved cell.
        names (Sequence[str]): The domains (columns).
        titles (Sequence[str]): Their column titles.
        metric (str): ``'bbox_mAP'`` or ``'bbox_mAP_50'``.
        row_titles (dict, optional): method -> row title (default: the
            titles of ``runs.METHODS``).

    Returns:
        list[str]: Markdown lines, mean over seeds ± t half-width.
    """
    row_titles = row_titles or {m: runs.METHODS[m][0] for m in cells}
    lines = ['| Method | seeds | ' + ' | '.join(titles) + ' | Mean |',
             '|---' * (len(names) + 3) + '|']
    for m, by_seed in cells.items():
        row = [format_interval(t_interval([ap(c, [n], metric) for c in by_seed.values()]))
               for n in names]
        row.append(format_interval(t_interval([ap(c, names, metric)
                                               for c in by_seed.values()])))
        lines.append(f'| {row_titles[m]} | {len(by_seed)} | ' + ' | '.join(row) + ' |')
    return lines


def paired_lines(cells: Dict[str, Dict[int, dict]], groups: Dict[str, List[str]],
                 pairs: Sequence[tuple], titles: Dict[str, str],
                 alpha: float = 0.05) -> List[str]:
    """The paired-difference table: A minus B on the same seed, per group.

    Each column (a group of domains) is one family: its comparisons' paired
    t p-values (from the same paired differences as the intervals) are
    corrected with Holm's step-down procedure
    (:func:`~tools.benchmark.seed_statistics.holm_reject`).

    Args:
        cells (dict): method -> seed -> saved cell.
        groups (dict): Column title -> the domains averaged in it.
        pairs (Sequence[tuple]): ``(a, b)`` method keys, one row each;
            pairs with a method missing from ``cells`` are left out.
        titles (dict): Method key -> row title.
        alpha (float): The family-wise level of Holm's test. Defaults to
            0.05.

    Returns:
        list[str]: Markdown lines (header and rows); a cell reads
        ``+1.0 ± 0.5 (n=3)``, then `` *`` when the 95 % interval excludes
        0 and `` †`` when the comparison survives Holm at ``alpha``.
    """
    pairs = [(a, b) for a, b in pairs if a in cells and b in cells]
    grid = [[paired_difference({s: ap(c, names) for s, c in cells[a].items()},
                               {s: ap(c, names) for s, c in cells[b].items()})
             for names in groups.values()] for a, b in pairs]
    survives = [holm_reject([row[j].p_value for row in grid], alpha)
                for j in range(len(groups))]
    lines = ['| Comparison | ' + ' | '.join(groups) + ' |', '|---' * (len(groups) + 1) + '|']
    for i, (a, b) in enumerate(pairs):
        row = [format_interval(iv, signed=True, show_n=True)
               + (' *' if iv.excludes_zero() else '') + (' †' if survives[j][i] else '')
               for j, iv in enumerate(grid[i])]
        lines.append(f'| {titles[a]} − {titles[b]} | ' + ' | '.join(row) + ' |')
    return lines


#: the caption of :func:`paired_lines`' marks
PAIRED_MARKS = ('* the 95 % interval excludes 0; † the comparison survives Holm\'s correction '
                'at 0.05 over the comparisons of its column (paired t p-values)')


def _two_by_two(cells) -> List[str]:
    """GEM's mean AP by {true, predicted} routing x {dataset, name} labels."""
    if not any(m in cells for m in GEM_2X2.values()):
        return []

    def cell(routing, labels):
        by_seed = cells.get(GEM_2X2[routing, labels])
        if not by_seed:
            return '-'
        names = next(iter(by_seed.values()))['names']
        return format_interval(t_interval([ap(c, names) for c in by_seed.values()]))

    return ['**GEM, 2 x 2** (mean box AP; routing by the true dataset\'s plan row or by the '
            'domain classifier\'s; labels in the dataset\'s own label ids, or in the unified '
            'space mapped to each dataset by class name)', '',
            '| Routing \\ labels | dataset\'s label ids | by class name |', '|---|---|---|',
            f'| true dataset | {cell("true", "dataset")} | {cell("true", "name-mapped")} |',
            f'| predicted dataset | {cell("predicted", "dataset")} | '
            f'{cell("predicted", "name-mapped")} |', '']


def layer_nmi(cell: dict) -> Optional[List[float]]:
    """list[float]: NMI(dataset; expert) of every MoE layer of a cell.

    From the cell's ``layer_counts`` (per layer, dataset x expert decoder
    tokens of the test split); None for a cell without them (dense DINO, or
    saved before they were recorded).
    """
    counts = cell.get('layer_counts')
    if not counts:
        return None
    return [expert_dataset_nmi(np.asarray(c)) for c in counts]


def _titles(cells, titles: Optional[Dict[str, str]]) -> Dict[str, str]:
    """dict: ``titles``, or each method's title in ``runs.METHODS``."""
    return titles or {m: runs.METHODS[m][0] for m in cells}


def specialisation_lines(cells: Dict[str, Dict[int, dict]],
                         titles: Optional[Dict[str, str]] = None) -> List[str]:
    """The expert-specialisation table: NMI(dataset; expert) per MoE layer.

    Args:
        cells (dict): method -> seed -> cell.
        titles (dict, optional): method -> row title (default: the
            method's title in ``runs.METHODS``).

    Returns:
        list[str]: markdown lines; empty when no cell has layer counts.
    """
    titles = _titles(cells, titles)
    rows, layers = [], 0
    for m, by_seed in cells.items():
        per_seed = [v for v in (layer_nmi(c) for c in by_seed.values()) if v is not None]
        if not per_seed:
            continue
        counts = [np.asarray(c['layer_counts'], np.float64) for c in by_seed.values()
                  if c.get('layer_counts')]
        share = np.mean([top_expert_share(layer).numpy().mean()
                         for layers in counts for layer in layers])
        nmi = np.mean(per_seed, axis=0)
        layers = max(layers, len(nmi))
        rows.append(f'| {titles[m]} | {len(per_seed)} | '
                    + ' | '.join(f'{v:.2f}' for v in nmi) + f' | {share:.2f} |')
    if not rows:
        return []
    return ['**Expert specialisation** (NMI of an image\'s dataset and the expert its decoder '
            'tokens go to, per MoE layer, test split, mean over seeds; 1: the expert names the '
            'dataset, 0: independent; last column: mean share of a dataset\'s tokens on its '
            'most-used expert)', '',
            '| Method | seeds | ' + ' | '.join(f'NMI layer {i + 1}' for i in range(layers))
            + ' | top-expert share |', '|---' * (layers + 3) + '|'] + rows + ['']


def domain_accuracy_lines(cells: Dict[str, Dict[int, dict]],
                          titles: Optional[Dict[str, str]] = None) -> List[str]:
    """The domain-classifier table: accuracy, balanced accuracy, per domain.

    Args: as :func:`specialisation_lines`.

    Returns:
        list[str]: markdown lines (with the refit rows' notes); empty when
        no cell has a domain accuracy.
    """
    titles = _titles(cells, titles)
    lines = []
    for m, by_seed in cells.items():
        got = [c['metrics'] for c in by_seed.values() if 'uodb/domain_acc' in c['metrics']]
        if not got:
            continue
        names = next(iter(by_seed.values()))['names']
        per = {n: np.mean([g.get(f'uodb/{n}_domain_acc', np.nan) for g in got]) for n in names}
        balanced = np.mean([np.nanmean([g.get(f'uodb/{n}_domain_acc', np.nan) for n in names])
                            for g in got])
        plain = np.mean([g['uodb/domain_acc'] for g in got])
        lines.append(f'| {titles[m]} | {len(got)} | {plain:.1f} | {balanced:.1f} | '
                     + ' | '.join(f'{per[n]:.0f}' for n in names) + ' |')
    if not lines:
        return []
    names = next(iter(next(iter(cells.values())).values()))['names']
    return ['**Domain classifier** (test split, percent; balanced: the mean of the per-domain '
            'accuracies)', '',
            '| Row | seeds | accuracy | balanced | ' + ' | '.join(names) + ' |',
            '|---' * (len(names) + 4) + '|'] + lines + [''] + refit_lines(cells)


def refit_lines(cells: Dict[str, Dict[int, dict]]) -> List[str]:
    """What the refit of the rows with a refitted classifier did, one line each.

    Args:
        cells (dict): method -> seed -> saved cell; cells with a ``refit``
            record (:func:`~tools.benchmark.mini_uodb_runs.refit_classifier`)
            count.

    Returns:
        list[str]: Markdown lines (none without refit cells): the loss, steps
        and images of the fit, the balanced accuracy on those images of the
        trained and the refitted classifier and the refit's time, means over
        seeds.
    """
    lines = []
    for m, by_seed in cells.items():
        got = [c['refit'] for c in by_seed.values() if c.get('refit')]
        if not got:
            continue
        spec = got[0]['spec']
        before = [r['checkpoint_balanced_accuracy'] for r in got
                  if r.get('checkpoint_balanced_accuracy') is not None]
        lines.append(
            f'- {runs.METHODS[m][0]}: classifier refitted on frozen features of '
            f'{sum(got[0]["fit_images"])} training images (`{spec["loss_balance"]}`, '
            f'{spec["iters"]} steps, seed {spec["seed"]}); balanced accuracy on those images '
            + (f'{100 * np.mean(before):.1f} trained -> ' if before else '')
            + f'{100 * np.mean([r["balanced_accuracy"] for r in got]):.1f} refitted; '
            f'{np.mean([r["total_s"] for r in got]):.0f} s per refit '
            f'({np.mean([r["extract_s"] for r in got]):.0f} s feature extraction), '
            f'{len(got)} seed(s)')
    if not lines:
        return []
    return ['**Domain classifier refit** (the rows tested on a checkpoint whose classifier '
            'alone was refitted after training; `tools/analysis_tools/'
            'fit_domain_classifier.py`)', ''] + lines + ['']


def zero_domains(cells) -> List[str]:
    """Lines naming, per dataset-unknown row, the domains at 0 AP whose
    dataset-known row is above 2 AP (issue 25's first target)."""
    lines = []
    for m in cells:
        if not m.endswith('_unknown') or m[:-len('_unknown')] not in cells:
            continue
        known = cells[m[:-len('_unknown')]]
        names = next(iter(known.values()))['names']
        zero = [n for n in names
                if np.mean([ap(c, [n]) for c in cells[m].values()]) == 0
                and np.mean([ap(c, [n]) for c in known.values()]) > 0.02]
        lines.append(f'- {runs.METHODS[m][0]}: '
                     + (', '.join(zero) if zero else 'none') + '')
    if not lines:
        return []
    return ['**Domains at 0 AP with the dataset unknown whose dataset-known AP is above 2**',
            ''] + lines + ['']


def expert_utilisation(cell: dict) -> Optional[np.ndarray]:
    """The ``(K, M)`` decoder tokens of every dataset on every expert.

    Args:
        cell (dict): A saved cell.

    Returns:
        ndarray | None: float64, all MoE layers together: the sum over the
        layers of the cell's ``layer_counts``, or, for a cell saved before
        they were recorded, its ``utilisation`` (the same sum, from the
        routers' per-image counts); None for a cell with neither (dense
        DINO).
    """
    if cell.get('layer_counts'):
        return np.asarray(cell['layer_counts'], np.float64).sum(axis=0)
    if cell.get('utilisation'):
        return np.asarray(cell['utilisation'], np.float64)
    return None


def _utilisation(m: str, by_seed: Dict[int, dict]) -> List[str]:
    mats = [u for u in map(expert_utilisation, by_seed.values()) if u is not None]
    if not mats:
        return []
    tokens = np.sum(mats, axis=0)
    share = tokens / np.maximum(tokens.sum(1, keepdims=True), 1)
    names = next(iter(by_seed.values()))['names']
    lines = [f'**Expert utilisation, {runs.METHODS[m][0]}** (share of each dataset\'s decoder '
             f'tokens per expert, test split, all MoE layers, {len(mats)} seed(s) pooled)', '',
             '| Dataset | ' + ' | '.join(f'E{e}' for e in range(share.shape[1])) + ' |',
             '|---' * (share.shape[1] + 1) + '|']
    lines += [f'| {n} | ' + ' | '.join(f'{v:.2f}' for v in row) + ' |'
              for n, row in zip(names, share)]
    return lines + ['']


def plan_lines(plan: Optional[dict]) -> List[str]:
    """Each dataset's experts in a saved plan, as one markdown line."""
    if not plan:
        return []
    quota = np.asarray(plan['quota'])
    parts = []
    for n, row in zip(plan['dataset_names'], quota):
        experts = [f'E{e}' + (f' {row[e] / row.sum():.0%}' if (row > 0).sum() > 1 else '')
                   for e in np.flatnonzero(row)]
        parts.append(f'{n} → {", ".join(experts)}')
    return ['; '.join(parts)]


def caption(cells: Dict[str, Dict[int, dict]], args: argparse.Namespace, command: str) -> str:
    """The sentence under a benchmark's title: command, machine, budget, data."""
    first = next(iter(next(iter(cells.values())).values()))
    mach = first['machine']
    cell_list = [c for by_seed in cells.values() for c in by_seed.values()]
    return (
        f'`{command}` on {mach["machine"]} CPU ({mach["cpus"]} cores, {mach["threads"]} torch '
        f'thread(s) per cell), torch {mach["torch"]}. Tiny DINO (ResNet-18 from scratch, 160 px), '
        f'{first["iters"]} iterations x batch 4 per cell, the same data, seeds and schedule for '
        f'every method; test split of every domain (mini-UODB v{args.data_version}, '
        f'`{args.scale}`). Training images per domain: '
        + ', '.join(f'{n} {k}' for n, k in zip(first['train_names'], first['lengths']))
        + '. ' + runs.cost_line(cell_list))


def _refit_time(by_seed: Dict[int, dict]) -> str:
    """str: ``'N s classifier refit + '`` for refit cells, else ``''``."""
    times = [c['refit']['total_s'] for c in by_seed.values() if c.get('refit')]
    return f'{np.mean(times):.0f} s classifier refit + ' if times else ''


def render(args: argparse.Namespace) -> str:
    """The markdown report of the saved cells."""
    cells = load_cells(CellStore(args.results_dir), row_order(args.methods), args.seeds)
    if not cells:
        return f'no saved cells in {args.results_dir}'
    first = next(iter(next(iter(cells.values())).values()))
    names, titles = first['names'], first['display']
    groups = runs.comparison_groups(args.data_version, args.scale, names)
    seeds = ' '.join(str(s) for s in args.seeds)
    command = (f'python tools/benchmark/mini_uodb_table.py --data-version {args.data_version} '
               f'--iters {args.iters} --seeds {seeds} --methods {" ".join(args.methods)}')
    lines = [f'# mini-UODB v{args.data_version}: dense DINO, the MoE routers, DAMEX and GEM', '',
             caption(cells, args, command), '',
             'Every number is the mean over seeds ± the half-width of its 95 % Student-t '
             'interval (no interval from one seed).', '']
    for metric, title in (('bbox_mAP', 'box AP@[.5:.95]'), ('bbox_mAP_50', 'box AP50')):
        lines += [f'**{title}**', ''] + ap_table(cells, names, titles, metric) + ['']
    titles = {m: runs.METHODS[m][0] for m in cells}
    paired = paired_lines(cells, groups, comparisons(list(cells)), titles)
    if len(paired) > 2:
        lines += ['**Paired differences of box AP** (GEM minus baseline on the same seed, '
                  f'mean over seeds ± 95 % paired t-interval, n seeds; {PAIRED_MARKS}; '
                  'one seed gives the difference without an interval)', '']
        lines += paired + ['']
    lines += _two_by_two(cells) + zero_domains(cells) + specialisation_lines(cells, titles)
    lines += domain_accuracy_lines(cells, titles)
    lines += ['**Time per cell** (mean over seeds): ' + ', '.join(
        f'{runs.METHODS[m][0]} {np.mean([c["train_s"] for c in b.values()]) / 60:.1f} min '
        f'training ({np.mean([c["iter_s"] for c in b.values()]):.2f} s/iter) + '
        + _refit_time(b) + f'{np.mean([c["test_s"] for c in b.values()]):.0f} s test'
        for m, b in cells.items()), '']
    for m, by_seed in cells.items():
        lines += _utilisation(m, by_seed)
    for m in GEM_ROWS:
        if m in cells:
            seed, cell = min(cells[m].items())
            lines += [f'**GEM plan** (seed {seed}): '] + plan_lines(cell.get('plan')) + ['']
            break
    return '\n'.join(lines).rstrip() + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    return runs.run_benchmark(parse_args(argv), lambda a, fp: [make_jobs(a, fp)], render)


if __name__ == '__main__':
    sys.exit(main())
