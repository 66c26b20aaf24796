# Copyright (c) mmgem contributors. All rights reserved.
"""Tiny GEM-DINO on tiny mini-UODB with MMEngine's Runner on 2 gloo ranks.

1. One process trains 1 iteration of ``gem-dino-tiny_r18_mini-uodb_ep.py``
   (no process group: plain single-process training) and saves a
   checkpoint; its raw head outputs on two fixed batches are the reference.
2. Two processes load that checkpoint in expert-parallel mode (each keeps
   its 2 of the 4 experts): head outputs on the same batches must match the
   single process (1 rank -> 2 ranks). They train 2 iterations with the
   strict locality sampler (the exchange must move 0 bytes) and save a
   checkpoint through ExpertParallelCheckpointHook; shared parameters must
   be identical on both ranks. The experts' AdamW moments in the checkpoint
   must equal those the ranks held right before the save.
3. One process loads the 2-rank checkpoint into the data-parallel model: it
   holds all experts (with their optimizer moments) and its head outputs
   equal the 2-rank model's on rank 0, whose BN statistics the checkpoint
   keeps (2 ranks -> 1 rank).
4. Data parallel, in the same two processes: 3 iterations with MMEngine's
   own ``MMDistributedDataParallel`` and no ``find_unused_parameters``,
   although the ranks' batches leave experts unused: every weight stays
   identical on both ranks.
"""
import os.path as osp

import pytest
import torch
import torch.distributed as dist
from dist_utils import run_distributed
from mmdet.registry import DATASETS, MODELS
from mmengine.dataset import pseudo_collate
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint_to_model
from runner_utils import import_mmgem, tiny_ep_config

from mmgem.engine.hooks.expert_parallel_checkpoint_hook import ExpertParallelCheckpointHook
from mmgem.engine.runner import build_runner, load_checkpoint_file

# one image of each domain per batch (the test split lists 8 per domain)
BATCHES = {0: [0, 8, 16, 24], 1: [32, 40, 4, 12]}
EXPERT_KEYS = ('w1', 'b1', 'w2', 'b2')


def _config(data_root, work_dir, max_iters, **extra):
    return tiny_ep_config(data_root, work_dir, max_iters, **extra)


_BATCH_CACHE = {}


def _batch(cfg, rank):
    """The rank's fixed test batch (built once per process)."""
    key = (cfg.test_dataloader.dataset.data_root, rank)
    if key not in _BATCH_CACHE:
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        for r, indices in BATCHES.items():
            _BATCH_CACHE[key[:1] + (r, )] = [dataset[i] for i in indices]
    return pseudo_collate(_BATCH_CACHE[key])


def _head_outputs(model, cfg, rank):
    """Raw head outputs (``mode='tensor'``) on the rank's fixed batch.

    With one thread, as the spawned ranks: DINO picks its queries by top-k
    of the encoder's scores, and a different summation order can flip a
    near tie and change a query completely.
    """
    data = _batch(cfg, rank)
    was_training = model.training
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.eval()
    try:
        with torch.no_grad():
            data = model.data_preprocessor(data, False)
            outs = model(**data, mode='tensor')
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)
    return [o.detach().clone() for o in outs]


class _RecordOutputs(Hook):
    """Head outputs once the checkpoint is loaded, before training."""

    priority = 'LOWEST'

    def __init__(self, cfg, rank):
        self.cfg, self.rank, self.outputs = cfg, rank, None

    def before_train(self, runner):
        self.outputs = _head_outputs(runner.model.module, self.cfg, self.rank)


class _RecordMoments(Hook):
    """Every expert shard's optimizer state right before the last save
    (CheckpointHook saves in after_train_iter with priority VERY_LOW)."""

    priority = 'NORMAL'

    def __init__(self):
        self.moments = None

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 != runner.max_iters:
            return
        optim = runner.optim_wrapper.optimizer
        self.moments = {
            f'{name}.{pname}': {k: v.clone() for k, v in optim.state[p].items()
                                if k in ('exp_avg', 'exp_avg_sq')}
            for name, m in runner.model.module.named_modules()
            if hasattr(m, 'expert_parameters')
            for pname, p in m.expert_parameters()
        }


class _RecordExperts(Hook):
    """Experts each MoE layer used in every training iteration."""

    def __init__(self):
        self.used = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        ffns = runner.model.module.moe_ffns()
        self.used.append([
            torch.nonzero(f.routing_stats['expert_tokens']).flatten().tolist()
            for f in ffns
        ])


def _data_parallel_run(rank, out_dir, data_root, ckpt):
    """MMEngine's own DDP wrapper, every expert on every rank, no
    find_unused_parameters (device_ids=None: CPU)."""
    cfg = _config(data_root, osp.join(out_dir, 'dp'), max_iters=3,
                  launcher='pytorch', load_from=ckpt)
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel',
                                 device_ids=None)
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.default_hooks.checkpoint.type = 'CheckpointHook'
    cfg.train_dataloader.sampler = dict(type='UODBSampler', shuffle=True)
    cfg.custom_hooks = cfg.custom_hooks[:1]
    assert 'find_unused_parameters' not in cfg
    runner = build_runner(cfg)
    record = _RecordExperts()
    runner.register_hook(record)
    runner.train()
    model = runner.model.module
    return dict(used=record.used,
                params={n: p.detach().clone()
                        for n, p in model.named_parameters()})


def _two_rank_worker(rank, world_size, out_dir, data_root, ckpt):
    dp = _data_parallel_run(rank, out_dir, data_root, ckpt)
    # load_from: the 1-rank checkpoint with all 4 experts
    cfg = _config(data_root, osp.join(out_dir, 'two'), max_iters=2,
                  launcher='pytorch', load_from=ckpt)
    # strict: every image on its expert's rank, nothing exchanged
    cfg.train_dataloader.sampler.strict = True
    runner = build_runner(cfg)
    record = _RecordOutputs(cfg, rank)
    moments = _RecordMoments()
    runner.register_hook(record)
    runner.register_hook(moments)
    model = runner.model.module
    runner.train()
    loaded = record.outputs
    exchange = runner.message_hub.get_scalar('train/exchange_MB').data[0]
    optim = runner.optim_wrapper.optimizer
    w1 = model.decoder.layers[0].ffn.w1
    # resume path: the hook slices this rank's part of the gathered moments
    dist.barrier()  # rank 0 has written iter_2.pth
    saved = torch.load(osp.join(cfg.work_dir, 'iter_2.pth'),
                       map_location='cpu', weights_only=False)
    hook = next(h for h in runner.hooks
                if isinstance(h, ExpertParallelCheckpointHook))
    hook.after_load_checkpoint(runner, saved)
    index = next(i for i, p in enumerate(
        p for g in optim.param_groups for p in g['params']) if p is w1)
    resumed = saved['optimizer']['state'][index]['exp_avg']
    return dict(
        loaded=loaded,
        # both batches on both ranks (each call is collective); rank 0's
        # BN statistics are the ones a checkpoint keeps
        trained={b: _head_outputs(model, cfg, b)
                 for b in BATCHES},
        state={k: v.detach().clone() for k, v in model.state_dict().items()},
        plan_hash=model.installed_plan_hash(),
        moments=moments.moments,
        resumed_exp_avg_w1=resumed,
        exchange_MB=list(exchange),
        data_parallel=dp,
        param_names=[n for n, _ in model.named_parameters()],
        converted=runner.model.converted_layers)


@pytest.fixture(scope='module')
def runs(mini_uodb_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('runner')
    import_mmgem()
    init_default_scope('mmdet')
    # 1. one process, one iteration
    cfg1 = _config(mini_uodb_root, tmp / 'one', max_iters=1)
    runner = build_runner(cfg1)
    runner.train()
    ckpt1 = str(tmp / 'one' / 'iter_1.pth')
    checkpoint1 = torch.load(ckpt1, map_location='cpu', weights_only=False)
    reference = {r: _head_outputs(runner.model, cfg1, r) for r in BATCHES}
    # 2. two processes, expert parallel
    results = run_distributed(_two_rank_worker, 2, tmp, str(mini_uodb_root),
                              ckpt1)
    # 3. one process loads the 2-rank checkpoint
    ckpt2 = str(tmp / 'two' / 'iter_2.pth')
    model = MODELS.build(cfg1.model)
    checkpoint = _load_checkpoint_to_model(
        model, load_checkpoint_file(ckpt2, map_location='cpu'), strict=True)
    reloaded = {r: _head_outputs(model, cfg1, r) for r in BATCHES}
    return dict(reference=reference, results=results, reloaded=reloaded,
                checkpoint=checkpoint, checkpoint1=checkpoint1)


TOL = dict(rtol=1e-5, atol=1e-5)


def test_one_rank_checkpoint_loads_into_two_ranks(runs):
    results = runs['results']
    assert results[0]['converted'] == [
        'decoder.layers.0.ffn', 'decoder.layers.2.ffn'
    ]
    for rank, res in enumerate(results):
        for got, ref in zip(res['loaded'], runs['reference'][rank]):
            torch.testing.assert_close(got, ref, **TOL)


def test_shared_parameters_identical_after_training(runs):
    states = [res['state'] for res in runs['results']]
    params = runs['results'][0]['param_names']
    experts = [k for k in params if k.rsplit('.', 1)[-1] in EXPERT_KEYS
               and '.ffn.' in k]
    assert len(experts) == 8 and all(states[0][k].size(0) == 2
                                     for k in experts)
    # BN running statistics are per rank (MMEngine's broadcast_buffers=False)
    # but the plan is the same everywhere
    plans = [res['plan_hash'] for res in runs['results']]
    assert plans[0] and plans[0] == plans[1]
    shared = [k for k in params if k not in experts] + ['routing_table._extra_state']
    assert len(shared) > 100
    for key in shared:
        assert torch.equal(states[0][key], states[1][key]), key
    for key in experts:
        assert not torch.equal(states[0][key], states[1][key]), key
    # and training moved the weights away from the loaded checkpoint
    loaded = runs['checkpoint1']['state_dict']
    assert not torch.equal(states[0]['query_embedding.weight'],
                           loaded['query_embedding.weight'])


def test_locality_sampler_moves_nothing(runs):
    for res in runs['results']:
        assert res['exchange_MB'] == [0.0, 0.0]


def test_two_rank_checkpoint_loads_into_one_rank(runs):
    state = runs['checkpoint']['state_dict']
    results = runs['results']
    for key in ('decoder.layers.0.ffn.w1', 'decoder.layers.2.ffn.b2'):
        assert state[key].size(0) == 4
        for rank, res in enumerate(results):
            torch.testing.assert_close(state[key][2 * rank:2 * rank + 2],
                                       res['state'][key], rtol=0, atol=0)
    # AdamW's moments of the experts are gathered too: every expert entry of
    # the checkpoint equals what the ranks held right before the save ...
    optim_state = runs['checkpoint']['optimizer']['state']
    key_of = {}
    for key in state:
        if key.rsplit('.', 1)[-1] in EXPERT_KEYS and '.ffn.' in key:
            key_of[key] = [i for i, s in optim_state.items()
                           if s['exp_avg'].shape == state[key].shape]
    checked = 0
    for key in results[0]['moments']:
        for moment in ('exp_avg', 'exp_avg_sq'):
            expected = torch.cat([res['moments'][key][moment]
                                  for res in results])
            assert not torch.equal(expected, torch.zeros_like(expected))
            matches = [i for i in key_of[key]
                       if torch.equal(optim_state[i][moment], expected)]
            assert len(matches) == 1, (key, moment)
            checked += 1
    assert checked == 16  # 2 layers x 4 tensors x 2 moments
    # ... and the hook gives each rank back exactly its own slice on resume
    for res in results:
        torch.testing.assert_close(
            res['resumed_exp_avg_w1'],
            res['moments']['decoder.layers.0.ffn.w1']['exp_avg'], rtol=0, atol=0)
    # BN running statistics are per rank in MMEngine (broadcast_buffers=
    # False) and rank 0 saves its own: compare with rank 0's outputs
    for batch in BATCHES:
        for got, ref in zip(runs['reloaded'][batch],
                            results[0]['trained'][batch]):
            torch.testing.assert_close(got, ref, **TOL)


def test_data_parallel_ddp_with_unused_experts(runs):
    results = [res['data_parallel'] for res in runs['results']]
    # some rank left some expert of some layer unused in some iteration ...
    used = [layers for res in results for layers in res['used']]
    assert len(used) == 6
    assert any(len(experts) < 4 for layers in used for experts in layers)
    # ... and DDP (without find_unused_parameters) kept every weight equal
    params = [res['params'] for res in results]
    assert params[0]['decoder.layers.0.ffn.w1'].size(0) == 4
    for key, value in params[0].items():
        assert torch.equal(value, params[1][key]), key
