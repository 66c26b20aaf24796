# Copyright (c) mmgem contributors. All rights reserved.
"""The model configs load, build, and agree with the data base configs."""
from pathlib import Path

import numpy as np
import pytest
from mmdet.registry import DATASETS, MODELS
from mmengine.config import Config
from mmengine.hub import get_config

import mmgem  # noqa: F401
from mmgem.models.routers import router_class, router_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / 'configs' / 'gem').rglob('*.py'))
DATA_BASE = {  # name part of a config -> its data base and that base's key prefix
    'mini-uodb-v2': (REPO / 'configs/_base_/datasets/mini_uodb_v2.py', 'mini_uodb_v2_'),
    'mini-uodb': (REPO / 'configs/_base_/datasets/mini_uodb.py', 'uodb_'),
    'uodb': (REPO / 'configs/_base_/datasets/uodb.py', 'uodb_'),
}


def _data_base(path: Path):
    """The dataset names and classes of the data base of a config."""
    key = next(k for k in DATA_BASE if k in path.name)  # most specific first
    base, prefix = DATA_BASE[key]
    data = Config.fromfile(str(base))
    return list(data[prefix + 'dataset_names']), data[prefix + 'classes']


def test_all_four_methods_exist_for_both_benchmarks():
    names = {p.name for p in CONFIGS}
    for prefix in ('dino', 'gem-dino', 'damex-dino', 'moe-dino'):
        assert f'{prefix}-tiny_r18_mini-uodb.py' in names
        assert f'{prefix}-4scale_r50_8xb2-36e_uodb.py' in names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_builds_and_matches_its_label_space(path):
    cfg = Config.fromfile(str(path))
    train = DATASETS.build(dict(cfg.train_dataloader.dataset, lazy_init=True))
    val = DATASETS.build(dict(cfg.val_dataloader.dataset, lazy_init=True))
    classes = [train.dataset_classes[n] for n in train.dataset_names]
    held_out = cfg.val_evaluator.get('model_dataset_names') is not None
    if held_out:  # unseen domains (*_loo-*.py): the evaluator names the model's datasets
        assert not set(val.dataset_names) & set(train.dataset_names)
        assert list(cfg.val_evaluator.model_dataset_names) == list(train.dataset_names)
        assert [tuple(c) for c in cfg.val_evaluator.model_dataset_classes] == classes
    else:
        assert train.dataset_names == val.dataset_names
        assert classes == [val.dataset_classes[n] for n in val.dataset_names]
    if path.parent.name == 'gem':  # the full benchmarks: the data base's sets
        names, data_classes = _data_base(path)
        names = [n for n in names if not held_out or n not in val.dataset_names]
        assert list(train.dataset_names) == names
        assert classes == [tuple(data_classes[n]) for n in names]
    else:  # ablations: subsets with the data base's class lists
        data = Config.fromfile(str(DATA_BASE['uodb'][0]))
        assert classes == [tuple(data.uodb_classes[n]) for n in train.dataset_names]
    counts = [len(c) for c in classes]
    offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
    assert cfg.model.bbox_head.num_classes == offsets[-1]
    assert cfg.custom_imports == dict(
        imports=['mmgem'], allow_failed_imports=False)
    assert cfg.train_dataloader.dataset.type == 'UODBDataset'
    assert list(train.label_offsets) == offsets
    if cfg.model.type == 'GEMDINO':
        assert list(cfg.model.label_offsets) == offsets
        assert cfg.model.num_datasets == len(counts)
        hooks = [h.type for h in cfg.get('custom_hooks', [])]
        router = router_class(router_config(cfg.model.get('router'), cfg.model.get('routing')))
        if cfg.model.moe_layers and router.needs_plan:
            assert 'GEMPlannerHook' in hooks
        for hook in cfg.get('custom_hooks', []):
            prior = hook.get('similarity', {}).get('prior')
            if prior:  # a hand-made map names every dataset exactly once
                named = sorted(n for group in prior for n in group)
                assert named == sorted(train.dataset_names)
    model = MODELS.build(cfg.model)
    if cfg.model.type == 'GEMDINO':
        assert len(model.moe_ffns()) == len(cfg.model.moe_layers)
        assert model.label_offsets.tolist() == offsets
        if cfg.model.moe_layers:
            assert {type(f.router) for f in model.moe_ffns()} == {router}


def test_r50_uodb_configs_inherit_mmdets_dino():
    dense = Config.fromfile(str(REPO / 'configs/gem/dino-4scale_r50_8xb2-36e_uodb.py'))
    text = (REPO / 'configs/gem/dino-4scale_r50_8xb2-36e_uodb.py').read_text()
    assert "'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'" in text
    mmdet = get_config('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py')
    # the plain reference model is mmdet's DINO but for the number of classes
    plain = Config.fromfile(
        str(REPO / 'configs/gem/dino-plain-4scale_r50_8xb2-36e_uodb.py'))
    ours = plain.model.to_dict()
    theirs = mmdet.model.to_dict()
    ours.pop('_scope_', None)  # mmengine tags what a `mmdet::` base gave
    assert ours['bbox_head'].pop('num_classes') == 167
    theirs['bbox_head'].pop('num_classes')
    assert ours == theirs
    # UODB's loaders replaced COCO's entirely (no COCO key left merged in)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert dense[loader].dataset.type == 'UODBDataset'
        assert 'ann_file' not in dense[loader].dataset
        assert '_delete_' not in dense[loader]
    # the metric reads names with the model's synonym table
    assert dense.val_evaluator == dict(type='UODBMetric', backend_args=None,
                                       merge_table=dense.model.label_merge_table)
    for key in ('optim_wrapper', 'auto_scale_lr', 'default_hooks'):
        assert dense[key].keys() >= mmdet[key].keys()


def test_full_uodb_schedule_is_damex():
    cfg = Config.fromfile(str(REPO / 'configs/gem/gem-dino-4scale_r50_8xb2-36e_uodb.py'))
    assert cfg.train_cfg.max_epochs == 36
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1.4e-4)
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.model.num_experts == 8
    assert tuple(cfg.model.moe_layers) == (0, 2, 4)


@pytest.mark.parametrize(
    'path', [p for p in CONFIGS if p.parent.name == 'few_shot'],
    ids=lambda p: p.name)
def test_few_shot_configs_limit_kitti_only(path):
    shots = int(path.stem.split('kitti-')[1].replace('shot', ''))
    cfg = Config.fromfile(str(path))
    assert cfg.train_dataloader.dataset.dataset_indices == dict(kitti=shots)
    assert 'dataset_indices' not in cfg.val_dataloader.dataset
    lazy = DATASETS.build(dict(cfg.train_dataloader.dataset, lazy_init=True))
    for name, dataset in zip(lazy.dataset_names, lazy.datasets):
        assert dataset._indices == (shots if name == 'kitti' else None)
