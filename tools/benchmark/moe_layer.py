# Copyright (c) mmgem contributors. All rights reserved.
"""Benchmark every MoE router at DINO decoder shapes, forward + backward.

Compares, side by side in one process and on the same inputs:

* ``dense``: mmcv's ``FFN`` (what DINO's decoder layers use);
* every router of ``--routers`` (default: all of mmgem's), each inside
  :class:`mmgem.models.MoEFFN` with experts upcycled from the same dense
  FFNs: ``gem`` (images grouped by their planned expert, each active expert
  run once), ``damex`` / ``moe`` (learned top-1 token routers, capacity
  factor 1.25), ``sinkhorn`` (balanced top-1), ``soft_moe`` (slots,
  ``--queries / --experts`` per expert), ``remoe`` (ReLU gates),
  ``moe_plus_plus`` (FFN + zero-computation experts, top-2), ``mumoe``
  (CP-factorised experts, rank matched to the experts' parameters, every
  token through the entmax-weighted mixture; upcycled exactly, GELU).

Each measurement is forward + backward through ``--layers`` stacked layers
(3 MoE layers' worth, as GEM-DINO's decoder layers 0, 2, 4) on
``(batch, queries + dn_queries, embed_dims)`` tokens (``--dn-groups``
denoising groups lead every image, which Soft MoE keeps apart). The images
of a batch come from distinct datasets of an 11-dataset plan over 8
experts (image i from dataset i), the worst case for ``gem``: as many
experts active as the batch allows. The top-1 token routers start balanced
(zero gate weights plus the gate noise: the state their load loss drives
them to); the table reports their drop rate. The median of ``--repeats``
runs after ``--warmup`` runs is reported; methods are interleaved so that
drifts of the machine hit them alike. On CUDA the peak memory of one step
above the memory held before it is reported per method.

Usage::

    python tools/benchmark/moe_layer.py --device cpu
    python tools/benchmark/moe_layer.py --device cuda

The markdown table is printed and written atomically to ``--out``
(``tools/benchmark/results/moe_layer[_<device>].md`` by default).
Targets: gem / dense <= 1.10 and moe / gem >= 1.3.
"""
import argparse
import dataclasses
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
from mmgem.models.routers import router_class  # noqa: E402
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


#: The routers timed by default: name -> router config.
ROUTERS = dict(
    gem=dict(type='GEMRouter'),
    damex=dict(type='DAMEXRouter'),
    moe=dict(type='Top1Router'),
    sinkhorn=dict(type='SinkhornRouter'),
    soft_moe=dict(type='SoftMoERouter'),
    remoe=dict(type='ReMoERouter', num_active=1),
    moe_plus_plus=dict(type='MoEPlusPlusRouter'),
    mumoe=dict(type='MuMoERouter'),
)


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
    parser.add_argument('--dn-groups', type=int, default=10)
    parser.add_argument('--routers', nargs='+', default=list(ROUTERS),
                        help=f'routers to time, of {list(ROUTERS)}')
    return parser.parse_args()


def router_cfg(name: str, args) -> dict:
    """The router config of ``name``, sized for the benchmark's shapes."""
    cfg = dict(ROUTERS[name])
    if cfg['type'] == 'SoftMoERouter':
        cfg['num_slots'] = max(1, round(args.queries / args.experts))
    return cfg


def build_stacks(args, device) -> Dict[str, nn.ModuleList]:
    """``--layers`` layers of each method, experts copied from dense FFNs."""
    dense = nn.ModuleList([
        FFN(args.embed_dims, args.hidden, num_fcs=2, ffn_drop=0.)
        for _ in range(args.layers)
    ])
    stacks = dict(dense=dense)
    for name in args.routers:
        layers = nn.ModuleList()
        for ffn in dense:
            layer = MoEFFN(
                args.embed_dims,
                args.hidden,
                num_experts=args.experts,
                router=router_cfg(name, args),
                capacity_factor=args.capacity_factor)
            layer.upcycle_from_ffn(ffn)
            gate = getattr(layer.router, 'gate', None)
            if router_class(ROUTERS[name]).aux_loss_uses_token_mask or name == 'damex':
                nn.init.zeros_(gate.weight)  # balanced start of the top-1 routers
            layers.append(layer)
        stacks[name] = layers
    return {k: v.to(device).train() for k, v in stacks.items()}


def peak_memory(step: Callable[[], None], device) -> float:
    """MiB one step allocates above what is held before it (CUDA only)."""
    if device.type != 'cuda':
        return float('nan')
    synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def make_step(stack: nn.ModuleList, x: torch.Tensor,
              routing: dict) -> Callable[[], None]:

    def step() -> None:
        for p in stack.parameters():
            p.grad = None
        y = x
        # a fresh BatchRouting per forward, as the detector makes: values that
        # layers share within one forward (MoE++'s gating residual) start empty
        kwargs = {k: dataclasses.replace(v, shared={}) for k, v in routing.items()}
        for layer in stack:
            y = layer(y, **kwargs) if isinstance(layer, MoEFFN) else layer(y)
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
    unknown = sorted(set(args.routers) - set(ROUTERS))
    if unknown:
        raise SystemExit(f'unknown routers {unknown}; known: {list(ROUTERS)}')
    clock = setup_timing(args)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    stacks = build_stacks(args, device)
    gen = torch.Generator().manual_seed(args.seed)
    tokens = args.queries + args.dn_queries
    methods = ['dense'] + list(args.routers)
    rows = []
    for batch in args.batch_sizes:
        x = torch.randn(batch, tokens, args.embed_dims, generator=gen)
        x = x.to(device).requires_grad_()
        dataset_ids = torch.arange(batch) % len(PLAN)
        buckets = torch.tensor(
            [image_bucket(f'dataset{int(d)}', i)
             for i, d in enumerate(dataset_ids)])
        # the detector looks the plan up once per forward, on the host
        routing = routing_from_plan(
            torch.tensor(PLAN)[:, :args.experts], dataset_ids, buckets)
        groups = args.dn_groups if args.dn_queries % max(args.dn_groups, 1) == 0 else 1
        routing.num_denoising_queries = args.dn_queries
        routing.num_denoising_groups = groups if args.dn_queries else 0
        steps = {
            name: make_step(stacks[name], x, {} if name == 'dense' else dict(routing=routing))
            for name in methods
        }
        ms = time_steps(steps, device, args.warmup, args.repeats, clock)
        mem = {name: peak_memory(step, device) for name, step in steps.items()}
        drop = {}
        for name in args.routers:
            stats = [layer.routing_stats for layer in stacks[name]]
            dropped = sum(int(s['dropped_tokens']) for s in stats)
            drop[name] = dropped / (len(stats) * batch * tokens)
        rows.append((batch, ms, mem, drop))

    lines = [
        f'MoE FFN forward + backward, {args.layers} layers of '
        f'{args.embed_dims}->{args.hidden}->{args.embed_dims}, '
        f'{args.experts} experts, {args.queries}+{args.dn_queries} queries '
        f'({args.dn_groups} denoising groups), capacity factor '
        f'{args.capacity_factor} (top-1 routers); median of {args.repeats} after '
        f'{args.warmup} warm-up runs ({args.clock} time) on {device_name(device)}, torch '
        f'{torch.__version__}.', '',
        '| batch | method | ms | / dense | / gem | dropped % | peak MiB |',
        '|---|---|---|---|---|---|---|'
    ]
    for batch, ms, mem, drop in rows:
        for name in methods:
            vs_gem = f"{ms[name] / ms['gem']:.3f}" if 'gem' in ms else '-'
            dropped = f'{100 * drop[name]:.1f}' if name in drop else '-'
            peak = '-' if mem[name] != mem[name] else f'{mem[name]:.0f}'
            lines.append(f"| {batch} | {name} | {ms[name]:.1f} | "
                         f"{ms[name] / ms['dense']:.3f} | {vs_gem} | {dropped} | {peak} |")
    lines += ['', 'Targets: gem / dense <= 1.10, moe / gem >= 1.3. '
              'Peak memory is measured on CUDA only.']
    text = '\n'.join(lines) + '\n'
    print(text)
    out = args.out or osp.join(
        osp.dirname(osp.abspath(__file__)), 'results',
        f'moe_layer_{device.type}.md')
    atomic_write(out, text)
    print(f'written to {out}')


if __name__ == '__main__':
    main()
