# Copyright (c) mmgem contributors. All rights reserved.
"""The base dataset configs mirror the dataset facts and build."""
import copy

import pytest
from mmdet.registry import DATASETS
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmgem.datasets import (
    MINI_UODB_CLASSES,
    MINI_UODB_DATASETS,
    MINI_UODB_SPLITS,
    UODB_CLASSES,
    UODB_DATASETS,
    UODB_SPLITS,
)

CASES = {
    'uodb.py': ('data/uodb/', UODB_DATASETS, UODB_CLASSES, UODB_SPLITS),
    'mini_uodb.py': ('data/mini_uodb/', MINI_UODB_DATASETS,
                     MINI_UODB_CLASSES, MINI_UODB_SPLITS),
}
META_KEYS = {'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
             'dataset_id', 'dataset_name'}


@pytest.mark.parametrize('name', sorted(CASES))
def test_base_config_mirrors_meta_and_builds_lazily(repo_root, name):
    init_default_scope('mmdet')
    data_root, names, classes, splits = CASES[name]
    cfg = Config.fromfile(
        str(repo_root / 'configs' / '_base_' / 'datasets' / name))
    assert tuple(cfg.uodb_dataset_names) == names
    assert {k: tuple(v) for k, v in cfg.uodb_classes.items()} == \
        {k: tuple(v) for k, v in classes.items()}
    assert {k: tuple(v) for k, v in cfg.uodb_splits.items()} == splits
    assert cfg.uodb_num_classes == sum(len(classes[n]) for n in names)
    # uodb.py prefixes every name with `uodb_` (so it can sit beside mmdet's
    # DINO config as a second base); mini_uodb.py is a plain dataset base.
    prefix = 'uodb_' if name == 'uodb.py' else ''
    for loader, split in (('train_dataloader', 0), ('val_dataloader', 1),
                          ('test_dataloader', 1)):
        dataset = cfg[prefix + loader].dataset
        assert dataset.data_root == data_root
        assert [d.ann_file for d in dataset.datasets] == [
            f'{n}/annotations/{splits[n][split]}.json' for n in names
        ]
        pack = dataset.pipeline[-1]
        assert pack.type == 'PackDetInputs'
        assert META_KEYS <= set(pack.meta_keys)
        lazy = DATASETS.build(dict(copy.deepcopy(dataset), lazy_init=True))
        assert lazy.dataset_names == names
        assert lazy.label_offsets[-1] == cfg.uodb_num_classes
        assert lazy.metainfo['ann_files'][0].startswith(data_root)
    assert cfg[prefix + 'val_evaluator'].type == 'UODBMetric'
    assert cfg[prefix + 'test_evaluator'].type == 'UODBMetric'
