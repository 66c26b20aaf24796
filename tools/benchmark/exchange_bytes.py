# Copyright (c) mmgem contributors. All rights reserved.
"""Bytes the expert-parallel exchange moves, per sampler, against the plan.

Runs ``--world-size`` real processes (torch.distributed, gloo on CPU or
NCCL on GPUs) with GEM-DINO's MoE decoder shapes: ``--layers``
:class:`ExpertParallelMoEFFN` layers of ``--experts`` experts split over
the ranks, ``--batch`` images per rank of ``--tokens`` decoder queries
(900 queries + denoising queries) and ``--embed-dims`` channels. The
datasets are UODB's (names, training-set sizes and label similarity from
``configs/_base_/datasets/uodb_stats.json``, optionally scaled by
``--scale``), with the GEM plan ``GEMPlannerHook`` would make (label
similarity, capacity factor 1.25).

Side by side, in one run and on the same plan, every rank draws its
batches from

* ``UODBSampler`` (the default: the epoch split between ranks by stride),
* ``ExpertLocalitySampler(strict=True)`` (every image on its expert's rank),
* ``ExpertLocalitySampler(strict=False)`` (every image once per epoch, only
  the surplus of over-full ranks moves),

runs forward + backward through the layers and reads the exchange's byte
counter. The plan's prediction is computed independently, from
``route_bucket`` of every drawn image: each token whose expert lives on
another rank goes there and back in forward and again in backward.

Usage::

    python tools/benchmark/exchange_bytes.py --world-size 2
    python tools/benchmark/exchange_bytes.py --world-size 8 --backend nccl

The markdown table is printed and written atomically to ``--out``.
"""
import argparse
import os
import os.path as osp
import platform
import socket
import tempfile
import time
from typing import Dict, List

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmgem.utils import atomic_write

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
KINDS = ('UODBSampler', 'locality strict', 'locality balanced')


class SyntheticUODB:
    """Index-only stand-in for a UODBDataset of the given sizes.

    Args:
        names (list[str]): Dataset names.
        lengths (list[int]): Training images of each dataset.
    """

    def __init__(self, names, lengths) -> None:
        self.dataset_names = tuple(names)
        self.dataset_lengths = [int(n) for n in lengths]
        self.num_datasets = len(names)
        self.sample_dataset_ids = np.repeat(
            np.arange(len(names)), self.dataset_lengths)
        self._starts = np.concatenate([[0], np.cumsum(self.dataset_lengths)])

    def __len__(self) -> int:
        return len(self.sample_dataset_ids)

    def get_data_info(self, idx: int) -> dict:
        d = int(self.sample_dataset_ids[idx])
        return dict(img_id=int(idx - self._starts[d]), dataset_id=d)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--world-size', type=int, default=2)
    parser.add_argument('--backend', default='gloo', help='gloo or nccl')
    parser.add_argument('--experts', type=int, default=8)
    parser.add_argument('--layers', type=int, default=3)
    parser.add_argument('--batch', type=int, default=2,
                        help='images per rank (8xb2 in the UODB configs)')
    parser.add_argument('--tokens', type=int, default=1100,
                        help='decoder queries per image (900 + denoising)')
    parser.add_argument('--embed-dims', type=int, default=256)
    parser.add_argument('--hidden', type=int, default=2048)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--scale', type=float, default=1.0,
                        help='scale the UODB dataset sizes')
    parser.add_argument('--stats', default=osp.join(
        ROOT, 'configs', '_base_', 'datasets', 'uodb_stats.json'))
    parser.add_argument('--out', default=None,
                        help='results file (default: tools/benchmark/results/'
                        'exchange_bytes_<backend>_w<world>.md)')
    return parser.parse_args()


def make_dataset_and_plan(args):
    """The synthetic UODB and its GEM plan."""
    from mmgem.planner import build_similarity, load_dataset_stats, make_plan
    stats = load_dataset_stats(args.stats)
    lengths = [max(1, round(n * args.scale)) for n in stats.loads]
    dataset = SyntheticUODB(stats.names, lengths)
    similarity = build_similarity(stats.names, labels=stats.labels)
    plan = make_plan(stats.names, lengths, similarity, args.experts,
                     capacity_factor=1.25)
    return dataset, plan


def _sampler(kind, dataset, quota):
    from mmgem.datasets.samplers.locality_sampler import ExpertLocalitySampler
    from mmgem.datasets.samplers.uodb_sampler import UODBSampler
    if kind == 'UODBSampler':
        return UODBSampler(dataset, seed=0)
    sampler = ExpertLocalitySampler(dataset, seed=0,
                                    strict=kind == 'locality strict')
    sampler.set_plan(quota)
    return sampler


def _worker(rank, args, port, out_dir):
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    dist.init_process_group(args.backend,
                            init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=args.world_size)
    from mmgem.models.layers import BatchRouting, MoEFFN
    from mmgem.models.layers.ep_exchange_stats import exchange_stats
    from mmgem.models.layers.expert_parallel import convert_to_expert_parallel
    from mmgem.planner.hashing import image_bucket
    device = torch.device(f'cuda:{rank}' if args.backend == 'nccl' else 'cpu')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    dataset, plan = make_dataset_and_plan(args)
    torch.manual_seed(0)
    layers = torch.nn.ModuleList(
        MoEFFN(args.embed_dims, args.hidden, num_experts=args.experts)
        for _ in range(args.layers))
    convert_to_expert_parallel(layers)
    layers.to(device)
    indices = {
        kind: list(iter(_sampler(kind, dataset, plan.quota)))
        for kind in KINDS
    }
    results: Dict[str, dict] = {
        kind: dict(batches=[], sent=[], times=[])
        for kind in KINDS
    }
    # kinds interleaved, so that drifts of the machine hit them alike
    for it in range(args.iters + 1):  # the first one warms up
        for kind in KINDS:
            batch = indices[kind][it * args.batch:(it + 1) * args.batch]
            ids = torch.tensor(
                [int(dataset.sample_dataset_ids[i]) for i in batch])
            buckets = torch.tensor([
                image_bucket(dataset.dataset_names[int(d)],
                             dataset.get_data_info(i)['img_id'])
                for i, d in zip(batch, ids)
            ])
            x = torch.randn(args.batch, args.tokens, args.embed_dims,
                            device=device, requires_grad=True)
            dist.barrier()
            exchange_stats().reset()
            start = time.perf_counter()
            routing = BatchRouting.from_plan(
                torch.from_numpy(plan.quota), ids, buckets)
            y = x
            for layer in layers:
                y = layer(y, routing=routing)
            y.sum().backward()
            if device.type == 'cuda':
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            if it > 0:
                results[kind]['batches'].append(batch)
                results[kind]['sent'].append(exchange_stats().sent_bytes)
                results[kind]['times'].append(elapsed)
    torch.save(results, osp.join(out_dir, f'rank{rank}.pth'))
    dist.destroy_process_group()


def predicted_bytes(args, plan, dataset, batches_per_rank) -> List[float]:
    """Bytes each rank sends per iteration, from the plan alone."""
    from mmgem.planner.hashing import image_bucket, route_bucket
    per_rank = args.experts // args.world_size

    def owner(i):
        d = int(dataset.sample_dataset_ids[i])
        bucket = image_bucket(dataset.dataset_names[d],
                              dataset.get_data_info(i)['img_id'])
        return route_bucket(plan.quota[d], bucket) // per_rank

    row = args.tokens * args.embed_dims * 4
    out = []
    for it in range(args.iters):
        owners = [[owner(i) for i in batches[it]]
                  for batches in batches_per_rank]
        for rank in range(args.world_size):
            leaving = sum(o != rank for o in owners[rank])
            # tokens of other ranks' images that this rank's experts serve
            served = sum(o == rank for r, os_ in enumerate(owners)
                         if r != rank for o in os_)
            out.append(2 * args.layers * (leaving + served) * row)
    return out


def to_markdown(args, rows) -> str:
    lines = [
        f'# Expert-parallel exchange: bytes per iteration ({args.backend}, '
        f'{args.world_size} ranks)', '',
        f'{args.layers} MoE layers x {args.experts} experts '
        f'({args.experts // args.world_size} per rank), {args.batch} images '
        f'per rank x {args.tokens} tokens x {args.embed_dims} channels '
        f'(fp32), UODB sizes x {args.scale}, GEM plan with label similarity '
        f'and capacity factor 1.25; {args.iters} iterations after one '
        f'warm-up, forward + backward, samplers interleaved (the time '
        f'includes waiting for the slowest rank). Host: {platform.processor() or "?"} '
        f'{platform.machine()}, torch {torch.__version__}.', '',
        '| sampler | measured MB/iter/rank | predicted by the plan | '
        'measured / predicted | ms/iter | time vs UODBSampler |',
        '|---|---|---|---|---|---|'
    ]
    base = rows[0]['ms']
    for r in rows:
        ratio = (f"{r['measured'] / r['predicted']:.3f}"
                 if r['predicted'] else ('1 (both 0)' if not r['measured']
                                         else 'inf'))
        lines.append(
            f"| {r['kind']} | {r['measured'] / 2**20:.2f} | "
            f"{r['predicted'] / 2**20:.2f} | {ratio} | {r['ms']:.1f} | "
            f"{r['ms'] / base:.2f} |")
    return '\n'.join(lines) + '\n'


def main() -> None:
    args = parse_args()
    dataset, plan = make_dataset_and_plan(args)
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(args, port, tmp), nprocs=args.world_size)
        results = [torch.load(osp.join(tmp, f'rank{r}.pth'))
                   for r in range(args.world_size)]
    rows = []
    for kind in KINDS:
        measured = [s for res in results for s in res[kind]['sent']]
        predicted = predicted_bytes(
            args, plan, dataset, [res[kind]['batches'] for res in results])
        times = [t for res in results for t in res[kind]['times']]
        rows.append(dict(kind=kind, measured=float(np.mean(measured)),
                         predicted=float(np.mean(predicted)),
                         ms=1e3 * float(np.median(times))))
    text = to_markdown(args, rows)
    print(text)
    out = args.out or osp.join(
        ROOT, 'tools', 'benchmark', 'results',
        f'exchange_bytes_{args.backend}_w{args.world_size}.md')
    atomic_write(out, text)
    print(f'written to {out}')


if __name__ == '__main__':
    main()
