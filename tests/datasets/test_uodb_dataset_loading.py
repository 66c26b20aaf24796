# Copyright (c) mmgem contributors. All rights reserved.
"""UODBDataset at load and training time: undeclared category ids are an
error, a missing image is logged and replaced, not fatal."""
import copy
import json
import shutil

import numpy as np
import pytest
from mmdet.registry import DATASETS
from mmengine.registry import init_default_scope

import mmgem.datasets.uodb_dataset as uodb_module


@pytest.fixture()
def small_root(mini_uodb_root, tmp_path):
    """A copy of two mini-UODB domains that a test may break."""
    for name in ('icons', 'medical'):
        shutil.copytree(mini_uodb_root / name, tmp_path / name, symlinks=True)
    return tmp_path


def _cfg(mini_cfg, root, loader='train_dataloader'):
    cfg = copy.deepcopy(mini_cfg[loader].dataset)
    cfg.data_root = str(root)
    cfg.select = ['icons', 'medical']
    return cfg


def test_undeclared_category_id_names_file_and_id(mini_cfg, small_root):
    init_default_scope('mmdet')
    ann_file = small_root / 'icons' / 'annotations' / 'train.json'
    coco = json.loads(ann_file.read_text())
    coco['annotations'][1]['category_id'] = 99
    bad_id, image_id = coco['annotations'][1]['id'], coco['annotations'][1]['image_id']
    ann_file.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=rf'annotation {bad_id} \(image {image_id}\) of '
                       rf'{ann_file} has category_id 99, which the file does not declare'):
        DATASETS.build(_cfg(mini_cfg, small_root))


def test_missing_image_is_replaced_by_same_dataset(mini_cfg, small_root, monkeypatch):
    init_default_scope('mmdet')
    logged = []
    monkeypatch.setattr(uodb_module, 'print_log',
                        lambda msg, *a, **k: logged.append(msg))
    ds = DATASETS.build(_cfg(mini_cfg, small_root))
    medical = ds.dataset_names.index('medical')
    idx = int(np.flatnonzero(ds.sample_dataset_ids == medical)[0])
    missing = ds.get_data_info(idx)['img_path']
    (small_root / 'medical' / 'JPEGImages' / missing.split('/')[-1]).unlink()
    np.random.seed(0)
    sample = ds[idx]
    meta = sample['data_samples'].metainfo
    assert meta['dataset_name'] == 'medical' and meta['img_path'] != missing
    assert ds.load_failures == 1
    assert len(logged) == 1 and missing in logged[0] and "dataset 'medical'" in logged[0]
    # every image of the dataset gone: bounded retries, then an error naming it
    for p in (small_root / 'medical' / 'JPEGImages').iterdir():
        p.unlink()
    ds.max_load_retries = 3
    with pytest.raises(RuntimeError, match=r"4 samples of dataset 'medical' failed to load "
                       r'in a row \(max_load_retries=3\)'):
        ds[idx]
    # other datasets are untouched
    icons = int(np.flatnonzero(ds.sample_dataset_ids == ds.dataset_names.index('icons'))[0])
    assert ds[icons]['data_samples'].metainfo['dataset_name'] == 'icons'


def test_missing_test_image_is_an_error_naming_it(mini_cfg, small_root):
    init_default_scope('mmdet')
    ds = DATASETS.build(_cfg(mini_cfg, small_root, 'test_dataloader'))
    missing = ds.get_data_info(0)['img_path']
    (small_root / 'icons' / 'JPEGImages' / missing.split('/')[-1]).unlink()
    with pytest.raises(RuntimeError, match=rf"cannot load test sample 0 \(dataset 'icons', "
                       rf'image {missing}\)'):
        ds[0]
