# Copyright (c) mmgem contributors. All rights reserved.
"""Few-shot domains on mini-UODB: mixed training and adaptation.

Task interference in few-shot adaptation (the GEM paper), in DAMEX Table
2's layout: one domain (``--domain``, default v2 ``street``, UODB's KITTI)
keeps only its first N training images (``--shots``, ``all`` for every
image), the others are whole. Three scenarios, each a saved, resumable cell
per (scenario, method, shots, seed):

- ``mixed``: train on all domains at once, from scratch;
- ``adapt``: train on the other domains only (a *base* cell per method and
  seed), then fine-tune that model for ``--adapt-iters`` with the few-shot
  domain added (``mini_uodb_adapt.py``: old weights kept, the new domain's
  classes appended, GEM re-plans with the new domain and the experts are
  renumbered to keep serving their old datasets);
- ``control``: per method and seed, the same base model fine-tuned the
  same way for the same iterations on the other domains only, so further
  training and the new domain's interference can be told apart.

The report shows, per method and shots, the new domain's AP and the mean AP
of the other domains; for ``adapt`` also how much the other domains' mean
moved from the base model, where GEM's plan put the new domain, and the
interference: the other domains' mean after adaptation minus the control's.
Example::

    python tools/benchmark/mini_uodb_few_shot.py --data-version 2 --seeds 0
"""
import argparse
import json
import os.path as osp
import sys
from typing import List, Optional, Sequence

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
from tools.benchmark import mini_uodb_adapt  # noqa: E402
from tools.benchmark import mini_uodb_runs as runs  # noqa: E402
from tools.benchmark import mini_uodb_table as table  # noqa: E402
from tools.benchmark.cell_store import CellStore  # noqa: E402
from tools.benchmark.seed_statistics import (  # noqa: E402
    format_interval,
    paired_difference,
    t_interval,
)

DEFAULT_DOMAIN = {1: 'signs', 2: 'street'}
METHODS = ('dino', 'damex', 'gem')
SCENARIOS = ('mixed', 'adapt', 'control')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    runs.add_common_args(parser, default_iters=None)
    parser.add_argument('--domain', default=None, help='the few-shot domain')
    parser.add_argument('--shots', nargs='+', default=['10', '25', '100', 'all'],
                        help='training images of the domain (or "all")')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    parser.add_argument('--scenarios', nargs='+', default=list(SCENARIOS), choices=SCENARIOS,
                        help='control: the base model fine-tuned as long without the domain')
    parser.add_argument('--adapt-iters', type=int, default=None,
                        help='fine-tuning iterations of the adaptation (default: iters / 2)')
    parser.set_defaults(seeds=[0])
    args = parser.parse_args(argv)
    args.iters = args.iters or table.DEFAULT_ITERS[args.data_version]
    args.adapt_iters = args.adapt_iters or max(1, args.iters // 2)
    args.domain = args.domain or DEFAULT_DOMAIN[args.data_version]
    names = runs.DATA_VERSIONS[args.data_version]['names']
    if args.domain not in names:
        parser.error(f'--domain {args.domain!r} is not a domain of mini-UODB v'
                     f'{args.data_version}: {list(names)}')
    for s in args.shots:
        if s != 'all' and not (s.isdigit() and int(s) > 0):
            parser.error(f'--shots {s!r}: a positive number of images or "all"')
    runs.resolve_paths(args, 'mini_uodb_few_shot', f'{args.domain}_{args.iters}it')
    return args


def dataset_overrides(config: str, names: Sequence[str], shots: str, domain: str) -> dict:
    """Config options that train on ``names`` (in order), ``domain`` limited.

    The model's label space follows the selection: ``num_classes`` and, for
    GEM-DINO, ``num_datasets``, ``label_offsets`` and (when the config has
    them) ``dataset_classes``. Options that equal the
    config's own are left out, so every domain at ``all`` shots is exactly
    the config (the table's cell, reused when saved there).

    Args:
        config (str): The method's tiny config.
        names (Sequence[str]): The domains to train and test on, in order.
        shots (str): Training images of ``domain`` (a number or ``'all'``).
        domain (str): The few-shot domain.

    Returns:
        dict: Dotted config keys and their values.
    """
    cfg = runs.build_cfg(config, '.', 1, 0, '.')
    dataset = cfg.train_dataloader.dataset
    classes = {n: d['metainfo']['classes'] for n, d in zip(dataset.dataset_names,
                                                             dataset.datasets)}
    offsets = [0]
    for n in names:
        offsets.append(offsets[-1] + len(classes[n]))
    out = {}
    if list(names) != list(dataset.get('select') or dataset.dataset_names):
        out = {f'{loader}.dataset.select': list(names)
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    wanted = {'model.bbox_head.num_classes': offsets[-1]}
    if cfg.model.type == 'GEMDINO':
        wanted.update({'model.num_datasets': len(names), 'model.label_offsets': offsets})
        if cfg.model.get('dataset_classes') is not None:
            wanted['model.dataset_classes'] = [list(classes[n]) for n in names]
    for key, value in wanted.items():
        node = cfg
        for part in key.split('.'):
            node = node.get(part) if node is not None else None
        same = (json.loads(json.dumps(list(node))) == value) \
            if isinstance(value, list) and node is not None else node == value
        if not same:
            out[key] = value
    if shots != 'all' and domain in names:
        out['train_dataloader.dataset.dataset_indices'] = {domain: int(shots)}
    return out


def _key(scenario: str, method: str, shots: str, seed: int) -> str:
    return f'{scenario}_{method}_{shots}_s{seed}'


def base_key(method: str, seed: int) -> str:
    """str: The key of the model trained without the few-shot domain."""
    return f'base_{method}_s{seed}'


def control_key(method: str, seed: int) -> str:
    """str: The key of the base model fine-tuned without the new domain."""
    return f'control_{method}_s{seed}'


def _start_from(args, store: CellStore, base: dict, base_job: dict) -> dict:
    """Where the jobs fine-tuning the base model start: its checkpoint and plan."""
    start = dict(checkpoint=osp.join(base_job['work_dir'], f'iter_{args.iters}.pth'),
                 fingerprint=base_job['train_fingerprint'])
    base_cell = store.load(base['key'])
    if base_cell and base_cell.get('plan'):
        start['plan'] = base_cell['plan']
    elif base['meta']['method'] != 'dino':
        start['plan'] = 'from-base-cell'  # filled when stage 2 starts
    return start


def _from_base(args, data_fp, base: dict, start: dict, key: str, names, shots: str,
               meta: dict) -> dict:
    """A job fine-tuning the base model for ``--adapt-iters`` on ``names``."""
    config = base['config']
    overrides = dataset_overrides(config, names, shots, args.domain)
    train = dict(config=config, iters=args.adapt_iters, seed=base['seed'], overrides=overrides)
    evals = [dict(key=key, config=config, overrides=overrides,
                  meta=dict(meta, method=base['meta']['method'], base=base['key']))]
    return runs.make_job(key, args.results_dir, args.work_dir, args.data_dir, data_fp, train,
                         evals, adapt_from=dict(start))  # a copy: fill_plans edits it


def stages(args: argparse.Namespace, data_fp: str) -> List[List[dict]]:
    """Jobs in two stages: mixed and base cells first, then adaptations
    and their controls."""
    names = list(runs.DATA_VERSIONS[args.data_version]['names'])
    others = [n for n in names if n != args.domain]
    order = others + [args.domain]  # the new domain last: old offsets stay
    first, second = [], []
    store = CellStore(args.results_dir)
    for seed in args.seeds:
        for m in args.methods:
            config = runs.method_config(m, args.data_version)
            if 'mixed' in args.scenarios:
                for shots in args.shots:
                    cell = dict(key=_key('mixed', m, shots, seed), config=config,
                                iters=args.iters, seed=seed,
                                overrides=dataset_overrides(config, names, shots, args.domain),
                                meta=dict(scenario='mixed', method=m, shots=shots))
                    first += runs.group_jobs([cell], args.results_dir, args.work_dir,
                                             args.data_dir, data_fp)
            if not {'adapt', 'control'} & set(args.scenarios):
                continue
            base = dict(key=base_key(m, seed), config=config, iters=args.iters, seed=seed,
                        overrides=dataset_overrides(config, others, 'all', args.domain),
                        meta=dict(scenario='base', method=m))
            base_job = runs.group_jobs([base], args.results_dir, args.work_dir, args.data_dir,
                                       data_fp, keep_checkpoint=True)[0]
            first.append(base_job)
            start = _start_from(args, store, base, base_job)
            for shots in args.shots if 'adapt' in args.scenarios else []:
                second.append(_from_base(args, data_fp, base, start,
                                         _key('adapt', m, shots, seed), order, shots,
                                         dict(scenario='adapt', shots=shots)))
            if 'control' in args.scenarios:
                second.append(_from_base(args, data_fp, base, start, control_key(m, seed),
                                         others, 'all', dict(scenario='control')))
    return [first, second]


def fill_plans(jobs: Sequence[dict], results_dir: str) -> None:
    """Give the adaptation jobs their base model's plan (saved in its cell)."""
    store = CellStore(results_dir)
    for job in jobs:
        src = job.get('adapt_from') or {}
        if src.get('plan') == 'from-base-cell':
            cell = store.load(job['evals'][0]['meta']['base'])
            src['plan'] = (cell or {}).get('plan')
            if not src['plan']:
                raise RuntimeError(f'job {job["name"]}: its base cell has no plan; rerun to '
                                   'train the base model first')


def render(args: argparse.Namespace) -> str:
    """The markdown report of the saved few-shot cells."""
    store = CellStore(args.results_dir)
    names = list(runs.DATA_VERSIONS[args.data_version]['names'])
    others = [n for n in names if n != args.domain]
    seeds = ' '.join(str(s) for s in args.seeds)
    lines = [f'# mini-UODB v{args.data_version}: few-shot {args.domain}', '',
             f'`python tools/benchmark/mini_uodb_few_shot.py --data-version {args.data_version} '
             f'--domain {args.domain} --shots {" ".join(args.shots)} --iters {args.iters} '
             f'--adapt-iters {args.adapt_iters} --seeds {seeds}`. `{args.domain}` keeps its first '
             f'N training images; "others" is the mean box AP over the other '
             f'{len(others)} domains; mean over seeds ± 95 % t-interval.', '']
    seen = []
    for scenario in [s for s in args.scenarios if s != 'control']:
        header = '| Method | ' + ' | '.join(
            f'{s} shots: {args.domain} / others' + (' / others moved' if scenario == 'adapt'
                                                   else '') for s in args.shots) + ' |'
        rows, placements = [], []
        for m in args.methods:
            row = []
            for shots in args.shots:
                cells = {s: store.load(_key(scenario, m, shots, s)) for s in args.seeds}
                cells = {s: c for s, c in cells.items() if c}
                if not cells:
                    row.append('–')
                    continue
                seen += cells.values()
                new = t_interval([table.ap(c, [args.domain]) for c in cells.values()])
                old = {s: table.ap(c, others) for s, c in cells.items()}
                text = f'{format_interval(new)} / {format_interval(t_interval(old.values()))}'
                if scenario == 'adapt':
                    before = _others_by_seed(store, {s: base_key(m, s) for s in cells}, others)
                    text += f' / {format_interval(paired_difference(old, before), signed=True)}'
                    plan = next(iter(cells.values())).get('plan')
                    if plan:
                        placements.append(f'{runs.METHODS[m][0]}, {shots} shots: '
                                          + mini_uodb_adapt.placement(plan, args.domain, others))
                row.append(text)
            rows.append(f'| {runs.METHODS[m][0]} | ' + ' | '.join(row) + ' |')
        title = ('**Mixed training from scratch** (box AP)' if scenario == 'mixed' else
                 f'**Adaptation**: trained on the others for {args.iters} iterations, then '
                 f'{args.adapt_iters} iterations with {args.domain} added (box AP; "others '
                 'moved": change of the others\' mean from the base model, paired by seed)')
        lines += [title, '', header, '|---' * (len(args.shots) + 1) + '|'] + rows + ['']
        if placements:
            lines += ['Where the plan put the new domain: ' + '; '.join(placements), '']
    if 'control' in args.scenarios:
        lines += _interference(args, store, others, seen)
    if not seen:
        return f'no saved cells in {args.results_dir}'
    bases = [b for m in args.methods for s in args.seeds if (b := store.load(base_key(m, s)))]
    lines += [runs.cost_line(seen + bases), '']
    return '\n'.join(lines).rstrip() + '\n'


def _others_by_seed(store: CellStore, keys: dict, others: Sequence[str]) -> dict:
    """dict: Seed -> the old domains' mean AP, for the saved cells of ``keys``
    (seed -> cell key)."""
    return {s: table.ap(c, others) for s, k in keys.items() if (c := store.load(k))}


def _interference(args: argparse.Namespace, store: CellStore, others: Sequence[str],
                  seen: list) -> List[str]:
    """The interference table: adaptation's others minus the control's.

    Args:
        args (argparse.Namespace): The parsed options.
        store (CellStore): The saved cells.
        others (Sequence[str]): The old domains.
        seen (list): Cells shown so far (the controls are appended).

    Returns:
        list: Markdown lines (a title, the table and a blank line).
    """
    rows = []
    for m in args.methods:
        controls = {s: c for s in args.seeds if (c := store.load(control_key(m, s)))}
        if not controls:
            rows.append(f'| {runs.METHODS[m][0]} | ' + ' | '.join(['–'] * (len(args.shots) + 1))
                        + ' |')
            continue
        seen += controls.values()
        after = {s: table.ap(c, others) for s, c in controls.items()}
        before = _others_by_seed(store, {s: base_key(m, s) for s in controls}, others)
        row = [f'{format_interval(t_interval(after.values()))} / '
               f'{format_interval(paired_difference(after, before), signed=True)}']
        for shots in args.shots:
            adapted = _others_by_seed(store, {s: _key('adapt', m, shots, s) for s in controls},
                                      others)
            row.append(format_interval(paired_difference(adapted, after), signed=True)
                       if adapted else '–')
        rows.append(f'| {runs.METHODS[m][0]} | ' + ' | '.join(row) + ' |')
    header = ('| Method | control: others / others moved | '
              + ' | '.join(f'{s} shots: others minus control' for s in args.shots) + ' |')
    title = (f'**Interference**: the control is the base model fine-tuned the same '
             f'{args.adapt_iters} iterations on the others only, without {args.domain}; '
             f'"others minus control": the others\' mean after adaptation minus the '
             'control\'s, paired by seed (below zero: adding the new domain cost the old ones '
             'AP beyond what further training gives)')
    return [title, '', header, '|---' * (len(args.shots) + 2) + '|'] + rows + ['']


def run_stages(args: argparse.Namespace, data_fp: str):
    """Yield the mixed and base jobs, then (with their plans) the adaptations
    and controls."""
    first, second = stages(args, data_fp)
    yield first
    if second:
        fill_plans(second, args.results_dir)
        yield second


def main(argv: Optional[Sequence[str]] = None) -> int:
    return runs.run_benchmark(parse_args(argv), run_stages, render)


if __name__ == '__main__':
    sys.exit(main())
