# Copyright (c) mmgem contributors. All rights reserved.
"""Bytes the expert-parallel exchange moves, and what each sampler does to
the planned data mix, per sampler, against the plan.

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

* ``UODBSampler`` (mmgem's default sampler: the epoch split between ranks by
  stride),
* ``ExpertLocalitySampler()`` (its default, ``strict=False``: every image
  once per epoch, only the surplus of over-full ranks moves),
* ``ExpertLocalitySampler(strict=True)`` (every image on its expert's rank,
  surplus dropped, deficits filled by repeats),

runs forward + backward through the layers and reads the exchange's byte
counter. The plan's prediction is computed independently, from
``route_bucket`` of every drawn image: each token whose expert lives on
another rank goes there and back in forward and again in backward; it is
given for the measured iterations and as the mean over the whole epoch.

For the data mix, every rank's whole epoch is compared with the planned
epoch (``UODBSampler``'s: every image of the epoch's draw once, with its
round-up padding): the share of planned draws that no rank makes (dropped),
the share of draws beyond the planned ones (repeated), the largest
difference of a dataset's share of the epoch from its planned share (in
percentage points), and the ranks that draw from a single dataset.

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

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
from mmgem.utils import atomic_write  # noqa: E402
from tools.benchmark.routing import routing_from_plan  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
KINDS = ('UODBSampler', 'locality (default)', 'locality strict')


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
    from mmgem.models.layers import MoEFFN
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
        kind: dict(batches=[], sent=[], times=[], epoch=indices[kind])
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
            routing = routing_from_plan(
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


def owner_ranks(args, plan, dataset) -> np.ndarray:
    """The rank holding the planned expert of every image, from the plan."""
    from mmgem.planner.hashing import image_bucket, route_bucket
    per_rank = args.experts // args.world_size
    owners = np.empty(len(dataset), dtype=np.int64)
    for i in range(len(dataset)):
        d = int(dataset.sample_dataset_ids[i])
        bucket = image_bucket(dataset.dataset_names[d],
                              dataset.get_data_info(i)['img_id'])
        owners[i] = route_bucket(plan.quota[d], bucket) // per_rank
    return owners


def predicted_bytes(args, owners, batches_per_rank) -> List[float]:
    """Bytes each rank sends per iteration, from the plan alone."""
    row = args.tokens * args.embed_dims * 4
    out = []
    for it in range(min(len(b) for b in batches_per_rank)):
        owners_it = [[owners[i] for i in batches[it]]
                     for batches in batches_per_rank]
        for rank in range(args.world_size):
            leaving = sum(o != rank for o in owners_it[rank])
            # tokens of other ranks' images that this rank's experts serve
            served = sum(o == rank for r, os_ in enumerate(owners_it)
                         if r != rank for o in os_)
            out.append(2 * args.layers * (leaving + served) * row)
    return out


def epoch_batches(args, epoch: List[int]) -> List[List[int]]:
    """A rank's epoch cut into its batches."""
    return [epoch[i:i + args.batch]
            for i in range(0, len(epoch) - args.batch + 1, args.batch)]


def data_mix(dataset, planned: np.ndarray, lists: List[np.ndarray]) -> dict:
    """How the ranks' epochs differ from the planned epoch."""
    drawn = np.concatenate(lists)
    size = len(dataset)
    planned_counts = np.bincount(planned, minlength=size)
    drawn_counts = np.bincount(drawn, minlength=size)
    ids = dataset.sample_dataset_ids
    k = dataset.num_datasets
    planned_shares = np.bincount(ids[planned], minlength=k) / len(planned)
    drawn_shares = np.bincount(ids[drawn], minlength=k) / len(drawn)
    diff = drawn_shares - planned_shares
    worst = int(np.argmax(np.abs(diff)))
    return dict(
        dropped=np.clip(planned_counts - drawn_counts, 0, None).sum()
        / len(planned),
        repeated=np.clip(drawn_counts - planned_counts, 0, None).sum()
        / len(drawn),
        max_diff=float(abs(diff[worst])),
        worst=(dataset.dataset_names[worst], float(planned_shares[worst]),
               float(drawn_shares[worst])),
        single=[r for r, items in enumerate(lists)
                if len(np.unique(ids[items])) == 1])


def to_markdown(args, rows) -> str:
    lines = [
        f'# Expert-parallel exchange: bytes per iteration and data mix '
        f'({args.backend}, {args.world_size} ranks)', '',
        f'{args.layers} MoE layers x {args.experts} experts '
        f'({args.experts // args.world_size} per rank), {args.batch} images '
        f'per rank x {args.tokens} tokens x {args.embed_dims} channels '
        f'(fp32, hidden {args.hidden}), UODB sizes x {args.scale}, GEM plan '
        f'with label similarity and capacity factor 1.25; {args.iters} '
        f'iterations after one warm-up, forward + backward, samplers '
        f'interleaved (the time includes waiting for the slowest rank). '
        f'Data mix: every rank\'s whole epoch 0 against the planned epoch. '
        f'Host: {platform.processor() or "?"} {platform.machine()}, torch '
        f'{torch.__version__}.', '',
        '| sampler | measured MB/iter/rank | predicted (same iters) | '
        'predicted, epoch mean | dropped | repeated | largest share '
        'difference | single-dataset ranks | ms/iter |',
        '|---|---|---|---|---|---|---|---|---|'
    ]
    for r in rows:
        name, planned, drawn = r['mix']['worst']
        diff = (f"{100 * r['mix']['max_diff']:.1f} pts ({name} "
                f"{100 * planned:.1f}% -> {100 * drawn:.1f}%)"
                if r['mix']['max_diff'] > 0 else '0')
        lines.append(
            f"| {r['kind']} | {r['measured'] / 2**20:.2f} | "
            f"{r['predicted'] / 2**20:.2f} | {r['epoch'] / 2**20:.2f} | "
            f"{100 * r['mix']['dropped']:.1f}% | "
            f"{100 * r['mix']['repeated']:.1f}% | {diff} | "
            f"{r['mix']['single'] or 'none'} | {r['ms']:.1f} |")
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
    owners = owner_ranks(args, plan, dataset)
    planned = np.concatenate(
        [np.asarray(res['UODBSampler']['epoch']) for res in results])
    rows = []
    for kind in KINDS:
        measured = [s for res in results for s in res[kind]['sent']]
        predicted = predicted_bytes(
            args, owners, [res[kind]['batches'] for res in results])
        epoch = predicted_bytes(
            args, owners,
            [epoch_batches(args, res[kind]['epoch']) for res in results])
        times = [t for res in results for t in res[kind]['times']]
        lists = [np.asarray(res[kind]['epoch']) for res in results]
        rows.append(dict(kind=kind, measured=float(np.mean(measured)),
                         predicted=float(np.mean(predicted)),
                         epoch=float(np.mean(epoch)),
                         mix=data_mix(dataset, planned, lists),
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
