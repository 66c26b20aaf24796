# Copyright (c) mmgem contributors. All rights reserved.
"""GEMRunner and GEMCheckpointHook inside real Runners (toy model).

Saving: atomic (temporary file + fsync + rename, umask mode), the dropped
checkpoint deleted only after its successor is complete, ``max_keep_ckpts``
as mmengine honours it, temporary files of a run killed with SIGKILL removed
at the next start. Loading: ``weights_only=True`` with the allow-list,
auto-resume falling back to the newest complete checkpoint.
"""
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer, MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmgem  # noqa: F401  (registers GEMCheckpointHook)
from mmgem.engine.hooks import GEMCheckpointHook
from mmgem.engine.runner import (
    GEMRunner,
    UnsafeCheckpointError,
    checkpoint_problem,
    find_latest_complete_checkpoint,
    load_checkpoint_file,
)

REPO = Path(__file__).resolve().parents[2]


class ToyRegressor(BaseModel):
    """y = w x + b fitted with an MSE loss."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, targets, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=((out.squeeze(-1) - torch.stack(targets))**2).mean())
        return out


class ToyData(Dataset):

    def __init__(self, n: int = 16) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=gen)
        self.y = self.x.sum(1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx):
        return dict(inputs=self.x[idx], targets=self.y[idx])


class IterRecorder(Hook):
    """Records the iterations a runner actually trains."""

    def __init__(self) -> None:
        self.iters = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.iters.append(runner.iter)


def _runner(work_dir, max_iters, recorder=None, resume=False, load_from=None,
            runner_cls=GEMRunner, checkpoint=None, **kwargs):
    return runner_cls(
        model=ToyRegressor(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=ToyData(),
            sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
            batch_size=4,
            num_workers=0),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        default_hooks=dict(
            checkpoint=checkpoint or dict(type='GEMCheckpointHook', interval=2,
                                          by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[recorder or IterRecorder()],
        resume=resume,
        load_from=load_from,
        randomness=dict(seed=0),
        log_level='WARNING',
        default_scope='mmdet', **kwargs)


def _pths(folder):
    return sorted(p for p in os.listdir(folder) if p.endswith('.pth'))


def _temps(folder):
    return sorted(p for p in os.listdir(folder) if p.endswith('.mmgem-tmp'))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


# ----------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------
@pytest.mark.parametrize('hook_type', ['CheckpointHook', 'GEMCheckpointHook'])
def test_max_keep_ckpts_1_keeps_one_file(tmp_path, hook_type):
    """mmengine's rule (1 file of 3), with mmgem imported, both hooks."""
    runner = _runner(tmp_path, 3, runner_cls=Runner, checkpoint=dict(
        type=hook_type, interval=1, by_epoch=False, max_keep_ckpts=1))
    runner.train()
    assert _pths(tmp_path) == ['iter_3.pth']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_3.pth')


def test_max_keep_ckpts_2_over_a_resume(tmp_path):
    hook = dict(type='GEMCheckpointHook', interval=1, by_epoch=False, max_keep_ckpts=2)
    _runner(tmp_path, 3, checkpoint=hook).train()
    assert _pths(tmp_path) == ['iter_2.pth', 'iter_3.pth']
    _runner(tmp_path, 5, checkpoint=hook, resume=True).train()
    assert _pths(tmp_path) == ['iter_4.pth', 'iter_5.pth']


def test_checkpoints_are_written_atomically_with_the_umask_mode(tmp_path, monkeypatch):
    runner = _runner(tmp_path, max_iters=2)
    runner.train()
    ckpt = tmp_path / 'iter_2.pth'
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o666 & ~umask
    before = ckpt.read_bytes()
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f'/proc/self/fd/{fd}'))
        return real_fsync(fd)

    # a save that dies before its rename leaves the old file untouched
    def fail(tmp, path):
        assert Path(tmp).name.startswith('.iter_2.pth.') and Path(tmp).stat().st_size > 0
        raise OSError('disk full')

    hook = next(h for h in runner.hooks if isinstance(h, GEMCheckpointHook))
    monkeypatch.setattr(hook, '_commit', fail)
    with pytest.raises(OSError, match='disk full'):
        hook._save_checkpoint_with_step(runner, 2, {})
    assert ckpt.read_bytes() == before
    assert _temps(tmp_path) == []
    monkeypatch.undo()
    # a complete save is fsync-ed before the rename, and so is its folder
    monkeypatch.setattr(os, 'fsync', fsync)
    hook._save_checkpoint_with_step(runner, 2, {})
    assert any(p.endswith('.mmgem-tmp') for p in synced), synced
    assert str(tmp_path) in synced, synced


def test_old_checkpoint_is_removed_only_after_the_new_one_is_saved(tmp_path, monkeypatch):
    runner = _runner(tmp_path, max_iters=4, checkpoint=dict(
        type='GEMCheckpointHook', interval=2, by_epoch=False, max_keep_ckpts=1))
    hook = next(h for h in runner.hooks if isinstance(h, GEMCheckpointHook))
    real = hook._commit

    def commit(tmp, path):
        if path.endswith('iter_4.pth'):
            raise OSError('killed while saving')
        return real(tmp, path)

    monkeypatch.setattr(hook, '_commit', commit)
    with pytest.raises(OSError, match='killed while saving'):
        runner.train()
    # iter_2.pth is still there: auto-resume has something to resume from
    assert _pths(tmp_path) == ['iter_2.pth']
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_2.pth')


KILLED_RUN = '''
import sys, time
sys.path.insert(0, {tests!r})
from test_gem_checkpoints import _runner
from mmgem.engine.hooks import GEMCheckpointHook
from mmgem.utils.fileio import atomic_write


class SlowCommit(GEMCheckpointHook):
    """Sleeps between writing the temporary file and renaming it."""

    def _commit(self, tmp, path):
        if path.endswith('iter_4.pth'):
            print('IN_SAVE', tmp, flush=True)
            time.sleep(60)
        return super()._commit(tmp, path)


from mmdet.registry import HOOKS
HOOKS.register_module(module=SlowCommit)
_runner({work_dir!r}, 4, checkpoint=dict(type='SlowCommit', interval=2,
                                        by_epoch=False, max_keep_ckpts=1)).train()
'''


def test_kill_during_a_save_leaves_no_temporary_file_after_the_next_start(tmp_path):
    work_dir = tmp_path / 'work'
    script = tmp_path / 'run.py'
    script.write_text(textwrap.dedent(KILLED_RUN.format(
        tests=str(Path(__file__).parent), work_dir=str(work_dir))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get('PYTHONPATH')])), OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.time() + 60
        line = ''
        while time.time() < deadline and 'IN_SAVE' not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert 'IN_SAVE' in line, proc.stdout.read()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    # killed while saving: the complete temporary file, no iter_4.pth, iter_2.pth kept
    assert len(_temps(work_dir)) == 1 and _pths(work_dir) == ['iter_2.pth']
    recorder = IterRecorder()
    _runner(work_dir, 5, recorder, resume=True, checkpoint=dict(
        type='GEMCheckpointHook', interval=2, by_epoch=False, max_keep_ckpts=1)).train()
    assert recorder.iters == [2, 3, 4]
    assert _temps(work_dir) == []
    assert _pths(work_dir) == ['iter_5.pth']


# ----------------------------------------------------------------------
# loading and auto-resume
# ----------------------------------------------------------------------
def test_train_save_resume(tmp_path):
    first = IterRecorder()
    runner = _runner(tmp_path, max_iters=2, recorder=first)
    runner.train()
    weight_after_2 = runner.model.linear.weight.detach().clone()
    # mmengine's own loader refuses mmengine's checkpoint on torch >= 2.6 ...
    with pytest.raises(Exception, match='Weights only load failed'):
        Runner.load_checkpoint(runner, str(tmp_path / 'iter_2.pth'))
    # ... GEMRunner loads it with weights_only=True and the allow-list
    second = IterRecorder()
    resumed = _runner(tmp_path, max_iters=4, recorder=second, resume=True)
    resumed.train()
    assert first.iters == [0, 1]
    assert second.iters == [2, 3]
    state = load_checkpoint_file(str(tmp_path / 'iter_2.pth'))
    torch.testing.assert_close(state['state_dict']['linear.weight'], weight_after_2)
    assert state['meta']['iter'] == 2


def test_the_allow_list_has_no_raw_getattr(tmp_path):
    class Sneaky:
        """Pickled as getattr(HistoryBuffer, 'update'): not a statistics method."""

        def __reduce__(self):
            return (getattr, (HistoryBuffer, 'update'))

    path = tmp_path / 'sneaky.pth'
    torch.save(dict(state_dict={}, x=Sneaky()), path)
    with pytest.raises(Exception, match=r"getattr\(.*HistoryBuffer.*'update'\) is not allowed"):
        load_checkpoint_file(str(path))


class Custom:
    """A class no allow-list knows."""


def test_unsafe_loading_only_for_named_files(tmp_path):
    path = tmp_path / 'custom.pth'
    torch.save(dict(state_dict={}, meta=dict(obj=Custom())), path)
    with pytest.raises(UnsafeCheckpointError,
                       match=f'{path}.*Custom.*unsafe_load_checkpoints'):
        load_checkpoint_file(str(path))
    assert isinstance(load_checkpoint_file(str(path), unsafe_files=[str(path)])['meta']['obj'],
                      Custom)


def test_missing_local_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))


def test_auto_resume_skips_a_truncated_last_checkpoint(tmp_path):
    _runner(tmp_path, max_iters=4).train()
    _truncate(tmp_path / 'iter_4.pth')  # a kill during a non-atomic write
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_4.pth')
    assert 'truncated' in checkpoint_problem(str(tmp_path / 'iter_4.pth'))
    assert checkpoint_problem(str(tmp_path / 'iter_2.pth')) is None

    recorder = IterRecorder()
    resumed = _runner(tmp_path, max_iters=5, recorder=recorder, resume=True)
    logger = MMLogger.get_current_instance()
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    try:
        resumed.train()
    finally:
        logger.removeHandler(handler)
    # it resumed at iteration 2 from iter_2.pth, and said why
    assert recorder.iters == [2, 3, 4]
    assert any(f'last checkpoint {tmp_path / "iter_4.pth"} is not usable (the '
               'file is truncated' in m and 'iter_2.pth instead' in m
               for m in messages), messages


def test_auto_resume_without_a_complete_checkpoint_starts_from_scratch(tmp_path):
    (tmp_path / 'iter_2.pth').write_bytes(b'PK\x03\x04 cut short')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert find_latest_complete_checkpoint(str(tmp_path)) is None
    (tmp_path / 'last_checkpoint').write_text('')  # killed while writing it
    assert find_latest_complete_checkpoint(str(tmp_path)) is None


def test_checkpoint_problem_never_unpickles_unsafely(tmp_path):
    marker = tmp_path / 'MARKER'

    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {marker}', ))

    legacy = tmp_path / 'legacy.pth'
    torch.save(dict(x=Evil()), legacy, _use_new_zipfile_serialization=False)
    assert 'cannot be loaded' in checkpoint_problem(str(legacy))
    assert not marker.exists()


def test_a_bad_resume_file_is_named_in_the_error(tmp_path):
    _runner(tmp_path, max_iters=2).train()
    bad = tmp_path / 'iter_2.pth'
    _truncate(bad)
    resumed = _runner(tmp_path, max_iters=3, resume=True, load_from=str(bad))
    with pytest.raises(RuntimeError,
                       match=f'cannot load the checkpoint {bad}: the file is truncated'):
        resumed.train()
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all')
    with pytest.raises(RuntimeError, match=f'cannot load the checkpoint {garbage}'):
        load_checkpoint_file(str(garbage))


@pytest.mark.parametrize('config', [
    'configs/gem/dino-4scale_r50_8xb2-36e_uodb.py',
    'configs/gem/gem-dino-tiny_r18_mini-uodb.py',
    'configs/gem/gem-dino-tiny_r18_mini-uodb_ep.py',
    'configs/gem/few_shot/gem-dino-4scale_r50_8xb2-36e_uodb_kitti-50shot.py',
])
def test_mmgem_configs_name_the_runner_and_the_hook(config):
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO / config))
    assert cfg.runner_type == 'GEMRunner'
    assert cfg.default_hooks.checkpoint.type in ('GEMCheckpointHook',
                                                 'ExpertParallelCheckpointHook')
