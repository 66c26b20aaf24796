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
    ds = DATASETS.build(_cfg(mini_cfg, small_root))
    monkeypatch.setattr(uodb_module, 'print_log',
                        lambda msg, *a, **k: logged.append(msg))
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


def test_dropped_boxes_are_reported_once_per_dataset_with_reasons(mini_cfg, small_root,
                                                                  monkeypatch):
    """mmdet's CocoDataset drops broken boxes silently; the wrapper says how
    many per dataset and why, once, at load time. The count is checked
    against the boxes mmdet really kept."""
    init_default_scope('mmdet')
    ann_file = small_root / 'icons' / 'annotations' / 'train.json'
    coco = json.loads(ann_file.read_text())
    sizes = {img['id']: (img['width'], img['height']) for img in coco['images']}
    anns = coco['annotations']
    total = len(anns)
    anns[0]['bbox'][2] = 0  # zero size
    anns[1]['bbox'][3] = -4  # negative
    anns[2]['bbox'][0] = float('nan')
    w, h = sizes[anns[3]['image_id']]
    anns[3]['bbox'] = [w + 5, 1, 4, 4]  # right of the image
    anns[4]['bbox'] = [w + 9, h + 9, 3, 3]
    ann_file.write_text(json.dumps(coco))  # writes NaN, as json does
    logged = []
    monkeypatch.setattr(uodb_module, 'print_log',
                        lambda msg, *a, **k: logged.append((msg, k.get('level'))))
    ds = DATASETS.build(_cfg(mini_cfg, small_root))
    icons = ds.datasets[ds.dataset_names.index('icons')]
    kept = sum(len(icons.get_data_info(i)['instances']) for i in range(len(icons)))
    assert kept == total - 5  # what mmdet really dropped
    mine = [m for m, _ in logged if 'mmdet drops' in m]
    assert len(mine) == 2, logged  # icons and medical, once each
    icons_msg = next(m for m in mine if "dataset 'icons'" in m)
    assert str(ann_file) in icons_msg
    assert (f'mmdet drops 5 of its {total} boxes: 1 NaN, 1 negative size, 1 zero size, '
            '2 outside the image at load time') in icons_msg, icons_msg
    medical_msg = next(m for m in mine if "dataset 'medical'" in m)
    assert 'mmdet drops none of its' in medical_msg
    ds.full_init()  # already initialised: not said again
    assert len([m for m, _ in logged if 'mmdet drops' in m]) == 2
