# Copyright (c) mmgem contributors. All rights reserved.
"""GEMPlannerHook inside real MMEngine Runners on the tiny mini-UODB."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import mmgem.engine.hooks.gem_planner_hook as hook_module
from mmgem.datasets import expected_images_per_dataset
from mmgem.engine import GEMPlannerHook
from mmgem.planner import GEMPlan, build_similarity, make_plan

REPO = Path(__file__).resolve().parents[2]
GEM_CFG = REPO / 'configs' / 'gem' / 'gem-dino-tiny_r18_mini-uodb.py'


class FirstIterProbe(Hook):
    """Records, at the first training iteration, whether a plan is there."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.plan_hash_at_first_iter = None
        self.losses = []
        self.iters = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.iters.append(runner.iter)
        if self.plan_hash_at_first_iter is None:
            model = runner.model
            self.plan_hash_at_first_iter = (
                model.installed_plan_hash() if model.has_plan() else '')

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.losses.append(float(outputs['loss']))


def make_cfg(root: Path, work_dir: Path, max_iters: int = 2, base: Path = GEM_CFG,
             **model) -> Config:
    """The tiny GEM config on the tiny mini-UODB, a few iterations, no val."""
    cfg = Config.fromfile(str(base))
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(root)
    cfg.work_dir = str(work_dir)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10**6)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', by_epoch=False, interval=max_iters)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.model.update(model)
    if cfg.get('custom_hooks'):
        # labels only: deterministic, so the planner can be re-run here
        cfg.custom_hooks[0].similarity = dict(sources=dict(labels=1.0))
    cfg.log_level = 'WARNING'
    return cfg


def build_runner(cfg: Config, *hooks: Hook, **kwargs) -> Runner:
    cfg = copy.deepcopy(cfg)
    cfg.update(kwargs)
    runner = Runner.from_cfg(cfg)
    for hook in hooks:
        runner.register_hook(hook)
    return runner


def planner_hook(runner: Runner) -> GEMPlannerHook:
    return next(h for h in runner.hooks if isinstance(h, GEMPlannerHook))


@pytest.fixture(scope='module')
def trained(mini_uodb_root, tmp_path_factory):
    """Two iterations of tiny GEM-DINO with the hook; checkpoint at iter 2."""
    work_dir = tmp_path_factory.mktemp('gem_hook')
    probe = FirstIterProbe()
    runner = build_runner(make_cfg(mini_uodb_root, work_dir), probe)
    runner.train()
    return runner, probe, work_dir


def test_hook_installs_the_planners_plan_before_first_iteration(trained):
    runner, probe, work_dir = trained
    hook = planner_hook(runner)
    plan = hook.plan
    assert plan is not None
    assert probe.plan_hash_at_first_iter == plan.hash

    # The same plan as the planner called directly on the same inputs.
    dataset = runner.train_dataloader.dataset
    loads = expected_images_per_dataset(runner.train_dataloader, dataset)
    names = list(dataset.dataset_names)
    similarity = build_similarity(
        names, labels={n: list(dataset.dataset_classes[n]) for n in names},
        weights=dict(labels=1.0))
    direct = make_plan(names, loads, similarity, num_experts=runner.model.num_experts,
                       capacity_factor=1.25, beta=0.0, solver='ECOS')
    assert direct.hash == plan.hash
    np.testing.assert_array_equal(runner.model.installed_plan_quota(), direct.quota)
    np.testing.assert_array_equal(runner.model.plan_quota.cpu().numpy(), direct.quota)
    assert runner.model.installed_dataset_names() == tuple(names)
    np.testing.assert_array_equal(runner.model.label_offsets.cpu().numpy(),
                                  np.asarray(dataset.label_offsets))

    # Outputs in the work dir; the JSON is the installed plan.
    assert GEMPlan.load(str(work_dir / 'gem_plan.json')) == plan
    png = (work_dir / 'gem_plan.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'

    # The checkpoint carries the plan, and its buffers hold the same table.
    ckpt = torch.load(work_dir / 'iter_2.pth', map_location='cpu', weights_only=False)
    assert GEMPlan.from_dict(ckpt['gem_plan']).hash == plan.hash


def test_resume_restores_the_plan_without_replanning(trained, monkeypatch):
    runner, _, work_dir = trained
    plan = planner_hook(runner).plan

    def no_replanning(*args, **kwargs):
        raise AssertionError('the hook re-planned instead of restoring the plan')

    monkeypatch.setattr(hook_module, 'make_plan', no_replanning)
    probe = FirstIterProbe()
    cfg = make_cfg(Path(runner.cfg.train_dataloader.dataset.data_root), work_dir, max_iters=3)
    resumed = build_runner(cfg, probe, resume=True)
    resumed.train()
    # it continued at iteration 2 (a fresh run would train 0, 1 and 2)
    assert probe.iters == [2] and resumed.iter == 3
    assert probe.plan_hash_at_first_iter == plan.hash
    assert planner_hook(resumed).plan == plan


def test_load_from_rejects_a_plan_that_does_not_fit(trained, tmp_path):
    runner, _, work_dir = trained
    root = Path(runner.cfg.train_dataloader.dataset.data_root)
    # A model with 2 experts cannot take the 4-expert plan.
    cfg = make_cfg(root, tmp_path / 'two', num_experts=2)
    other = build_runner(cfg, load_from=str(work_dir / 'iter_2.pth'))
    with pytest.raises(ValueError, match=r'4 experts.*num_experts=2.*does not fit'):
        other.train()

    # A plan made for other datasets is refused too.
    ckpt = torch.load(work_dir / 'iter_2.pth', map_location='cpu', weights_only=False)
    ckpt['gem_plan']['dataset_names'] = ['a', 'b', 'c', 'd', 'e', 'f']
    ckpt['gem_plan'].pop('hash', None)
    forged = tmp_path / 'forged.pth'
    torch.save(ckpt, forged)
    other = build_runner(make_cfg(root, tmp_path / 'forged'), load_from=str(forged))
    with pytest.raises(ValueError, match=r"made for datasets \['a'.*does not fit"):
        other.train()


def test_gem_training_without_the_hook_fails_at_first_iteration(mini_uodb_root, tmp_path):
    cfg = make_cfg(mini_uodb_root, tmp_path)
    cfg.custom_hooks = []
    runner = build_runner(cfg)
    with pytest.raises(RuntimeError, match='GEMPlannerHook'):
        runner.train()
    assert runner.iter == 0


@pytest.mark.parametrize('routing', ['gem', 'damex', 'moe'])
def test_each_routing_mode_lowers_the_loss(trained, tmp_path, routing):
    runner, _, _ = trained
    root = Path(runner.cfg.train_dataloader.dataset.data_root)
    # One image of each dataset (every dataset keeps a load for the plan),
    # the same batch every iteration: the loss must go down.
    ids = np.asarray(runner.train_dataloader.dataset.sample_dataset_ids)
    firsts = [int(np.flatnonzero(ids == d)[0]) for d in range(ids.max() + 1)]
    cfg = make_cfg(root, tmp_path, max_iters=8, routing=routing)
    cfg.train_dataloader.dataset.indices = firsts
    cfg.train_dataloader.batch_size = len(firsts)
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    cfg.train_dataloader.pop('batch_sampler')
    cfg.optim_wrapper.optimizer.lr = 5e-4
    probe = FirstIterProbe()
    build_runner(cfg, probe).train()
    first, last = np.mean(probe.losses[:2]), np.mean(probe.losses[-2:])
    assert last < first, f'{routing}: loss {probe.losses}'
