# Copyright (c) mmgem contributors. All rights reserved.
"""Expert-parallel MoE FFN on 2 gloo processes against the full MoEFFN.

Every rank builds the same full :class:`MoEFFN` (same seed), converts a copy
to :class:`ExpertParallelMoEFFN` (rank 0 keeps experts 0-1, rank 1 experts
2-3) and runs both on its own batch (different sizes and token counts per
rank, as DINO's denoising queries give). Outputs and input gradients must
match the full layer on the same batch; the gradient of an expert on its
rank must equal the sum over both ranks of the full layer's gradients (each
rank's loss reaches the expert through the exchange).
"""
import copy

import numpy as np
import pytest
import torch
from dist_utils import run_distributed
from torch import nn

from mmgem.models.layers import MoEFFN
from mmgem.models.layers.ep_exchange_stats import exchange_stats
from mmgem.models.layers.expert_parallel import ExpertParallelMoEFFN, convert_to_expert_parallel
from mmgem.planner.hashing import image_bucket, route_bucket
from tools.benchmark.routing import routing_from_plan

DIM, HIDDEN, EXPERTS = 8, 16, 4
QUOTA = np.array([[3, 1, 0, 0], [0, 0, 2, 2], [1, 1, 1, 1]], dtype=np.int64)
# Images and tokens per image of each rank's batch.
BATCH = {0: (5, 7), 1: (3, 4)}
PARAMS = ('w1', 'b1', 'w2', 'b2')


def _images(rank, local_only):
    """(dataset ids, buckets) of rank's batch; with ``local_only`` every
    image's planned expert lives on ``rank``."""
    num_images = BATCH[rank][0]
    ids, buckets, i = [], [], 0
    while len(ids) < num_images:
        d = (i * 7 + rank) % 3
        b = image_bucket(f'set{d}', f'{rank}-{i}')
        i += 1
        if local_only and route_bucket(QUOTA[d], b) // 2 != rank:
            continue
        ids.append(d)
        buckets.append(b)
    return torch.tensor(ids), torch.tensor(buckets)


def _run(layer, rank, x, ids, buckets, upstream):
    torch.manual_seed(100 + rank)  # same gate noise for both layers
    x = x.clone().requires_grad_()
    out = layer(x, routing=routing_from_plan(torch.from_numpy(QUOTA), ids, buckets))
    loss = (out * upstream).sum()
    aux = layer.aux_loss()
    if aux is not None:
        loss = loss + 0.1 * aux
    loss.backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    return out.detach(), x.grad, grads, {} if aux is None else dict(aux=aux.detach())


CASES = [('gem', False), ('gem', True), ('damex', False), ('moe', False),
         ('SinkhornRouter', False)]


def _layer(routing):
    """A MoE FFN with a legacy routing name or a registered router type."""
    if routing in ('gem', 'damex', 'moe'):
        return MoEFFN(DIM, HIDDEN, num_experts=EXPERTS, routing=routing)
    return MoEFFN(DIM, HIDDEN, num_experts=EXPERTS, router=dict(type=routing))


def _case(rank, routing, local_only):
    torch.manual_seed(0)
    full = _layer(routing)
    ep = copy.deepcopy(full)
    assert convert_to_expert_parallel(ep) == ['']
    assert isinstance(ep, ExpertParallelMoEFFN) and ep.w1.size(0) == 2
    full.train()
    ep.train()

    gen = torch.Generator().manual_seed(rank)
    num_images, num_tokens = BATCH[rank]
    x = torch.randn(num_images, num_tokens, DIM, generator=gen)
    upstream = torch.randn(x.shape, generator=gen)
    ids, buckets = _images(rank, local_only)

    ref = _run(full, rank, x, ids, buckets, upstream)
    exchange_stats().reset()
    got = _run(ep, rank, x, ids, buckets, upstream)
    stats = exchange_stats().snapshot()
    experts = routing_from_plan(torch.from_numpy(QUOTA), ids, buckets).image_experts
    return dict(ref=ref, got=got, stats=stats, experts=experts,
                stats_ep=ep.routing_stats, stats_ref=full.routing_stats)


def _amp_images(rank):
    """Rank 0's images all go to expert 2 (rank 1 leaves its expert 3 idle),
    rank 1's to experts 0 and 1 (both of rank 0's experts busy)."""
    wanted = {0: {2: 4}, 1: {0: 2, 1: 2}}[rank]
    ids, buckets, i = [], [], 0
    while any(wanted.values()):
        d = i % 3
        b = image_bucket(f'set{d}', f'amp-{rank}-{i}')
        i += 1
        expert = route_bucket(QUOTA[d], b)
        if wanted.get(expert, 0) > 0:
            wanted[expert] -= 1
            ids.append(d)
            buckets.append(b)
    return torch.tensor(ids), torch.tensor(buckets)


def _amp_case(rank):
    """The layer under CPU bf16 autocast against the fp32 full layer."""
    torch.manual_seed(0)
    full = MoEFFN(DIM, HIDDEN, num_experts=EXPERTS)
    ep = copy.deepcopy(full)
    convert_to_expert_parallel(ep)
    gen = torch.Generator().manual_seed(20 + rank)
    x = torch.randn(4, 6, DIM, generator=gen)
    upstream = torch.randn(x.shape, generator=gen)
    ids, buckets = _amp_images(rank)
    ref = _run(full, rank, x, ids, buckets, upstream)
    exchange_stats().reset()
    xin = x.clone().requires_grad_()
    routing = routing_from_plan(torch.from_numpy(QUOTA), ids, buckets)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = ep(xin, routing=routing)
    (out.float() * upstream).sum().backward()
    got = (out.detach(), xin.grad,
           {n: p.grad.clone() for n, p in ep.named_parameters()})
    return dict(ref=ref, got=got, dtype=out.dtype,
                stats=exchange_stats().snapshot(),
                experts=routing.image_experts)


def _stack_case(rank):
    """Three MoE layers of one forward share its BatchRouting: the split
    sizes are gathered once per forward (on the host), not per layer."""
    import mmgem.models.layers.expert_parallel as ep_module
    torch.manual_seed(0)
    full = nn.ModuleList(MoEFFN(DIM, HIDDEN, num_experts=EXPERTS)
                         for _ in range(3))
    ep = copy.deepcopy(full)
    convert_to_expert_parallel(ep)
    gathers = []
    real = ep_module.gather_count_matrix

    def counting(counts, group=None):
        gathers.append(counts.device.type)
        return real(counts, group)

    ep_module.gather_count_matrix = counting
    try:
        outs = {}
        for name, layers in (('full', full), ('ep', ep)):
            x = torch.randn(*BATCH[rank], DIM,
                            generator=torch.Generator().manual_seed(rank))
            for forward in range(2):
                ids, buckets = _images(rank, local_only=False)
                routing = routing_from_plan(torch.from_numpy(QUOTA), ids,
                                                 buckets)
                y = x
                for layer in layers:
                    y = layer(y, routing=routing)
                outs[name, forward] = y.detach()
                gathers.append('|')
    finally:
        ep_module.gather_count_matrix = real
    return dict(outs=outs, gathers=gathers)


def _layer_worker(rank, world_size, out_dir):
    results = {case: _case(rank, *case) for case in CASES}
    results['amp'] = _amp_case(rank)
    results['stack'] = _stack_case(rank)
    results['errors'] = _errors(rank)
    return results


@pytest.fixture(scope='module')
def layer_results(tmp_path_factory):
    """Every case on one pair of processes (spawning costs seconds)."""
    return run_distributed(_layer_worker, 2, tmp_path_factory.mktemp('ep'))


@pytest.mark.parametrize('routing,local_only', CASES)
def test_expert_parallel_equals_full_layer(layer_results, routing,
                                           local_only):
    results = [res[(routing, local_only)] for res in layer_results]
    tol = dict(rtol=1e-5, atol=1e-5)
    summed = {
        n: results[0]['ref'][2][n] + results[1]['ref'][2][n]
        for n in PARAMS
    }
    for rank, res in enumerate(results):
        ref_out, ref_xgrad, ref_grads, ref_aux = res['ref']
        out, xgrad, grads, aux = res['got']
        torch.testing.assert_close(out, ref_out, **tol)
        torch.testing.assert_close(xgrad, ref_xgrad, **tol)
        for n in PARAMS:
            torch.testing.assert_close(grads[n],
                                       summed[n][2 * rank:2 * rank + 2],
                                       **tol)
        # the router is replicated: its gradient is this rank's own
        for n, g in ref_grads.items():
            if n.startswith('router'):
                torch.testing.assert_close(grads[n], g, **tol)
        assert aux.keys() == ref_aux.keys()
        for k in aux:
            torch.testing.assert_close(aux[k], ref_aux[k], **tol)
        assert res['stats_ep'].keys() == res['stats_ref'].keys()
        for k, v in res['stats_ref'].items():
            assert torch.equal(res['stats_ep'][k], v), k

    if routing != 'gem':
        return
    # Bytes moved: every token whose expert lives on the other rank goes
    # there and back in forward, and its gradient does the same in backward.
    for rank, res in enumerate(results):
        other = 1 - rank
        tokens_out = int((res['experts'] // 2 != rank).sum()) * BATCH[rank][1]
        tokens_in = int((results[other]['experts'] // 2 != other).sum()) * \
            BATCH[other][1]
        row_bytes = DIM * 4
        moved = 2 * (tokens_out + tokens_in) * row_bytes
        assert res['stats']['sent_bytes'] == moved
        assert res['stats']['received_bytes'] == moved
        if local_only:
            assert moved == 0 and res['stats']['exchanges'] == 0
        else:
            assert moved > 0 and res['stats']['exchanges'] == 4


def test_expert_parallel_under_bf16_autocast(layer_results):
    """Tokens move both ways and one rank has an idle local expert: the
    exchange still runs in one dtype (bf16, 2 bytes per number) and the
    result equals the fp32 layer within bf16 precision."""
    results = [res['amp'] for res in layer_results]
    tol = dict(rtol=2e-2, atol=2e-2)
    summed = {n: results[0]['ref'][2][n] + results[1]['ref'][2][n]
              for n in PARAMS}
    for rank, res in enumerate(results):
        ref_out, ref_xgrad, _, _ = res['ref']
        out, xgrad, grads = res['got']
        assert res['dtype'] == torch.float32  # back in the input's dtype
        torch.testing.assert_close(out, ref_out, **tol)
        torch.testing.assert_close(xgrad, ref_xgrad, **tol)
        for n in PARAMS:
            torch.testing.assert_close(grads[n], summed[n][2 * rank:2 * rank + 2],
                                       **tol)
        # every token leaves its rank, there and back, forward and backward
        other = 1 - rank
        tokens_out = int((res['experts'] // 2 != rank).sum()) * 6
        tokens_in = int((results[other]['experts'] // 2 != other).sum()) * 6
        assert tokens_out == tokens_in == 24
        assert res['stats']['sent_bytes'] == 2 * (tokens_out + tokens_in) * DIM * 2
    # rank 1's expert 3 got nothing, rank 0's experts both got tokens
    assert sorted(set(results[0]['experts'].tolist())) == [2]
    assert sorted(set(results[1]['experts'].tolist())) == [0, 1]


def test_gem_split_sizes_are_gathered_once_per_forward(layer_results):
    for res in layer_results:
        stack = res['stack']
        # the full layers gather nothing; the 3 expert-parallel layers of a
        # forward gather once, on the host
        assert stack['gathers'] == ['|', '|', 'cpu', '|', 'cpu', '|']
        for forward in range(2):
            torch.testing.assert_close(stack['outs']['ep', forward],
                                       stack['outs']['full', forward],
                                       rtol=1e-5, atol=1e-5)


def _errors(rank):
    with pytest.raises(ValueError, match='num_experts=3 and '
                       'expert_parallel_size=2'):
        ExpertParallelMoEFFN(DIM, HIDDEN, num_experts=3, num_datasets=3)
    with pytest.raises(ValueError, match='expert_parallel_size=3 must divide '
                       'the world size 2'):
        ExpertParallelMoEFFN(DIM, HIDDEN, num_experts=6,
                             expert_parallel_size=3)
    # A full checkpoint loads by slicing; a shard of another layout fails.
    torch.manual_seed(0)
    full = MoEFFN(DIM, HIDDEN, num_experts=EXPERTS)
    torch.manual_seed(0)
    ep = ExpertParallelMoEFFN(DIM, HIDDEN, num_experts=EXPERTS)
    # same seed: the shard is initialised as the full layer's slice, also
    # by DINO's per-expert xavier init (which leaves the biases alone)
    mine = slice(2 * rank, 2 * rank + 2)
    for _ in range(2):
        for name in PARAMS:
            torch.testing.assert_close(getattr(ep, name),
                                       getattr(full, name)[mine], rtol=0,
                                       atol=0)
        torch.manual_seed(1)
        full.xavier_init_experts()
        torch.manual_seed(1)
        ep.xavier_init_experts()
    ep.w1.data.zero_()
    ep.load_state_dict(full.state_dict())
    torch.testing.assert_close(ep.w1, full.w1[mine])
    bad = dict(full.state_dict(), w1=full.w1[:3].detach())
    with pytest.raises(RuntimeError, match='w1: the checkpoint holds 3 '
                       'experts, the layer has 4 experts'):
        ep.load_state_dict(bad)
    return True


def test_expert_parallel_errors_and_loading(layer_results):
    assert [res['errors'] for res in layer_results] == [True, True]
