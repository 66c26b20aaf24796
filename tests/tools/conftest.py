# Copyright (c) mmgem contributors. All rights reserved.
"""Fixtures of the mmdet-tool tests: a plan file and a checkpoint of tiny GEM-DINO.

Both are made the way a user gets them (``gem_plan.json`` as the planner
writes it, a checkpoint with ``meta.dataset_meta`` as MMEngine's Runner saves
it), without a training run.
"""
from pathlib import Path

import pytest
import torch
from mmengine.registry import init_default_scope
from tool_utils import split_images, tiny_gem_config


@pytest.fixture(scope='session')
def tiny_plan_file(mini_uodb_root, tmp_path_factory) -> Path:
    """A plan of the tiny mini-UODB on 4 experts (label similarity), as JSON."""
    from mmgem.datasets import MINI_UODB_CLASSES, MINI_UODB_DATASETS
    from mmgem.planner import build_similarity, make_plan
    names = list(MINI_UODB_DATASETS)
    train = split_images(mini_uodb_root, 'train')
    similarity = build_similarity(
        names, labels={n: list(MINI_UODB_CLASSES[n]) for n in names}, weights=dict(labels=1.0))
    plan = make_plan(names, [len(train[n]) for n in names], similarity, num_experts=4,
                     capacity_factor=1.25)
    path = tmp_path_factory.mktemp('tiny_plan') / 'gem_plan.json'
    plan.save(str(path))
    return path


@pytest.fixture(scope='session')
def tiny_gem_checkpoint(mini_uodb_root, tiny_plan_file, tmp_path_factory) -> Path:
    """A randomly initialised tiny GEM-DINO checkpoint that carries the plan."""
    from mmdet.registry import DATASETS, MODELS
    init_default_scope('mmdet')
    cfg = tiny_gem_config(mini_uodb_root)
    cfg.model.plan_file = str(tiny_plan_file)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    train_cfg = dict(cfg.train_dataloader.dataset, lazy_init=True)
    meta = dict(DATASETS.build(train_cfg).metainfo)
    path = tmp_path_factory.mktemp('tiny_ckpt') / 'gem_tiny.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=meta)), path)
    return path
