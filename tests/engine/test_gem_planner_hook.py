# Copyright (c) mmgem contributors. All rights reserved.
"""GEMPlannerHook inside real MMEngine Runners on the tiny mini-UODB."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import mmgem.engine.planning.service as service_module
from mmgem.apis import attach_plan
from mmgem.datasets import expected_images_per_dataset
from mmgem.engine import GEMPlannerHook
from mmgem.engine.planning import PlanningService, same_mix
from mmgem.engine.runner import build_runner as build_gem_runner
from mmgem.models.layers.routing_table import decode_table, encode_table, plan_of_state_dict
from mmgem.models.routers import LEGACY_ROUTING
from mmgem.planner import GEMPlan, PlanError, build_similarity, make_plan

REPO = Path(__file__).resolve().parents[2]
GEM_CFG = REPO / 'configs' / 'gem' / 'gem-dino-tiny_r18_mini-uodb.py'


class FirstIterProbe(Hook):
    """Records, at the first training iteration, whether a plan is there."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.plan_hash_at_first_iter = None
        self.losses = []
        self.iters = []
        self.experts_used = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.iters.append(runner.iter)
        if self.plan_hash_at_first_iter is None:
            model = runner.model
            self.plan_hash_at_first_iter = (
                model.installed_plan_hash() if model.has_plan() else '')

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.losses.append(float(outputs['loss']))
        # the experts that received tokens in this iteration, per MoE layer
        model = getattr(runner.model, 'module', runner.model)
        self.experts_used.append([
            sorted(torch.nonzero(layer.routing_stats['expert_tokens']).flatten().tolist())
            for layer in model.moe_ffns()])


def make_cfg(root: Path, work_dir: Path, max_iters: int = 2, base: Path = GEM_CFG,
             val: bool = False, **model) -> Config:
    """The tiny GEM config on the tiny mini-UODB, a few iterations, no val
    unless ``val`` (then the config's val loop, on the same data).

    The config text is not yapf-formatted (``format_python_code=False``):
    MMEngine formats it for every log, dump and checkpoint, most of a tiny
    run's time; the dumps are the same config, unformatted.
    """
    cfg = Config.fromfile(str(base))
    # MMEngine 0.10.7's fromfile drops format_python_code for plain configs: a copy keeps it
    cfg = Config(cfg.to_dict(), filename=cfg.filename, format_python_code=False)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(root)
    cfg.work_dir = str(work_dir)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10**6)
    if not val:  # IterBasedTrainLoop validates at max_iters whatever val_interval
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(
        type='GEMCheckpointHook', by_epoch=False, interval=max_iters)
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
    runner = build_gem_runner(cfg)
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

    # The same plan as the planner called directly on the same inputs, its
    # thresholds cut at the training images (their COCO ids).
    dataset = runner.train_dataloader.dataset
    loads = expected_images_per_dataset(runner.train_dataloader, dataset)
    names = list(dataset.dataset_names)
    similarity = build_similarity(
        names, labels={n: list(dataset.dataset_classes[n]) for n in names},
        weights=dict(labels=1.0))
    ids = {n: [] for n in names}
    for sub, name in zip(dataset.datasets, names):
        ids[name] = [sub.get_data_info(i)['img_id'] for i in range(len(sub))]
    direct = make_plan(names, loads, similarity, num_experts=runner.model.num_experts,
                       capacity_factor=1.25, beta=0.0, solver='ECOS', image_ids=ids,
                       similarity_spec=dict(sources=dict(labels=1.0), prior=None))
    assert direct.hash == plan.hash
    # exact quotas: the training images realise the quota, within capacity
    realised = plan.realised_counts(ids)
    np.testing.assert_array_equal(realised, plan.quota)
    assert realised.sum(0).max() <= plan.capacity
    np.testing.assert_array_equal(runner.model.installed_plan_thresholds(), plan.thresholds)
    np.testing.assert_array_equal(runner.model.installed_plan_quota(), direct.quota)
    assert runner.model.routing_table.plan == plan  # one table, holding the plan
    assert runner.model.installed_dataset_names() == tuple(names)
    np.testing.assert_array_equal(runner.model.label_offsets.cpu().numpy(),
                                  np.asarray(dataset.label_offsets))

    # Outputs in the work dir; the JSON is the installed plan.
    assert GEMPlan.load(str(work_dir / 'gem_plan.json')) == plan
    png = (work_dir / 'gem_plan.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'

    # The checkpoint carries the plan once: in the model's state dict, and
    # nowhere else.
    ckpt = torch.load(work_dir / 'iter_2.pth', map_location='cpu', weights_only=False)
    assert plan_of_state_dict(ckpt['state_dict']).hash == plan.hash
    assert 'gem_plan' not in ckpt
    assert not [k for k in ckpt['state_dict'] if k.startswith('plan_')]


def test_resume_restores_the_plan_without_replanning(trained, monkeypatch):
    runner, _, work_dir = trained
    plan = planner_hook(runner).plan

    def no_replanning(*args, **kwargs):
        raise AssertionError('the hook re-planned instead of restoring the plan')

    monkeypatch.setattr(service_module, 'make_plan', no_replanning)
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

    # A plan made for other datasets is refused too (a valid, hashed plan) ...
    ckpt = torch.load(work_dir / 'iter_2.pth', map_location='cpu', weights_only=False)
    table = decode_table(ckpt['state_dict']['routing_table._extra_state'])
    data = dict(table['plan'], dataset_names=['a', 'b', 'c', 'd', 'e', 'f'])
    data.pop('hash')
    table['plan'] = GEMPlan.from_dict(data, force=True, _quiet=True).to_dict()
    ckpt['state_dict']['routing_table._extra_state'] = encode_table(table)
    forged = tmp_path / 'forged.pth'
    torch.save(ckpt, forged)
    other = build_runner(make_cfg(root, tmp_path / 'forged'), load_from=str(forged))
    with pytest.raises(ValueError, match=r"made for datasets \['a'.*does not fit"):
        other.train()
    # ... and so is a checkpoint plan without its hash
    table['plan'].pop('hash')
    ckpt['state_dict']['routing_table._extra_state'] = encode_table(table)
    torch.save(ckpt, forged)
    other = build_runner(make_cfg(root, tmp_path / 'forged2'), load_from=str(forged))
    with pytest.raises(PlanError, match='checkpoint plan has no hash'):
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
    cfg = make_cfg(root, tmp_path, max_iters=8,
                   router=dict(type=LEGACY_ROUTING[routing]))
    cfg.train_dataloader.dataset.indices = firsts
    cfg.train_dataloader.batch_size = len(firsts)
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    cfg.train_dataloader.pop('batch_sampler')
    cfg.optim_wrapper.optimizer.lr = 5e-4
    probe = FirstIterProbe()
    build_runner(cfg, probe).train()
    first, last = np.mean(probe.losses[:2]), np.mean(probe.losses[-2:])
    assert last < first, f'{routing}: loss {probe.losses}'
    # the images of six datasets reach more than one expert in every MoE layer
    # (a router that sends everything to one expert fails here)
    assert probe.experts_used and all(
        len(used) > 1 for step in probe.experts_used for used in step), probe.experts_used


def _resume_cfg(runner, tmp_path, **hook):
    """A resume of the trained run from a copy of its checkpoint."""
    root = Path(runner.cfg.train_dataloader.dataset.data_root)
    work_dir = tmp_path / 'resume'
    work_dir.mkdir(parents=True)
    cfg = make_cfg(root, work_dir, max_iters=3)
    cfg.custom_hooks[0].update(hook)
    return cfg


def test_changed_config_resume_is_refused_with_the_fields_named(trained, tmp_path,
                                                                  monkeypatch):
    runner, _, work_dir = trained
    plan = planner_hook(runner).plan
    ckpt = str(work_dir / 'iter_2.pth')
    cfg = _resume_cfg(runner, tmp_path, capacity_factor=1.0)
    cfg.train_dataloader.dataset.dataset_indices = dict(signs=2)  # a natural cut
    with pytest.raises(ValueError) as err:
        build_runner(cfg, resume=True, load_from=ckpt).train()
    text = str(err.value)
    assert 'the plan restored from the checkpoint does not fit' in text
    assert 'capacity_factor: the plan has 1.25, now 1.0' in text
    assert 'loads (images per epoch): signs' in text and '-> 2' in text
    assert 'training image ids: signs' in text and "on_mismatch='replan'" in text
    # a changed similarity is a mismatch too
    cfg = _resume_cfg(runner, tmp_path / 'b', similarity=dict(sources=dict(labels=0.5,
                                                                          prior=0.5),
                                                             prior=[['natural', 'clipart']]))
    with pytest.raises(ValueError, match=r"similarity: the plan was made with .*'prior'"):
        build_runner(cfg, resume=True, load_from=ckpt).train()
    # on_mismatch='replan' makes and installs a new plan for the new config
    cfg = _resume_cfg(runner, tmp_path / 'c', capacity_factor=1.0, on_mismatch='replan')
    probe = FirstIterProbe()
    resumed = build_runner(cfg, probe, resume=True, load_from=ckpt)
    resumed.train()
    new = planner_hook(resumed).plan
    assert new.capacity_factor == 1.0 and new.hash != plan.hash
    assert probe.plan_hash_at_first_iter == new.hash


def test_plan_file_for_other_loads_or_without_hash_is_refused(trained, tmp_path):
    runner, _, _ = trained
    plan = planner_hook(runner).plan
    root = Path(runner.cfg.train_dataloader.dataset.data_root)
    # a plan made for twice the images (e.g. the full dataset, not a few-shot cut)
    other = make_plan(plan.dataset_names, plan.images * 2, plan.similarity, 4,
                      capacity_factor=1.25, similarity_spec=plan.similarity_spec)
    path = other.save(str(tmp_path / 'other.json'))
    cfg = make_cfg(root, tmp_path / 'w1', plan_file=path)
    with pytest.raises(ValueError, match=r'plan_file=.*other.json.* does not fit.*\n.*'
                       r'loads \(images per epoch\): natural'):
        build_runner(cfg).train()
    # a plan file without its hash is refused when the model is built
    data = plan.to_dict()
    del data['hash']
    hashless = tmp_path / 'hashless.json'
    hashless.write_text(json.dumps(data))
    cfg.model.plan_file = str(hashless)
    with pytest.raises(PlanError, match=r'hashless.json.*has no hash'):
        build_runner(cfg)
    # attach_plan(force=True) accepts it, re-validated
    assert attach_plan(runner.model, str(hashless), force=True).hash == plan.hash
    # the training plan itself is accepted and installed as it is, without planning
    cfg.model.plan_file = plan.save(str(tmp_path / 'same.json'))
    same = build_runner(cfg)
    same.train()
    assert planner_hook(same).plan == plan
    assert same.model.routing_table.plan is plan or same.model.routing_table.plan == plan


@pytest.mark.parametrize('kwargs, match', [
    (dict(capacity_factor=0.5), r'GEMPlannerHook\(capacity_factor=0.5\): must be'),
    (dict(beta=2), r'GEMPlannerHook\(beta=2\)'),
    (dict(num_experts=0), r'GEMPlannerHook\(num_experts=0\)'),
    (dict(solver='NOPE'), r"GEMPlannerHook\(solver='NOPE'"),
    (dict(rounding='fast'), r"GEMPlannerHook\(rounding='fast'\)"),
    (dict(on_mismatch='ignore'), r"GEMPlannerHook\(on_mismatch='ignore'\)"),
    (dict(similarity=dict(sources=dict(labels=-1.0))), r'similarity.sources.labels=-1.0'),
    (dict(similarity=dict(sources=dict(prior=1.0))), r'similarity.prior=None'),
    (dict(similarity=dict(matrix=[[1.0, 0.2], [0.3, 1.0]])), 'not symmetric'),
])
def test_hook_arguments_are_validated_when_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GEMPlannerHook(**kwargs)


def test_hook_num_experts_is_checked_before_planning(trained, tmp_path, monkeypatch):
    runner, _, _ = trained
    root = Path(runner.cfg.train_dataloader.dataset.data_root)

    def no_planning(*args, **kwargs):
        raise AssertionError('the hook planned before checking its settings')

    monkeypatch.setattr(service_module, 'make_plan', no_planning)
    cfg = make_cfg(root, tmp_path)
    cfg.custom_hooks[0].num_experts = 8
    with pytest.raises(ValueError, match=r"GEMPlannerHook\(num_experts=8\) does not match "
                       r"the model's num_experts=4"):
        build_runner(cfg).train()


def test_gem_plan_config_equals_the_hooks_plan(mini_uodb_root, tmp_path,
                                              monkeypatch):
    """The offline plan of a few-shot config is the training plan, bit for bit,
    both made by the one planning service."""
    made = []
    service_plan = PlanningService.make_plan

    def spy(self, *args, **kwargs):
        made.append(service_plan(self, *args, **kwargs))
        return made[-1]

    monkeypatch.setattr(PlanningService, 'make_plan', spy)
    config = tmp_path / 'few_shot.py'
    config.write_text(
        f'_base_ = {str(GEM_CFG)!r}\n'
        f'train_dataloader = dict(dataset=dict(data_root={str(mini_uodb_root) + "/"!r}, '
        'dataset_indices=dict(signs=3)))\n')
    cfg = make_cfg(mini_uodb_root, tmp_path / 'train', max_iters=1, base=config)
    cfg.train_dataloader.dataset.dataset_indices = dict(signs=3)
    cfg.custom_hooks[0].similarity = Config.fromfile(str(GEM_CFG)).custom_hooks[0].similarity
    runner = build_runner(cfg)
    runner.train()
    trained_plan = planner_hook(runner).plan
    assert trained_plan.images[list(trained_plan.dataset_names).index('signs')] == 3
    assert trained_plan.similarity_spec['sources'] == dict(labels=0.5, features=0.5)
    from tools.analysis_tools import gem_plan
    offline = gem_plan.plan_from_config(str(config))
    assert offline.hash == trained_plan.hash
    assert [p.hash for p in made] == [trained_plan.hash, offline.hash]


def test_loads_scaled_by_padding_are_the_same_mix():
    plan_loads = np.array([48.0, 100.0, 7.0])
    padded = plan_loads * (160.0 / 155.0)  # 8 ranks: ceil(155 / 8) * 8 = 160 draws
    assert same_mix(plan_loads, padded)
    assert same_mix(padded, plan_loads)  # planned on 8, resumed on 1
    assert not same_mix(plan_loads, plan_loads * 2)  # twice the images
    assert not same_mix(plan_loads, [5.0, 100.0, 7.0])  # a cut
    assert not same_mix(plan_loads, [48.0, 100.0, 14.0])  # other ratios
    assert not same_mix(plan_loads, plan_loads[:2])


def _legacy_checkpoint(ckpt: dict, with_plan: bool) -> dict:
    """A checkpoint in the format before the routing table: plan buffers
    (names and hash as bytes) and, saved by the hook, ``ckpt['gem_plan']``."""
    state = ckpt['state_dict']
    plan = plan_of_state_dict(state)
    del state['routing_table._extra_state']

    def raw(text, rows=None):
        return torch.tensor(list(text.encode().ljust(64, b'\0')), dtype=torch.uint8)

    state['plan_quota'] = torch.from_numpy(plan.quota.astype(np.int64))
    state['plan_thresholds'] = torch.from_numpy(plan.thresholds.astype(np.int64))
    state['plan_dataset_names'] = torch.stack([raw(n) for n in plan.dataset_names])
    state['plan_hash'] = raw(plan.hash)
    if with_plan:
        ckpt['gem_plan'] = plan.to_dict()
    return ckpt


def test_checkpoints_of_the_old_format_load(trained, tmp_path, monkeypatch):
    runner, _, work_dir = trained
    plan = planner_hook(runner).plan
    root = Path(runner.cfg.train_dataloader.dataset.data_root)
    ckpt = torch.load(work_dir / 'iter_2.pth', map_location='cpu', weights_only=False)
    old = tmp_path / 'old.pth'
    torch.save(_legacy_checkpoint(ckpt, with_plan=True), old)

    def no_replanning(*args, **kwargs):
        raise AssertionError('the hook re-planned instead of re-using the old plan')

    monkeypatch.setattr(service_module, 'make_plan', no_replanning)
    probe = FirstIterProbe()
    loaded = build_runner(make_cfg(root, tmp_path / 'w', max_iters=1), probe,
                          load_from=str(old))
    loaded.train()
    assert probe.plan_hash_at_first_iter == plan.hash
    assert loaded.model.routing_table.plan == plan
    # without checkpoint['gem_plan'] (the model's buffers only): it routes, as
    # inference needs, but training refuses a plan it cannot check
    ckpt = torch.load(work_dir / 'iter_2.pth', map_location='cpu', weights_only=False)
    bare = _legacy_checkpoint(ckpt, with_plan=False)['state_dict']
    model = copy.deepcopy(loaded.model)
    model.routing_table.clear()
    model.load_state_dict(bare)
    assert model.installed_plan_hash() == plan.hash and model.routing_table.plan is None
    np.testing.assert_array_equal(model.installed_plan_thresholds(), plan.thresholds)
    assert model.installed_dataset_names() == tuple(plan.dataset_names)
    torch.save(dict(state_dict=bare, meta=ckpt['meta']), old)
    with pytest.raises(RuntimeError, match='cannot be checked'):
        build_runner(make_cfg(root, tmp_path / 'w2'), load_from=str(old)).train()
