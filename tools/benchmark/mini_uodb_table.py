# Copyright (c) mmgem contributors. All rights reserved.
"""Dense DINO vs vanilla MoE vs DAMEX vs GEM on the `small` mini-UODB.

Trains the four tiny configs of ``configs/gem/*-tiny_r18_mini-uodb.py`` with the
same seed, data and iteration budget, one after the other in this process,
evaluates each on every domain's test split and prints:

- the per-dataset box AP table in DAMEX Table 1's layout (one column per
  domain, a Mean column), AP50 below it, and the rarest domain's AP;
- for each MoE variant, the expert-utilisation matrix on the test split
  (datasets x experts, share of each dataset's decoder tokens that each
  expert processed, summed over the MoE layers).

The table is a measurement: the generator is not tuned for it. Run::

    python tools/benchmark/mini_uodb_table.py            # ~45-60 min on 2 CPU cores
    python tools/benchmark/mini_uodb_table.py --iters 100 --methods dino gem   # quick look

and find the markdown in ``tools/benchmark/results/mini_uodb_table.md``.
"""
import argparse
import os
import os.path as osp
import platform
import sys
import time
from typing import Dict, List

import numpy as np
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import mmgem  # noqa: F401
from mmgem.datasets import MINI_UODB_DISPLAY_NAMES
from mmgem.utils import atomic_write

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
METHODS = {
    'dino': ('DINO (mixed)', 'dino-tiny_r18_mini-uodb.py'),
    'moe': ('DINO-MoE', 'moe-dino-tiny_r18_mini-uodb.py'),
    'damex': ('DAMEX', 'damex-dino-tiny_r18_mini-uodb.py'),
    'gem': ('GEM', 'gem-dino-tiny_r18_mini-uodb.py'),
}


class ExpertUtilisation(Hook):
    """Sums, per dataset and expert, the decoder tokens of the test images."""

    priority = 'LOWEST'

    def __init__(self, num_datasets: int, num_experts: int) -> None:
        self.tokens = np.zeros((num_datasets, num_experts), dtype=np.int64)

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        dataset_ids = [s.metainfo['dataset_id'] for s in data_batch['data_samples']]
        for ffn in model.moe_ffns():
            per_image = ffn.routing_stats['image_experts'].cpu().numpy()
            for d, row in zip(dataset_ids, per_image):
                self.tokens[d] += row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-dir', default='data/mini_uodb', help='small mini-UODB root')
    parser.add_argument('--work-dir', default='work_dirs/mini_uodb_table')
    parser.add_argument('--iters', type=int, default=600, help='training iterations per model')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    parser.add_argument(
        '--out', default=osp.join(REPO, 'tools', 'benchmark', 'results', 'mini_uodb_table.md'))
    return parser.parse_args()


def build_cfg(method: str, args: argparse.Namespace) -> Config:
    """The method's tiny config with the shared budget, data and seed."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'gem', METHODS[method][1]))
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = osp.abspath(args.data_dir) + '/'
    cfg.work_dir = osp.join(args.work_dir, method)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters,
                         val_interval=args.iters + 1)
    for scheduler in cfg.param_scheduler:
        if scheduler.type == 'MultiStepLR':
            scheduler.end = args.iters
            scheduler.milestones = [args.iters * 3 // 4]
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', by_epoch=False, interval=args.iters, max_keep_ckpts=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=50)
    cfg.randomness = dict(seed=args.seed)
    return cfg


def run_method(method: str, args: argparse.Namespace) -> Dict:
    cfg = build_cfg(method, args)
    runner = Runner.from_cfg(cfg)
    start = time.time()
    runner.train()
    train_s = time.time() - start
    util = None
    model = runner.model
    if hasattr(model, 'moe_ffns'):
        util = ExpertUtilisation(model.num_datasets, model.num_experts)
        runner.register_hook(util)
    metrics = runner.test()
    return dict(metrics=metrics, train_s=train_s,
                util=None if util is None else util.tokens,
                names=list(runner.test_dataloader.dataset.dataset_names),
                lengths=list(runner.train_dataloader.dataset.dataset_lengths))


def _row(label: str, values: List[float]) -> str:
    cells = ' | '.join(f'{100 * v:.1f}' for v in values)
    return f'| {label} | {cells} | {100 * float(np.mean(values)):.1f} |'


def format_report(results: Dict[str, Dict], args: argparse.Namespace) -> str:
    first = next(iter(results.values()))
    names = first['names']
    header = ' | '.join(MINI_UODB_DISPLAY_NAMES.get(n, n) for n in names)
    rare = names[int(np.argmin(first['lengths']))]
    lines = [
        '# mini-UODB: dense DINO vs vanilla MoE vs DAMEX vs GEM',
        '',
        f'`python tools/benchmark/mini_uodb_table.py --iters {args.iters} --seed {args.seed}` '
        f'on {platform.machine()} CPU ({os.cpu_count()} cores), torch {torch.__version__}. '
        f'Tiny DINO (ResNet-18 from scratch, 160 px), {args.iters} iterations x batch 4 each, '
        'same data, seed and schedule; test split of every domain. Training images per domain: '
        + ', '.join(f'{n} {k}' for n, k in zip(names, first['lengths'])) + '.',
        '',
    ]
    for metric, title in (('bbox_mAP', 'box AP@[.5:.95]'), ('bbox_mAP_50', 'box AP50')):
        lines += [f'**{title}**', '', f'| Method | {header} | Mean |',
                  '|---' * (len(names) + 2) + '|']
        for method, res in results.items():
            values = [res['metrics'][f'uodb/{n}_{metric}'] for n in names]
            lines.append(_row(METHODS[method][0], values))
        lines.append('')
    lines += [f'Rarest domain ({rare}, {min(first["lengths"])} training images) box AP: '
              + ', '.join(f'{METHODS[m][0]} {100 * r["metrics"][f"uodb/{rare}_bbox_mAP"]:.1f}'
                          for m, r in results.items()), '']
    lines += ['Training time: ' + ', '.join(
        f'{METHODS[m][0]} {r["train_s"] / 60:.1f} min' for m, r in results.items()), '']
    for method, res in results.items():
        if res['util'] is None:
            continue
        tokens = res['util'].astype(np.float64)
        share = tokens / np.maximum(tokens.sum(1, keepdims=True), 1)
        experts = share.shape[1]
        lines += [f'**Expert utilisation, {METHODS[method][0]}** (share of each dataset\'s '
                  'decoder tokens per expert, test split, all MoE layers)', '',
                  '| Dataset | ' + ' | '.join(f'E{e}' for e in range(experts)) + ' |',
                  '|---' * (experts + 1) + '|']
        for n, row in zip(names, share):
            lines.append(f'| {n} | ' + ' | '.join(f'{v:.2f}' for v in row) + ' |')
        lines.append('')
    return '\n'.join(lines)


def main() -> None:
    args = parse_args()
    if not osp.isfile(osp.join(args.data_dir, 'mini_uodb.json')):
        sys.path.insert(0, osp.join(REPO, 'tools', 'misc'))
        from make_mini_uodb import make_mini_uodb
        make_mini_uodb(args.data_dir, seed=0, scale='small', convert=True)
    results = {}
    for method in args.methods:
        print(f'==> {METHODS[method][0]}: training {args.iters} iterations', flush=True)
        results[method] = run_method(method, args)
    report = format_report(results, args)
    print(report)
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    atomic_write(args.out, report + '\n')
    print(f'written to {args.out}')


if __name__ == '__main__':
    main()
