# Copyright (c) mmgem contributors. All rights reserved.
"""Benchmark a whole training iteration and inference: GEM-DINO vs DINO.

Both detectors come from the same tiny config
(``configs/gem/dino-tiny_r18_mini-uodb.py`` and its GEM variant
``configs/gem/gem-dino-tiny_r18_mini-uodb.py``: 4-expert MoE FFNs in decoder
layers 0 and 2, domain classifier included), share the same weights (the
GEM experts are upcycled from the DINO FFNs) and see the same inputs: a batch
of ``--batch-size`` random images of ``--img-size`` px with 3 boxes each,
from distinct datasets (the most experts active, the worst case for GEM).

* train: ``model.loss`` + backward + grad clipping (0.1, as DINO) + AdamW
  step;
* inference: ``model.predict`` under ``torch.no_grad``.

Methods are interleaved and the median of ``--repeats`` runs after
``--warmup`` runs is reported. Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` around one train iteration + inference;
on CPU the peak RSS of a fresh process per model that builds it and runs
one train iteration + inference, counted above the RSS after the imports.

Usage::

    python tools/benchmark/dino_iteration.py --device cpu
    python tools/benchmark/dino_iteration.py --device cuda

The markdown table is printed and written atomically to ``--out``
(``tools/benchmark/results/dino_iteration_<device>.md`` by default).
Targets: train <= 1.05x, inference <= 1.03x.
"""
import argparse
import copy
import json
import os.path as osp
import resource
import statistics
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.structures import InstanceData
from torch import nn

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
import mmgem  # noqa: E402,F401
from mmgem.utils import atomic_write  # noqa: E402
from tools.benchmark.timing import add_timing_args, device_name, setup_timing, synchronize  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DINO_CFG = osp.join(REPO, 'configs/gem/dino-tiny_r18_mini-uodb.py')
GEM_CFG = osp.join(REPO, 'configs/gem/gem-dino-tiny_r18_mini-uodb.py')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_timing_args(parser, warmup=2, repeats=9)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--img-size', type=int, default=160)
    parser.add_argument(
        '--memory-worker',
        choices=['dino', 'gem'],
        default=None,
        help='internal: measure one model\'s peak RSS in this process')
    return parser.parse_args()


def build_models(device: torch.device, seed: int,
                 only: Optional[str] = None) -> Dict[str, nn.Module]:
    """DINO and GEM-DINO with the same weights, a plan installed in GEM.

    With ``only``, just that model is built (for the memory workers).
    """
    register_all_modules(init_default_scope=True)
    torch.manual_seed(seed)
    models = {}
    if only in (None, 'dino'):
        models['dino'] = MODELS.build(Config.fromfile(DINO_CFG).model)
        models['dino'].init_weights()
    if only in (None, 'gem'):
        gem = MODELS.build(Config.fromfile(GEM_CFG).model)
        gem.init_weights()
        if 'dino' in models:
            gem.load_dense_state_dict(models['dino'].state_dict())
        num_datasets, num_experts = gem.num_datasets, gem.num_experts
        quota = np.zeros((num_datasets, num_experts), dtype=np.int64)
        quota[np.arange(num_datasets),
              np.arange(num_datasets) % num_experts] = 100
        gem.install_plan(quota, None, 'benchmark')
        models['gem'] = gem
    return {k: v.to(device) for k, v in models.items()}


def make_batch(model, batch_size: int, img_size: int, num_datasets: int,
               offsets: List[int], training: bool, seed: int):
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(batch_size):
        d = i % num_datasets
        inputs.append(
            torch.randint(0, 256, (3, img_size, img_size), dtype=torch.uint8,
                          generator=gen))
        meta = dict(
            img_id=i,
            img_path=f'img_{i}.jpg',
            ori_shape=(img_size, img_size),
            img_shape=(img_size, img_size),
            scale_factor=(1., 1.),
            dataset_id=d,
            dataset_name=f'dataset{d}')
        sample = DetDataSample(metainfo=meta)
        xy = torch.rand(3, 2, generator=gen) * img_size * 0.6
        wh = 8 + torch.rand(3, 2, generator=gen) * img_size * 0.3
        labels = offsets[d] + torch.randint(
            0, offsets[d + 1] - offsets[d], (3, ), generator=gen)
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], dim=1), labels=labels)
        samples.append(sample)
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), training)
    return data['inputs'], data['data_samples']


def make_steps(model, optimizer, train_batch,
               test_batch) -> Tuple[Callable, Callable]:

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        losses = model.loss(train_batch[0], copy.deepcopy(train_batch[1]))
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()

    def test_step() -> None:
        model.eval()
        with torch.no_grad():
            model.predict(test_batch[0], copy.deepcopy(test_batch[1]))

    return train_step, test_step


def prepare(device: torch.device, args, only: Optional[str] = None):
    models = build_models(device, args.seed, only)
    gem_cfg = Config.fromfile(GEM_CFG).model
    offsets = list(gem_cfg.label_offsets)
    steps = {}
    for name, model in models.items():
        train_batch = make_batch(model, args.batch_size, args.img_size,
                                 gem_cfg.num_datasets, offsets, True,
                                 args.seed)
        test_batch = make_batch(model, args.batch_size, args.img_size,
                                gem_cfg.num_datasets, offsets, False,
                                args.seed)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=1e-4, weight_decay=1e-4)
        steps[name] = make_steps(model, optimizer, train_batch, test_batch)
    return steps


def _rss_kib(field: str) -> Optional[int]:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (Linux), in KiB."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_worker(args) -> None:
    """Print the peak RSS (MiB) of one model: build + one iteration.

    The peak is counted above the RSS after the imports: on Linux the
    high-water mark is reset (``/proc/self/clear_refs``) before building;
    elsewhere the process peak (``ru_maxrss``) is reported.
    """
    device = torch.device('cpu')
    baseline = 0
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        baseline = _rss_kib('VmRSS') or 0
    except OSError:
        pass
    steps = prepare(device, args, only=args.memory_worker)
    train_step, test_step = steps[args.memory_worker]
    train_step()
    test_step()
    peak_kib = _rss_kib('VmHWM') if baseline else None
    if peak_kib is None:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(peak_mib=(peak_kib - baseline) / 1024)))


def cpu_peak_memory(args) -> Dict[str, float]:
    peaks = {}
    for name in ('dino', 'gem'):
        out = subprocess.run(
            [
                sys.executable, osp.abspath(__file__), '--memory-worker',
                name, '--batch-size',
                str(args.batch_size), '--img-size',
                str(args.img_size), '--seed',
                str(args.seed), '--threads',
                str(torch.get_num_threads())
            ],
            check=True,
            capture_output=True,
            text=True).stdout
        peaks[name] = json.loads(out.strip().splitlines()[-1])['peak_mib']
    return peaks


def cuda_peak_memory(steps, device) -> Dict[str, float]:
    peaks = {}
    for name, (train_step, test_step) in steps.items():
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step()
        test_step()
        synchronize(device)
        peaks[name] = torch.cuda.max_memory_allocated(device) / 2**20
    return peaks


def main() -> None:
    args = parse_args()
    clock = setup_timing(args)
    if args.memory_worker:
        memory_worker(args)
        return
    device = torch.device(args.device)
    steps = prepare(device, args)
    order = [(f'{name}/{phase}', fn) for phase, idx in (('train', 0),
                                                        ('test', 1))
             for name, pair in steps.items() for fn in [pair[idx]]]
    for _ in range(args.warmup):
        for _, fn in order:
            fn()
    times: Dict[str, List[float]] = {key: [] for key, _ in order}
    for _ in range(args.repeats):
        for key, fn in order:
            synchronize(device)
            start = clock()
            fn()
            synchronize(device)
            times[key].append((clock() - start) * 1e3)
    ms = {k: statistics.median(v) for k, v in times.items()}
    if device.type == 'cuda':
        peaks, how = cuda_peak_memory(steps, device), \
            'torch.cuda.max_memory_allocated'
    else:
        peaks, how = cpu_peak_memory(args), \
            'peak RSS above the imports, fresh process per model'
    lines = [
        f'Tiny DINO vs GEM-DINO (same config, weights and inputs; GEM: 4 '
        f'experts in decoder layers 0, 2, images from {args.batch_size} '
        f'distinct datasets), batch {args.batch_size} x {args.img_size} px; '
        f'median of {args.repeats} after {args.warmup} warm-up runs '
        f'({args.clock} time) on {device_name(device)}, torch '
        f'{torch.__version__}.', '',
        '| phase | DINO ms | GEM-DINO ms | GEM / DINO | target |',
        '|---|---|---|---|---|',
        f"| train iteration | {ms['dino/train']:.1f} | "
        f"{ms['gem/train']:.1f} | {ms['gem/train'] / ms['dino/train']:.3f} "
        '| <= 1.05 |',
        f"| inference | {ms['dino/test']:.1f} | {ms['gem/test']:.1f} | "
        f"{ms['gem/test'] / ms['dino/test']:.3f} | <= 1.03 |", '',
        f'| peak memory ({how}) | DINO MiB | GEM-DINO MiB | GEM / DINO |',
        '|---|---|---|---|',
        f"| train iteration + inference | {peaks['dino']:.0f} | "
        f"{peaks['gem']:.0f} | {peaks['gem'] / peaks['dino']:.3f} |"
    ]
    text = '\n'.join(lines) + '\n'
    print(text)
    out = args.out or osp.join(
        osp.dirname(osp.abspath(__file__)), 'results',
        f'dino_iteration_{device.type}.md')
    atomic_write(out, text)
    print(f'written to {out}')


if __name__ == '__main__':
    main()
