# Copyright (c) mmgem contributors. All rights reserved.
"""GEMDistributedDataParallel + GlobalNormOptimWrapper on 2 gloo processes.

A small MMEngine model (shared linear layers around an MoE FFN) trains for a
few steps on each rank's own batch, in data-parallel and in expert-parallel
mode, with clipping active. The reference is one process training the full
model on the mean of both ranks' losses (what DDP averages) with
``clip_grad_norm_``. Shared weights must be identical on both ranks, and
every weight must match the reference.
"""
import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from dist_utils import run_distributed
from mmengine.hooks import CheckpointHook
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from torch import nn

from mmgem.engine.hooks.expert_parallel_checkpoint_hook import ExpertParallelCheckpointHook
from mmgem.engine.hooks.expert_parallel_exchange_hook import ExpertParallelExchangeHook
from mmgem.engine.optim import GlobalNormOptimWrapper
from mmgem.engine.wrappers import GEMDistributedDataParallel
from mmgem.models.layers import BatchRouting, MoEFFN
from mmgem.planner.hashing import image_bucket, route_bucket

DIM, EXPERTS, STEPS, MAX_NORM = 8, 4, 3, 0.05
QUOTA = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=np.int64)


class ToyMoEModel(BaseModel):
    """Linear -> MoEFFN -> Linear with a mean loss."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(DIM, DIM)
        self.moe = MoEFFN(DIM, 2 * DIM, num_experts=EXPERTS)
        self.out = nn.Linear(DIM, DIM)

    def forward(self, inputs, ids=None, buckets=None, target=None,
                mode='loss'):
        routing = BatchRouting.from_plan(torch.from_numpy(QUOTA), ids, buckets)
        y = self.out(self.moe(self.inp(inputs), routing=routing))
        return dict(loss=((y - target)**2).mean())


def _batch(rank, step):
    """Rank 0's images use expert 0 only, rank 1's expert 3 only, except on
    the last step where both mix datasets (so experts 1-2 are used too)."""
    gen = torch.Generator().manual_seed(10 * step + rank)
    num = 3 + rank
    ids = torch.full((num, ), 0 if rank == 0 else 1)
    if step == STEPS - 1:
        ids = torch.tensor([2, 2, 0, 1][:num] + [2] * (num - 4))
    buckets = torch.tensor([image_bucket('toy', f'{rank}-{step}-{i}')
                            for i in range(num)])
    return dict(inputs=torch.randn(num, 5, DIM, generator=gen), ids=ids,
                buckets=buckets,
                target=torch.randn(num, 5, DIM, generator=gen))


def _train_reference(model):
    optim = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    for step in range(STEPS):
        optim.zero_grad()
        loss = sum(model(**_batch(r, step))['loss'] for r in range(2)) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        optim.step()
    return model


def _worker(rank, world_size, out_dir):
    return {mode: _train(rank, mode) for mode in (False, True)}


def _train(rank, expert_parallel):
    torch.manual_seed(0)
    model = ToyMoEModel()
    reference = _train_reference(copy.deepcopy(model))
    ddp = GEMDistributedDataParallel(model, expert_parallel=expert_parallel,
                                     device_ids=[0])
    optim = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    wrapper_type = GlobalNormOptimWrapper if expert_parallel else OptimWrapper
    wrapper = wrapper_type(optim, clip_grad=dict(max_norm=MAX_NORM))
    used = []
    for step in range(STEPS):
        batch = _batch(rank, step)
        used.append(sorted({
            route_bucket(QUOTA[int(d)], int(b))
            for d, b in zip(batch['ids'], batch['buckets'])
        }))
        ddp.train_step(batch, wrapper)
    if expert_parallel:
        _check_hook_errors(ddp)
    return dict(
        state={k: v.detach().clone() for k, v in model.state_dict().items()},
        reference=reference.state_dict(), used=used,
        ignored=getattr(model, '_ddp_params_and_buffers_to_ignore', []))


def _check_hook_errors(ddp):
    """The hooks refuse what would save rank 0's experts only."""
    loader = SimpleNamespace(sampler=None, batch_sampler=None)
    runner = SimpleNamespace(model=ddp, hooks=[CheckpointHook(interval=1)],
                             train_dataloader=loader)
    with pytest.raises(TypeError, match="checkpoint.type='ExpertParallel"):
        ExpertParallelExchangeHook().before_train(runner)
    with pytest.raises(RuntimeError, match='without gathering the experts'):
        ExpertParallelCheckpointHook().before_save_checkpoint(
            runner, dict(state_dict={}))


@pytest.fixture(scope='module')
def both_modes(tmp_path_factory):
    """Both modes, one after the other, on one pair of processes."""
    return run_distributed(_worker, 2, tmp_path_factory.mktemp('ddp'))


@pytest.fixture(params=[False, True], ids=['data_parallel', 'expert_parallel'])
def trained(request, both_modes):
    return request.param, [res[request.param] for res in both_modes]


def test_unused_experts_do_not_break_ddp(trained):
    _, results = trained
    # The first steps really leave experts unused on each rank.
    assert results[0]['used'][0] == [0] and results[1]['used'][0] == [3]


def test_shared_weights_identical_and_equal_to_reference(trained):
    expert_parallel, results = trained
    tol = dict(rtol=1e-5, atol=1e-6)
    experts = ('moe.w1', 'moe.b1', 'moe.w2', 'moe.b2')
    for rank, res in enumerate(results):
        if expert_parallel:
            assert res['ignored'] == sorted(experts)
        else:
            assert res['ignored'] == []
        for key, value in res['state'].items():
            ref = res['reference'][key]
            if key in experts and expert_parallel:
                assert value.size(0) == EXPERTS // 2
                ref = ref[2 * rank:2 * rank + 2]
            else:
                # shared (or replicated) weights: bit-identical on both ranks
                assert torch.equal(value, results[0]['state'][key]), key
            torch.testing.assert_close(value, ref, **tol, msg=key)
    # and training did change the weights
    assert not torch.allclose(results[0]['state']['inp.weight'],
                              _initial_inp_weight())


def _initial_inp_weight():
    torch.manual_seed(0)
    return ToyMoEModel().inp.weight.detach()
