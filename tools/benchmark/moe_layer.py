# Copyright (c) mmgem contributors. All rights reserved.
"""Benchmark the MoE FFN layer at DINO decoder shapes, forward + backward.

Compares, side by side in one process and on the same inputs:

* ``dense``: mmcv's ``FFN`` (what DINO's decoder layers use);
* ``gem``: :class:`mmgem.models.MoEFFN` with ``routing='gem'`` (images
  grouped by their planned expert, each active expert run once);
* ``token``: the same layer with a learned top-1 token router and capacity
  factor 1.25 (``routing='moe'``; ``'damex'`` shares the dispatch).

Each measurement is forward + backward through ``--layers`` stacked layers
(3 MoE layers' worth, as GEM-DINO's decoder layers 0, 2, 4) on
``(batch, queries + dn_queries, embed_dims)`` tokens. The images of a batch
come from distinct datasets of an 11-dataset plan over 8 experts (image i
from dataset i), the worst case for ``gem``: as many experts active as the
batch allows. The token router starts balanced (zero gate weights plus the
gate noise: the state its load loss drives it to), so it drops few tokens
and does the same work as the others; the table reports its drop rate. The median of
``--repeats`` runs after ``--warmup`` runs is reported; methods are
interleaved so that drifts of the machine hit them alike.

Usage::

    python tools/benchmark/moe_layer.py --device cpu
    python tools/benchmark/moe_layer.py --device cuda

The markdown table is printed and written atomically to ``--out``
(``tools/benchmark/results/moe_layer[_<device>].md`` by default).
Targets: gem / dense <= 1.10 and token / gem >= 1.3.
"""
import argparse
import os.path as osp
import statistics
from typing import Callable, Dict, List

import torch
from mmcv.cnn.bricks.transformer import FFN
from torch import nn

if not __package__:  # run by path: make the `tools` package importable
    from mmgem.utils.tool_scripts import import_tools_beside
    import_tools_beside(__file__)
from mmgem.models.layers import MoEFFN  # noqa: E402
from mmgem.planner.hashing import image_bucket  # noqa: E402
from mmgem.utils import atomic_write  # noqa: E402
from tools.benchmark.routing import routing_from_plan  # noqa: E402
from tools.benchmark.timing import add_timing_args, device_name, setup_timing, synchronize  # noqa: E402

# 11 UODB-like datasets over 8 experts: 5 datasets alone, 3 pairs sharing
# an expert, and the largest dataset sharded over two experts.
PLAN = [[1000, 1000, 0, 0, 0, 0, 0, 0], [0, 0, 500, 0, 0, 0, 0, 0],
        [0, 0, 0, 500, 0, 0, 0, 0], [0, 0, 0, 0, 400, 0, 0, 0],
        [0, 0, 0, 0, 0, 300, 0, 0], [0, 0, 0, 0, 0, 0, 300, 0],
        [0, 0, 0, 0, 0, 0, 0, 200], [0, 0, 200, 0, 0, 0, 0, 0],
        [0, 0, 0, 100, 0, 0, 0, 0], [0, 0, 0, 0, 100, 0, 0, 0],
        [0, 0, 0, 0, 0, 100, 0, 0]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_timing_args(parser, warmup=3, repeats=15)
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[2, 8])
    parser.add_argument('--queries', type=int, default=900)
    parser.add_argument('--dn-queries', type=int, default=200)
    parser.add_argument('--embed-dims', type=int, default=256)
    parser.add_argument('--hidden', type=int, default=2048)
    parser.add_argument('--experts', type=int, default=8)
    parser.add_argument('--layers', type=int, default=3)
    parser.add_argument('--capacity-factor', type=float, default=1.25)
    return parser.parse_args()


def build_stacks(args, device) -> Dict[str, nn.ModuleList]:
    """``--layers`` layers of each method, experts copied from dense FFNs."""
    dense = nn.ModuleList([
        FFN(args.embed_dims, args.hidden, num_fcs=2, ffn_drop=0.)
        for _ in range(args.layers)
    ])
    stacks = dict(dense=dense)
    for name, routing in (('gem', 'gem'), ('token', 'moe')):
        layers = nn.ModuleList()
        for ffn in dense:
            layer = MoEFFN(
                args.embed_dims,
                args.hidden,
                num_experts=args.experts,
                routing=routing,
                capacity_factor=args.capacity_factor)
            layer.upcycle_from_ffn(ffn)
            if layer.router is not None:
                nn.init.zeros_(layer.router.gate.weight)
            layers.append(layer)
        stacks[name] = layers
    return {k: v.to(device).train() for k, v in stacks.items()}


def make_step(stack: nn.ModuleList, x: torch.Tensor,
              routing: dict) -> Callable[[], None]:

    def step() -> None:
        for p in stack.parameters():
            p.grad = None
        y = x
        for layer in stack:
            y = layer(y, **routing) if isinstance(layer, MoEFFN) else layer(y)
        y.float().pow(2).mean().backward()

    return step


def time_steps(steps: Dict[str, Callable[[], None]], device, warmup: int,
               repeats: int, clock: Callable[[], float]) -> Dict[str, float]:
    """Median milliseconds of each step, interleaving the methods."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    synchronize(device)
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            synchronize(device)
            start = clock()
            step()
            synchronize(device)
            times[name].append((clock() - start) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    args = parse_args()
    clock = setup_timing(args)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    stacks = build_stacks(args, device)
    gen = torch.Generator().manual_seed(args.seed)
    tokens = args.queries + args.dn_queries
    rows = []
    for batch in args.batch_sizes:
        x = torch.randn(batch, tokens, args.embed_dims, generator=gen)
        x = x.to(device).requires_grad_()
        dataset_ids = torch.arange(batch) % len(PLAN)
        buckets = torch.tensor(
            [image_bucket(f'dataset{int(d)}', i)
             for i, d in enumerate(dataset_ids)])
        # the detector looks the plan up once per forward, on the host
        routing = dict(routing=routing_from_plan(
            torch.tensor(PLAN)[:, :args.experts], dataset_ids, buckets))
        steps = {
            'dense': make_step(stacks['dense'], x, {}),
            'gem': make_step(stacks['gem'], x, routing),
            'token': make_step(stacks['token'], x, {}),
        }
        ms = time_steps(steps, device, args.warmup, args.repeats, clock)
        active = int(
            (stacks['gem'][0].routing_stats['expert_tokens'] > 0).sum())
        stats = [layer.routing_stats for layer in stacks['token']]
        dropped = sum(int(s['dropped_tokens']) for s in stats)
        drop = dropped / (len(stats) * batch * tokens)
        rows.append((batch, active, drop, ms))

    lines = [
        f'MoE FFN forward + backward, {args.layers} layers of '
        f'{args.embed_dims}->{args.hidden}->{args.embed_dims}, '
        f'{args.experts} experts, {args.queries}+{args.dn_queries} queries, '
        f'capacity factor {args.capacity_factor} (token router); '
        f'median of {args.repeats} after {args.warmup} warm-up runs '
        f'({args.clock} time) on {device_name(device)}, torch '
        f'{torch.__version__}.', '',
        '| batch | active experts (gem) | dense ms | gem ms | token ms '
        '| token drop % | gem / dense | token / gem |',
        '|---|---|---|---|---|---|---|---|'
    ]
    for batch, active, drop, ms in rows:
        lines.append(
            f"| {batch} | {active} | {ms['dense']:.1f} | {ms['gem']:.1f} | "
            f"{ms['token']:.1f} | {100 * drop:.1f} | "
            f"{ms['gem'] / ms['dense']:.3f} | {ms['token'] / ms['gem']:.3f} |")
    lines += ['', 'Targets: gem / dense <= 1.10, token / gem >= 1.3.']
    text = '\n'.join(lines) + '\n'
    print(text)
    out = args.out or osp.join(
        osp.dirname(osp.abspath(__file__)), 'results',
        f'moe_layer_{device.type}.md')
    atomic_write(out, text)
    print(f'written to {out}')


if __name__ == '__main__':
    main()
