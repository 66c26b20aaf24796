# Copyright (c) mmgem contributors. All rights reserved.
"""Expert-parallel GEM-DINO from scratch, killed with SIGKILL, resumed.

All runs use ``gem-dino-tiny_r18_mini-uodb_ep.py`` on the tiny mini-UODB
(4 experts per MoE layer, AdamW with clipping, a LinearLR warm-up, a
checkpoint after every iteration), with MMEngine's Runner:

A. 2 ranks train 4 iterations from scratch, uninterrupted. Every rank
   records its experts right after MMEngine's start-up broadcast, the losses,
   and its whole training state right before the first checkpoint is saved.
B. The same run in another work dir; rank 0 is killed with SIGKILL while it
   writes the second checkpoint (after the temporary file is written, before
   the rename). Before C starts, a truncated ``iter_2.pth`` is put where the
   checkpoint would have been and ``last_checkpoint`` names it (what a
   non-atomic writer leaves behind).
C. 2 ranks auto-resume B (``resume=True``): they must skip the truncated file,
   take ``iter_1.pth`` and train iterations 2-4 with the losses of A.
D. 4 ranks (one expert each) resume A's ``iter_1.pth``: before their first
   step they must hold exactly the weights, plan, optimizer and scheduler
   state A's ranks held when it was saved, tensor by tensor.

The reference for the initialisation is one process (no process group)
with the same config and seed.
"""
import os
import os.path as osp
import signal
import time

import pytest
import torch
import torch.multiprocessing as mp
from dist_utils import run_distributed
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from runner_utils import import_mmgem, tiny_ep_config

MAX_ITERS = 4
EXPERT_KEYS = ('w1', 'b1', 'w2', 'b2')


def _config(data_root, work_dir, **extra):
    cfg = tiny_ep_config(data_root, work_dir, MAX_ITERS, **extra)
    cfg.default_hooks.checkpoint.interval = 1
    cfg.default_hooks.checkpoint.max_keep_ckpts = -1
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
             end=10)
    ]
    return cfg


def _unwrap(runner):
    model = runner.model
    return model.module if hasattr(model, 'module') else model


def _expert_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.rsplit('.', 1)[-1] in EXPERT_KEYS and '.ffn.' in k}


def _training_state(runner):
    """Weights, optimizer state (by parameter name), schedulers, plan."""
    model = _unwrap(runner)
    optim = runner.optim_wrapper.optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    return dict(
        model={k: v.detach().clone() for k, v in model.state_dict().items()},
        optimizer={
            names[id(p)]: {k: (v.clone() if torch.is_tensor(v) else v)
                           for k, v in optim.state[p].items()}
            for g in optim.param_groups for p in g['params']
            if p in optim.state
        },
        param_groups=[{k: v for k, v in g.items() if k != 'params'}
                      for g in optim.param_groups],
        schedulers=[s.state_dict() for s in runner.param_schedulers],
        plan=model.installed_plan_hash(),
        plan_quota=model.installed_plan_quota())


class _Record(Hook):
    """Experts after start-up, losses, and the state before the first save
    (CheckpointHook saves in after_train_iter with priority VERY_LOW)."""

    priority = 'LOWEST'

    def __init__(self, stop=False):
        self.stop = stop
        self.init_experts = None
        self.losses = {}
        self.resumed = None

    def before_train(self, runner):
        model = _unwrap(runner)
        self.init_experts = _expert_state(model)
        if runner.iter > 0:
            self.resumed = _training_state(runner)
        if self.stop:  # the initialisation is all that is wanted
            runner.train_loop.stop_training = True

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses[runner.iter] = float(outputs['loss'])


class _StateBeforeSave(Hook):
    """The state right before the first save: after ParamSchedulerHook
    (LOW) has stepped, before CheckpointHook (VERY_LOW) saves."""

    priority = 80

    def __init__(self):
        self.state = None

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter == 0:
            self.state = _training_state(runner)


class _KillInSecondSave(Hook):
    """Rank 0 dies by SIGKILL between writing iter_2.pth's temporary file and
    renaming it; rank 1 waits in iteration 3 (mp.spawn ends it)."""

    def __init__(self, rank):
        self.rank = rank

    def before_run(self, runner):
        if self.rank != 0:
            return
        real = os.replace

        def replace(src, dst, *args, **kwargs):
            if str(dst).endswith('iter_2.pth'):
                assert osp.getsize(src) > 0
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *args, **kwargs)

        os.replace = replace

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.rank == 1 and runner.iter == 2:
            time.sleep(600)


def _run(rank, cfg, *hooks):
    runner = Runner.from_cfg(cfg)
    for hook in hooks:
        runner.register_hook(hook)
    runner.train()
    return runner


def _uninterrupted(rank, world_size, out_dir, data_root):
    record, before_save = _Record(), _StateBeforeSave()
    _run(rank, _config(data_root, osp.join(out_dir, 'a'), launcher='pytorch'),
         record, before_save)
    return dict(init=record.init_experts, losses=record.losses,
                state=before_save.state)


def _killed(rank, world_size, out_dir, data_root):
    _run(rank, _config(data_root, osp.join(out_dir, 'b'), launcher='pytorch'),
         _KillInSecondSave(rank))
    raise AssertionError('the run was not killed')


def _resumed(rank, world_size, out_dir, data_root, work_dir, load_from):
    record = _Record()
    cfg = _config(data_root, work_dir, launcher='pytorch', resume=True,
                  load_from=load_from)
    if load_from is not None:  # the other world size: one more iteration
        cfg.train_cfg.max_iters = 2
    runner = _run(rank, cfg, record)
    return dict(losses=record.losses, resumed=record.resumed,
                experts=_unwrap(runner).moe_ffns()[0].num_local_experts)


@pytest.fixture(scope='module')
def uninterrupted(mini_uodb_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('resume')
    results = run_distributed(_uninterrupted, 2, tmp, str(mini_uodb_root))
    return tmp, results


def test_from_scratch_experts_keep_their_own_init(uninterrupted, mini_uodb_root,
                                                  tmp_path):
    """Each rank's experts equal the single-process init of those experts
    (not rank 0's copy) after MMEngine's start-up broadcast."""
    _, results = uninterrupted
    import_mmgem()
    init_default_scope('mmdet')
    cfg = _config(mini_uodb_root, tmp_path / 'single')
    record = _Record(stop=True)
    _run(0, cfg, record)
    reference = record.init_experts
    assert len(reference) == 8 and all(v.size(0) == 4
                                       for v in reference.values())
    for rank, res in enumerate(results):
        for key, value in res['init'].items():
            assert value.size(0) == 2
            torch.testing.assert_close(value, reference[key][2 * rank:2 * rank + 2],
                                       rtol=0, atol=0, msg=key)
    for key in reference:
        assert not torch.equal(results[0]['init'][key], results[1]['init'][key])


@pytest.fixture(scope='module')
def killed_and_resumed(uninterrupted, mini_uodb_root):
    tmp, _ = uninterrupted
    with pytest.raises(mp.ProcessExitedException, match='SIGKILL'):
        run_distributed(_killed, 2, tmp, str(mini_uodb_root))
    work_dir = tmp / 'b'
    files = sorted(os.listdir(work_dir))
    last = (work_dir / 'last_checkpoint').read_text().strip()
    # what a non-atomic writer would have left: a truncated iter_2.pth
    good = (work_dir / 'iter_1.pth').read_bytes()
    (work_dir / 'iter_2.pth').write_bytes(good[:len(good) // 2])
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    results = run_distributed(_resumed, 2, tmp, str(mini_uodb_root),
                              str(work_dir), None)
    logs = [open(osp.join(root, name)).read()
            for root, _, names in os.walk(work_dir) for name in names
            if name.endswith('.log')]
    return dict(files=files, last=last, results=results, logs=logs)


def test_kill_then_resume_continues_the_losses(uninterrupted, killed_and_resumed):
    _, reference = uninterrupted
    run = killed_and_resumed
    # the kill left iter_1.pth, the temporary file of iter_2.pth, no iter_2.pth
    assert 'iter_1.pth' in run['files'] and 'iter_2.pth' not in run['files']
    assert any(f.startswith('.iter_2.pth.') and f.endswith('.tmp')
               for f in run['files'])
    assert run['last'].endswith('iter_1.pth')
    # auto-resume skipped the truncated last checkpoint, and said so
    assert any('is not usable (the file is truncated' in log
               and 'resuming from the previous complete checkpoint' in log
               for log in run['logs'])
    for rank, res in enumerate(run['results']):
        assert sorted(res['losses']) == [1, 2, 3]
        for it, loss in res['losses'].items():
            assert loss == pytest.approx(reference[rank]['losses'][it],
                                         rel=1e-6, abs=0), (rank, it)


@pytest.fixture(scope='module')
def other_world_size(uninterrupted, mini_uodb_root):
    tmp, _ = uninterrupted
    return run_distributed(_resumed, 4, tmp, str(mini_uodb_root),
                           str(tmp / 'd'), str(tmp / 'a' / 'iter_1.pth'))


def _assert_same(got, want, what):
    if torch.is_tensor(want):
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=what)
    elif isinstance(want, dict):
        assert sorted(got) == sorted(want), what
        for key in want:
            _assert_same(got[key], want[key], f'{what}.{key}')
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), what
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f'{what}[{i}]')
    else:
        assert got == want, what


def test_resume_on_another_world_size_starts_from_the_saved_state(
        uninterrupted, other_world_size):
    _, saved = uninterrupted
    saved = [res['state'] for res in saved]
    for rank, res in enumerate(other_world_size):
        assert res['experts'] == 1
        got = res['resumed']
        # expert e lives on rank e now; it was on rank e // 2, slot e % 2
        src, slot = saved[rank // 2], rank % 2
        for key, want in saved[0]['model'].items():
            if key.rsplit('.', 1)[-1] in EXPERT_KEYS and '.ffn.' in key:
                want = src['model'][key][slot:slot + 1]
            _assert_same(got['model'][key], want, key)
        assert sorted(got['optimizer']) == sorted(saved[0]['optimizer'])
        for name, want in saved[0]['optimizer'].items():
            if name.rsplit('.', 1)[-1] in EXPERT_KEYS and '.ffn.' in name:
                want = {k: (v[slot:slot + 1] if torch.is_tensor(v) and v.dim()
                            else v)
                        for k, v in src['optimizer'][name].items()}
            _assert_same(got['optimizer'][name], want, name)
        _assert_same(got['param_groups'], saved[0]['param_groups'], 'groups')
        _assert_same(got['schedulers'], saved[0]['schedulers'], 'schedulers')
        assert got['plan'] == saved[0]['plan']
        assert (got['plan_quota'] == saved[0]['plan_quota']).all()
        # and it trains on: one more iteration
        assert sorted(res['losses']) == [1]
