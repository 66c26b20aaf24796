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
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from dist_utils import run_distributed
from mmengine.evaluator import BaseMetric
from mmengine.hooks import CheckpointHook
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

from mmgem.engine.hooks.expert_parallel_checkpoint_hook import ExpertParallelCheckpointHook
from mmgem.engine.hooks.expert_parallel_exchange_hook import ExpertParallelExchangeHook
from mmgem.engine.optim import GlobalNormOptimWrapper
from mmgem.engine.wrappers import GEMDistributedDataParallel
from mmgem.models.layers import MoEFFN
from mmgem.planner.hashing import image_bucket, route_bucket
from tools.benchmark.routing import routing_from_plan

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
        routing = routing_from_plan(torch.from_numpy(QUOTA), ids, buckets)
        y = self.out(self.moe(self.inp(inputs), routing=routing))
        if mode == 'predict':
            return list(y.detach())
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


def _train_reference(model, make_optim=None, batch=None, world_size=2):
    """One process on the mean of every rank's loss, clipping by the norm."""
    make_optim = make_optim or (lambda params: torch.optim.AdamW(
        params, lr=0.01, weight_decay=0.1))
    batch = batch or _batch
    optim = make_optim(model.parameters())
    for step in range(STEPS):
        optim.zero_grad()
        loss = sum(model(**batch(r, step))['loss']
                   for r in range(world_size)) / world_size
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        optim.step()
    return model


def _worker(rank, world_size, out_dir):
    results = {mode: _train(rank, mode) for mode in (False, True)}
    results['gathers'] = {best: _gathers_in_runner(out_dir, best)
                          for best in (True, False)}
    return results


class _ToySet(Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, idx):
        gen = torch.Generator().manual_seed(idx)
        return dict(inputs=torch.randn(5, DIM, generator=gen),
                    ids=torch.tensor(idx % 3),
                    buckets=torch.tensor(image_bucket('toy', str(idx))),
                    target=torch.randn(5, DIM, generator=gen))


class _ScheduledMetric(BaseMetric):
    """Scores 1, 0.5, 2 at the three validations: best, not best, best."""

    SCORES = (1.0, 0.5, 2.0)

    def __init__(self):
        super().__init__()
        self.calls = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        self.calls += 1
        return dict(score=self.SCORES[self.calls - 1])


def _gathers_in_runner(out_dir, save_best):
    """A Runner validating after every iteration: which saves gathered."""
    loader = dict(dataset=_ToySet(), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    hook = dict(type='ExpertParallelCheckpointHook', interval=100,
                by_epoch=False, save_best='score' if save_best else None,
                rule='greater')
    runner = Runner(
        model=ToyMoEModel(), work_dir=f'{out_dir}/gathers_{save_best}',
        train_dataloader=loader, val_dataloader=loader,
        val_evaluator=[_ScheduledMetric()], val_cfg=dict(),
        train_cfg=dict(by_epoch=False, max_iters=3, val_interval=1),
        optim_wrapper=dict(type='GlobalNormOptimWrapper',
                           optimizer=dict(type='AdamW', lr=0.01)),
        default_hooks=dict(checkpoint=hook), launcher='pytorch',
        env_cfg=dict(dist_cfg=dict(backend='gloo')), default_scope='mmdet',
        log_level='WARNING',
        cfg=dict(model_wrapper_cfg=dict(type='GEMDistributedDataParallel',
                                        expert_parallel=True)))
    ckpt_hook = next(h for h in runner.hooks
                     if isinstance(h, ExpertParallelCheckpointHook))
    gathers = []
    original = ckpt_hook.gather_experts

    def gather_experts(r, *args):
        gathers.append((r.iter, args[0] if args else True))
        return original(r, *args)

    ckpt_hook.gather_experts = gather_experts
    runner.train()
    files = sorted(os.listdir(runner.work_dir))
    best = [f for f in files if f.startswith('best_')]
    experts = None
    if best:
        state = torch.load(f'{runner.work_dir}/{best[-1]}', weights_only=False)
        experts = state['state_dict']['moe.w1'].size(0)
        assert 'optimizer' not in state
    return dict(gathers=gathers, files=files, best_experts=experts)


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


# ----------------------------------------------------------------------
# 4 ranks, expert_parallel_size=2: every expert has two replicas
# ----------------------------------------------------------------------
OPTIMIZERS = {
    'sgd': lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    'adamw': lambda params: torch.optim.AdamW(params, lr=0.01,
                                              weight_decay=0.1),
}


def _batch4(rank, step):
    """Rank r draws 2 + r images; ranks 0 and 2 (EP rank 0, experts 0-1) and
    ranks 1 and 3 (experts 2-3) see different datasets, so every exchange
    moves tokens and the replicas of an expert get different gradients."""
    gen = torch.Generator().manual_seed(100 * step + rank)
    num = 2 + rank
    ids = torch.tensor([(rank + step + i) % 3 for i in range(num)])
    buckets = torch.tensor([image_bucket('toy4', f'{rank}-{step}-{i}')
                            for i in range(num)])
    return dict(inputs=torch.randn(num, 5, DIM, generator=gen), ids=ids,
                buckets=buckets,
                target=torch.randn(num, 5, DIM, generator=gen))


def _replica_worker(rank, world_size, out_dir):
    results = {}
    for name, make_optim in OPTIMIZERS.items():
        torch.manual_seed(0)
        model = ToyMoEModel()
        reference = _train_reference(copy.deepcopy(model), make_optim,
                                     _batch4, world_size=4)
        ddp = GEMDistributedDataParallel(model, expert_parallel=True,
                                         expert_parallel_size=2)
        wrapper = GlobalNormOptimWrapper(make_optim(model.parameters()),
                                         clip_grad=dict(max_norm=MAX_NORM))
        norms = []
        for step in range(STEPS):
            ddp.train_step(_batch4(rank, step), wrapper)
            norms.append(wrapper.message_hub.get_scalar(
                'train/grad_norm').current())
        results[name] = dict(
            state={k: v.detach().clone() for k, v in model.state_dict().items()},
            reference=reference.state_dict(), norms=norms,
            topology=(ddp.topology.ep_group_ranks,
                      ddp.topology.replica_group_ranks))
    return results


@pytest.fixture(scope='module')
def replicas(tmp_path_factory):
    return run_distributed(_replica_worker, 4, tmp_path_factory.mktemp('rep'))


@pytest.mark.parametrize('optimizer', sorted(OPTIMIZERS))
def test_replica_groups_equal_one_process(replicas, optimizer):
    results = [res[optimizer] for res in replicas]
    assert [res['topology'] for res in results] == [
        ((0, 1), (0, 2)), ((0, 1), (1, 3)), ((2, 3), (0, 2)), ((2, 3), (1, 3))]
    experts = ('moe.w1', 'moe.b1', 'moe.w2', 'moe.b2')
    tol = dict(rtol=1e-5, atol=1e-6)
    for rank, res in enumerate(results):
        # clipping really was active: the global norm exceeded max_norm
        assert all(n > MAX_NORM for n in res['norms'])
        assert res['norms'] == results[0]['norms']
        ep_rank = rank % 2
        for key, value in res['state'].items():
            ref = res['reference'][key]
            if key in experts:
                assert value.size(0) == EXPERTS // 2
                ref = ref[2 * ep_rank:2 * ep_rank + 2]
                # the replica (same EP rank, other EP group) is bit-identical
                assert torch.equal(value, results[(rank + 2) % 4]['state'][key])
            else:
                assert torch.equal(value, results[0]['state'][key]), key
            torch.testing.assert_close(value, ref, **tol, msg=key)


def test_checkpoint_hook_gathers_only_when_it_saves(both_modes):
    for res in both_modes:
        with_best, without = res['gathers'][True], res['gathers'][False]
        # validation 1: a new best (weights only); validation 2: no new
        # best, no gather; iteration 3: the last checkpoint (with optimizer);
        # validation 3: a new best, and MMEngine saves the last checkpoint
        # again to record it
        assert with_best['gathers'] == [(1, False), (2, True), (3, False),
                                        (3, True)]
        assert with_best['best_experts'] == EXPERTS
        # without save_best the validations gather nothing
        assert without['gathers'] == [(2, True)]
        assert 'iter_3.pth' in without['files']


def _initial_inp_weight():
    torch.manual_seed(0)
    return ToyMoEModel().inp.weight.detach()
