# Copyright (c) mmgem contributors. All rights reserved.
"""The fixes of mmgem/utils/compat.py, inside real Runners."""
import logging
import os
import pickle
import stat

import pytest
import torch
import torch.nn as nn
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader, load_from_local
from mmengine.utils import digit_version
from torch.utils.data import Dataset

import mmgem  # noqa: F401  (applies the fix)
from mmgem.utils import compat, fileio
from mmgem.utils.compat import (
    checkpoint_problem,
    load_local_checkpoint,
    patch_mmengine_checkpoint_loading,
)

NEW_TORCH = digit_version(torch.__version__) >= digit_version('2.6.0')


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


def _runner(work_dir, max_iters, recorder, resume=False, load_from=None):
    return Runner(
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
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[recorder],
        resume=resume,
        load_from=load_from,
        randomness=dict(seed=0),
        default_scope='mmdet')


def test_fix_is_installed():
    loader = CheckpointLoader._schemes['']
    if NEW_TORCH:
        assert loader is load_local_checkpoint
    # idempotent: a second call changes nothing
    assert patch_mmengine_checkpoint_loading() is False
    assert CheckpointLoader._schemes[''] is loader


def test_train_save_resume(tmp_path):
    first = IterRecorder()
    runner = _runner(tmp_path, max_iters=2, recorder=first)
    runner.train()
    ckpt = tmp_path / 'iter_2.pth'
    assert ckpt.is_file()
    weight_after_2 = runner.model.linear.weight.detach().clone()

    if NEW_TORCH:
        # Without the fix mmengine's own loader fails on its own checkpoint.
        with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
            load_from_local(str(ckpt), map_location='cpu')

    second = IterRecorder()
    resumed = _runner(tmp_path, max_iters=4, recorder=second, resume=True)
    resumed.train()
    # It resumed at iteration 2 (not from scratch) and trained on to 4.
    assert first.iters == [0, 1]
    assert second.iters == [2, 3]
    assert (tmp_path / 'iter_4.pth').is_file()
    state = torch.load(tmp_path / 'iter_2.pth', weights_only=False)
    torch.testing.assert_close(state['state_dict']['linear.weight'], weight_after_2)
    assert state['meta']['iter'] == 2


def test_missing_local_checkpoint_names_the_file(tmp_path):
    missing = tmp_path / 'nope.pth'
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        CheckpointLoader.load_checkpoint(str(missing))


# ----------------------------------------------------------------------
# atomic checkpoints, keeping the previous one, auto-resume fallback
# ----------------------------------------------------------------------
def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_checkpoints_are_written_atomically_with_the_umask_mode(tmp_path,
                                                                monkeypatch):
    runner = _runner(tmp_path, max_iters=2, recorder=IterRecorder())
    runner.train()
    ckpt = tmp_path / 'iter_2.pth'
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o666 & ~umask
    before = ckpt.read_bytes()

    # a save that dies before its rename leaves the old file untouched
    def fail(src, dst):
        raise OSError('disk full')

    monkeypatch.setattr(fileio.os, 'replace', fail)
    with pytest.raises(OSError, match='disk full'):
        runner.save_checkpoint(str(tmp_path), 'iter_2.pth')
    monkeypatch.undo()
    assert ckpt.read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]


def test_old_checkpoint_is_removed_only_after_the_new_one_is_saved(
        tmp_path, monkeypatch):
    recorder = IterRecorder()
    runner = _runner(tmp_path, max_iters=4, recorder=recorder)
    hook = next(h for h in runner.hooks if isinstance(h, CheckpointHook))
    hook.max_keep_ckpts = 1
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith('iter_4.pth'):
            raise OSError('killed while saving')
        return real(src, dst)

    monkeypatch.setattr(fileio.os, 'replace', replace)
    with pytest.raises(OSError, match='killed while saving'):
        runner.train()
    # iter_2.pth is still there: auto-resume has something to resume from
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith('.pth')) == [
        'iter_2.pth']
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_2.pth')


def test_auto_resume_skips_a_truncated_last_checkpoint(tmp_path):
    runner = _runner(tmp_path, max_iters=4, recorder=IterRecorder())
    runner.train()
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


def test_auto_resume_without_a_complete_checkpoint_starts_from_scratch(
        tmp_path):
    (tmp_path / 'iter_2.pth').write_bytes(b'PK\x03\x04 cut short')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert compat.find_latest_checkpoint(str(tmp_path)) is None
    (tmp_path / 'last_checkpoint').write_text('')  # killed while writing it
    assert compat.find_latest_checkpoint(str(tmp_path)) is None


def test_a_bad_resume_file_is_named_in_the_error(tmp_path):
    runner = _runner(tmp_path, max_iters=2, recorder=IterRecorder())
    runner.train()
    bad = tmp_path / 'iter_2.pth'
    _truncate(bad)
    resumed = _runner(tmp_path, max_iters=3, recorder=IterRecorder(),
                      resume=True, load_from=str(bad))
    with pytest.raises(RuntimeError,
                       match=f'cannot load the checkpoint {bad}: the file is '
                       'truncated'):
        resumed.train()
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all')
    with pytest.raises(RuntimeError, match=f'cannot load the checkpoint {garbage}'):
        CheckpointLoader.load_checkpoint(str(garbage))
