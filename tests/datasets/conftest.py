# Copyright (c) mmgem contributors. All rights reserved.
"""Fixtures of the data-layer tests: mini-UODB configs and datasets."""
from pathlib import Path

import pytest
from mmdet.registry import DATASETS  # noqa: I001
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmgem  # noqa: F401  (registers UODBDataset and friends)


def mini_uodb_config(repo_root: Path, data_root: Path) -> Config:
    """``configs/_base_/datasets/mini_uodb.py`` pointed at ``data_root``."""
    cfg = Config.fromfile(
        str(repo_root / 'configs' / '_base_' / 'datasets' / 'mini_uodb.py'))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root)
    return cfg


@pytest.fixture(scope='session')
def mini_cfg(repo_root, mini_uodb_root) -> Config:
    """The mini-UODB base config on the session's tiny mini-UODB."""
    init_default_scope('mmdet')
    return mini_uodb_config(repo_root, mini_uodb_root)


@pytest.fixture(scope='session')
def mini_train_dataset(mini_cfg):
    """The tiny mini-UODB training set, built from the base config."""
    init_default_scope('mmdet')
    return DATASETS.build(mini_cfg.train_dataloader.dataset)


@pytest.fixture(scope='session')
def mini_test_dataset(mini_cfg):
    """The tiny mini-UODB test set, built from the base config."""
    init_default_scope('mmdet')
    return DATASETS.build(mini_cfg.test_dataloader.dataset)
