# Copyright (c) mmgem contributors. All rights reserved.
"""The mmengine 0.10.7 + torch >= 2.6 checkpoint fix, inside a real Runner."""
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader, load_from_local
from mmengine.utils import digit_version
from torch.utils.data import Dataset

import mmgem  # noqa: F401  (applies the fix)
from mmgem.utils.compat import load_local_checkpoint, patch_mmengine_checkpoint_loading

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


def _runner(work_dir, max_iters, recorder, resume=False):
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
