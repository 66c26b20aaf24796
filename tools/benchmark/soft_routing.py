# Copyright (c) mmgem contributors. All rights reserved.
"""Time GEM soft routing: dataset-unknown inference, top-1 vs top-k plan rows.

One tiny GEM-DINO (``configs/gem/gem-dino-tiny_r18_mini-uodb-v2_dataset-unknown.py``,
random weights, a plan that spreads the datasets over the experts) predicts
the same batch of ``--batch-size`` random ``--img-size`` px images of unknown
dataset with hard routing (the classifier's top-1 plan row,
``soft_routing_topk=1``, bit-equal to hard routing) and with soft routing over
the top ``--topk`` rows (the decoder and head run ``k`` times, the backbone,
neck and encoder once). The two are interleaved; the median of ``--repeats``
runs after ``--warmup`` is reported with the ratio.

Usage::

    python tools/benchmark/soft_routing.py --device cpu --threads 1 --clock process
    python tools/benchmark/soft_routing.py --device cuda

The markdown table is printed and written atomically to ``--out``
(``tools/benchmark/results/soft_routing_<device>.md`` by default).
"""
import argparse
import copy
import os.path as osp
import statistics
from typing import Dict, List

import numpy as np
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
import mmgem  # noqa: E402,F401
from mmgem.utils import atomic_write  # noqa: E402
from tools.benchmark.dino_iteration import make_batch  # noqa: E402
from tools.benchmark.timing import add_timing_args, device_name, setup_timing, synchronize  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
GEM_UNKNOWN_CFG = osp.join(REPO, 'configs/gem/gem-dino-tiny_r18_mini-uodb-v2_dataset-unknown.py')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_timing_args(parser, warmup=2, repeats=9)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--img-size', type=int, default=160)
    parser.add_argument('--topk', type=int, default=2)
    return parser.parse_args(argv)


def build_model(device: torch.device, seed: int):
    """The dataset-unknown GEM-DINO with a plan (dataset d -> expert d mod M)."""
    register_all_modules(init_default_scope=True)
    torch.manual_seed(seed)
    cfg = Config.fromfile(GEM_UNKNOWN_CFG).model
    model = MODELS.build(cfg)
    model.init_weights()
    quota = np.zeros((model.num_datasets, model.num_experts), dtype=np.int64)
    quota[np.arange(model.num_datasets), np.arange(model.num_datasets) % model.num_experts] = 100
    model.install_plan(quota, None, 'benchmark',
                       dataset_names=[f'dataset{d}' for d in range(model.num_datasets)])
    return model.to(device).eval(), list(cfg.label_offsets)


def time_topk(args: argparse.Namespace) -> Dict[int, float]:
    """Median ms of ``model.predict`` at ``k = 1`` and ``k = --topk``."""
    clock = setup_timing(args)
    device = torch.device(args.device)
    model, offsets = build_model(device, args.seed)
    inputs, samples = make_batch(model, args.batch_size, args.img_size, model.num_datasets,
                                 offsets, False, args.seed)
    for s in samples:  # the dataset is unknown
        del s.dataset_id

    def run(k: int) -> None:
        model.soft_routing_topk = k
        with torch.no_grad():
            model.predict(inputs, copy.deepcopy(samples))

    ks = [1, args.topk]
    for _ in range(args.warmup):
        for k in ks:
            run(k)
    times: Dict[int, List[float]] = {k: [] for k in ks}
    for _ in range(args.repeats):
        for k in ks:
            synchronize(device)
            start = clock()
            run(k)
            synchronize(device)
            times[k].append((clock() - start) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> str:
    args = parse_args(argv)
    ms = time_topk(args)
    device = torch.device(args.device)
    ratio = ms[args.topk] / ms[1]
    text = '\n'.join([
        f'Tiny GEM-DINO, dataset unknown ({osp.basename(GEM_UNKNOWN_CFG)}, random weights), '
        f'batch {args.batch_size} x {args.img_size} px; median of {args.repeats} after '
        f'{args.warmup} warm-up runs ({args.clock} time) on {device_name(device)}, torch '
        f'{torch.__version__}.', '',
        '| routing | inference ms | / top-1 |', '|---|---|---|',
        f'| hard (top-1 plan row) | {ms[1]:.1f} | 1.000 |',
        f'| soft (top-{args.topk} plan rows) | {ms[args.topk]:.1f} | {ratio:.3f} |', '',
        f'soft top-{args.topk} / top-1 inference time: {ratio:.3f}x'
    ]) + '\n'
    print(text)
    out = args.out or osp.join(osp.dirname(osp.abspath(__file__)), 'results',
                               f'soft_routing_{device.type}.md')
    atomic_write(out, text)
    print(f'written to {out}')
    return text


if __name__ == '__main__':
    main()
