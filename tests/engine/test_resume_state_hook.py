# Copyright (c) mmgem contributors. All rights reserved.
"""ResumeStateHook in real single-process Runners, both training loops.

A toy model whose loss depends on torch's random numbers (dropout, noise)
trains on a toy UODB-like dataset whose samples depend on NumPy's and
Python's random numbers (an "augmentation"), drawn by UODBSampler in
batches of 3 (the last batch of an epoch is short). A run resumed from a
checkpoint saved mid-epoch, or at the end of an epoch, must give exactly the
losses of the uninterrupted run from there on; a validation in between must
not change them. Without the hook (MMEngine alone) the losses differ.
"""
import random

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset

import mmgem  # noqa: F401
from mmgem.engine.runner import GEMRunner, load_checkpoint_file


class ToyUODB(Dataset):
    """Two datasets of 7 and 4 samples; samples get random noise."""

    dataset_names = ('a', 'b')
    num_datasets = 2
    dataset_lengths = [7, 4]
    sample_dataset_ids = np.array([0] * 7 + [1] * 4)

    def __len__(self):
        return 11

    def get_data_info(self, idx):
        return dict(img_id=idx, width=10, height=10)

    def __getitem__(self, idx):
        noise = np.random.rand() + random.random()
        x = torch.full((4, ), float(idx)) / 10 + noise
        return dict(inputs=x, target=x.sum(0, keepdim=True))


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.drop = nn.Dropout(0.5)

    def forward(self, inputs, target, mode='loss'):
        y = self.linear(self.drop(inputs)) + 0.01 * torch.randn(len(inputs), 1)
        if mode == 'loss':
            return dict(loss=((y - target)**2).mean())
        return list(y.detach())


class ToyMetric(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.append(0.0)

    def compute_metrics(self, results):
        return dict(score=0.0)


class Losses(Hook):

    def __init__(self):
        self.losses = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses[runner.iter] = float(outputs['loss'])


def _runner(work_dir, by_epoch, with_hook=True, resume=False, load_from=None,
            val=False, checkpoint=None):
    loader = dict(dataset=ToyUODB(), batch_size=3, num_workers=0,
                  sampler=dict(type='UODBSampler', seed=5),
                  collate_fn=dict(type='default_collate'))
    train_cfg = (dict(by_epoch=True, max_epochs=3) if by_epoch else
                 dict(by_epoch=False, max_iters=12))
    extra = {}
    if val:
        train_cfg['val_interval'] = 1 if by_epoch else 4
        extra = dict(val_dataloader=dict(loader, sampler=dict(
            type='DefaultSampler', shuffle=True)), val_cfg=dict(),
            val_evaluator=[ToyMetric()])
    runner = GEMRunner(
        model=ToyModel(), work_dir=str(work_dir), train_dataloader=loader,
        train_cfg=train_cfg,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        default_hooks=dict(checkpoint=checkpoint or dict(
            type='GEMCheckpointHook', by_epoch=by_epoch,
            interval=1 if by_epoch else 5)),
        custom_hooks=[dict(type='ResumeStateHook')] if with_hook else [],
        resume=resume, load_from=load_from, randomness=dict(seed=0),
        default_scope='mmdet', log_level='WARNING', **extra)
    losses = Losses()
    runner.register_hook(losses)
    return runner, losses


@pytest.mark.parametrize('by_epoch', [False, True], ids=['iter_loop', 'epoch_loop'])
@pytest.mark.parametrize('val', [False, True], ids=['no_val', 'val'])
def test_resume_continues_the_losses(tmp_path, by_epoch, val):
    runner, full = _runner(tmp_path / 'full', by_epoch, val=val)
    runner.train()
    total = 12
    assert sorted(full.losses) == list(range(total))
    # iteration loop: iter_5.pth is inside epoch 1 (4 batches per epoch);
    # epoch loop: epoch_1.pth ends epoch 0, and a mid-epoch checkpoint too
    ckpts = ['iter_5.pth', 'iter_10.pth'] if not by_epoch else ['epoch_1.pth', 'epoch_2.pth']
    for name in ckpts:
        resumed, part = _runner(tmp_path / f'resumed_{name}', by_epoch, resume=True,
                                load_from=str(tmp_path / 'full' / name), val=val)
        resumed.train()
        start = min(part.losses)
        assert start == load_checkpoint_file(str(tmp_path / 'full' / name))['meta']['iter']
        assert part.losses == {i: full.losses[i] for i in range(start, total)}, name


def test_mid_epoch_checkpoint_of_the_epoch_loop(tmp_path):
    """EpochBasedTrainLoop resumed from an iteration checkpoint inside an
    epoch goes on from that batch (MMEngine alone restarts the epoch)."""
    every_6 = dict(type='GEMCheckpointHook', by_epoch=False, interval=6)
    runner, full = _runner(tmp_path / 'full', True, checkpoint=every_6)
    runner.train()
    resumed, part = _runner(tmp_path / 'resumed', True, resume=True,
                            load_from=str(tmp_path / 'full' / 'iter_6.pth'),
                            checkpoint=every_6)
    resumed.train()
    assert part.losses == {i: full.losses[i] for i in range(6, 12)}


def test_without_the_hook_the_losses_differ(tmp_path):
    runner, full = _runner(tmp_path / 'full', False, with_hook=False)
    runner.train()
    resumed, part = _runner(tmp_path / 'resumed', False, with_hook=False,
                            resume=True,
                            load_from=str(tmp_path / 'full' / 'iter_5.pth'))
    resumed.train()
    assert sorted(part.losses) == list(range(5, 12))
    assert any(part.losses[i] != full.losses[i] for i in part.losses)
