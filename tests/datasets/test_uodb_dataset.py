# Copyright (c) mmgem contributors. All rights reserved.
"""Tests of UODBDataset: ids, offsets, lengths, laziness, pipeline, errors."""
import copy
import json

import numpy as np
import pytest
from mmdet.registry import DATASETS, TRANSFORMS
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from mmgem.datasets import MINI_UODB_CLASSES, MINI_UODB_DATASETS, UODBDataset


def _json(root, name, split):
    return json.loads(
        (root / name / 'annotations' / f'{split}.json').read_text())


def test_names_classes_and_offsets(mini_train_dataset):
    ds = mini_train_dataset
    assert ds.dataset_names == MINI_UODB_DATASETS
    assert ds.dataset_classes == MINI_UODB_CLASSES
    sizes = [len(MINI_UODB_CLASSES[n]) for n in MINI_UODB_DATASETS]
    assert ds.label_offsets.dtype == np.int64
    assert ds.label_offsets.tolist() == [0] + np.cumsum(sizes).tolist()
    classes = ds.metainfo['classes']
    assert len(classes) == len(set(classes)) == sum(sizes)
    for d, name in enumerate(MINI_UODB_DATASETS):
        lo, hi = ds.label_offsets[d], ds.label_offsets[d + 1]
        assert classes[lo:hi] == tuple(
            f'{name}/{c}' for c in MINI_UODB_CLASSES[name])
    meta = ds.metainfo
    assert meta['dataset_names'] == MINI_UODB_DATASETS
    assert list(meta['label_offsets']) == ds.label_offsets.tolist()
    assert [p.split('/')[-3] for p in meta['ann_files']] == \
        list(MINI_UODB_DATASETS)


def test_lengths_ids_and_shifted_labels(mini_train_dataset, mini_uodb_root):
    ds = mini_train_dataset
    expected = [len(_json(mini_uodb_root, n, 'train')['images'])
                for n in MINI_UODB_DATASETS]
    assert ds.dataset_lengths == expected
    assert len(ds) == sum(expected)
    assert np.bincount(ds.sample_dataset_ids).tolist() == expected
    for idx in range(len(ds)):
        info = ds.get_data_info(idx)
        d, local = ds.dataset_index(idx)
        assert (info['dataset_id'], info['dataset_name']) == \
            (d, MINI_UODB_DATASETS[d])
        sub = ds.datasets[d].get_data_info(local)
        assert info['img_id'] == sub['img_id']
        assert info['img_path'] == sub['img_path']
        off = ds.label_offsets[d]
        assert [i['bbox_label'] for i in info['instances']] == \
            [i['bbox_label'] + off for i in sub['instances']]
        assert [i['bbox'] for i in info['instances']] == \
            [i['bbox'] for i in sub['instances']]
        assert ds.get_cat_ids(idx) == \
            [i['bbox_label'] for i in info['instances']]
    assert ds.dataset_index(-1) == (len(MINI_UODB_DATASETS) - 1,
                                    expected[-1] - 1)
    with pytest.raises(IndexError, match='out of range'):
        ds.dataset_index(len(ds))


def test_pipeline_carries_dataset_meta(mini_train_dataset, mini_test_dataset):
    for ds in (mini_train_dataset, mini_test_dataset):
        for idx in (0, len(ds) - 1):
            out = ds[idx]
            sample = out['data_samples']
            info = ds.get_data_info(idx)
            assert sample.metainfo['dataset_id'] == info['dataset_id']
            assert sample.metainfo['dataset_name'] == info['dataset_name']
            assert sample.metainfo['img_id'] == info['img_id']
            labels = sample.gt_instances.labels.tolist()
            assert sorted(labels) == sorted(
                i['bbox_label'] for i in info['instances'])
            assert max(out['inputs'].shape[1:]) <= 160


def test_lazy_init_knows_metainfo_before_loading(mini_cfg,
                                                 mini_train_dataset):
    init_default_scope('mmdet')
    cfg = copy.deepcopy(mini_cfg.train_dataloader.dataset)
    cfg['lazy_init'] = True
    lazy = DATASETS.build(cfg)
    assert not lazy._fully_initialized
    assert not any(d._fully_initialized for d in lazy.datasets)
    assert lazy.metainfo == mini_train_dataset.metainfo
    assert lazy.dataset_lengths == mini_train_dataset.dataset_lengths
    assert lazy._fully_initialized
    assert lazy.get_data_info(7)['img_path'] == \
        mini_train_dataset.get_data_info(7)['img_path']


def test_subsets_keep_dataset_ids(mini_train_dataset):
    ds = mini_train_dataset
    picks = [0, len(ds) - 1, ds.dataset_lengths[0] + 2]
    sub = ds.get_subset(picks)
    assert len(sub) == 3
    for i, idx in enumerate(picks):
        assert sub.dataset_index(i) == ds.dataset_index(idx)
    assert sum(sub.dataset_lengths) == 3


def test_dataset_indices_limit_one_dataset(mini_cfg, mini_train_dataset):
    cfg = copy.deepcopy(mini_cfg.train_dataloader.dataset)
    cfg.dataset_indices = dict(aerial=3)
    few = DATASETS.build(cfg)
    full = dict(zip(mini_train_dataset.dataset_names, mini_train_dataset.dataset_lengths))
    got = dict(zip(few.dataset_names, few.dataset_lengths))
    assert got == dict(full, aerial=3)
    aerial = few.dataset_names.index('aerial')
    ids = [few[i]['data_samples'].metainfo['img_id']
           for i in np.flatnonzero(few.sample_dataset_ids == aerial)]
    first = [mini_train_dataset.datasets[aerial].get_data_info(i)['img_id'] for i in range(3)]
    assert ids == first  # the first 3 images of that dataset

    cfg.dataset_indices = dict(kitti=3)
    with pytest.raises(ValueError, match=r"dataset_indices names \['kitti'\]"):
        DATASETS.build(cfg)


def test_select_keeps_named_datasets_in_order(mini_cfg, mini_train_dataset):
    cfg = copy.deepcopy(mini_cfg.train_dataloader.dataset)
    cfg.select = ['medical', 'natural']
    two = DATASETS.build(cfg)
    assert two.dataset_names == ('medical', 'natural')
    full = dict(zip(mini_train_dataset.dataset_names, mini_train_dataset.dataset_lengths))
    assert two.dataset_lengths == [full['medical'], full['natural']]
    assert list(two.label_offsets) == [0, 1, 1 + len(two.dataset_classes['natural'])]
    cfg.select = ['medical', 'xray']
    with pytest.raises(ValueError, match=r"select=\['medical', 'xray'\]"):
        DATASETS.build(cfg)


def test_dataloader_with_mmdet_batch_sampler(mini_cfg):
    """The base config's train dataloader (UODBSampler + mmdet's
    AspectRatioBatchSampler) yields batches whose samples carry ids."""
    init_default_scope('mmdet')
    loader = Runner.build_dataloader(mini_cfg.train_dataloader, seed=0)
    batch = next(iter(loader))
    assert len(batch['inputs']) == mini_cfg.train_dataloader.batch_size
    for sample in batch['data_samples']:
        assert isinstance(sample.metainfo['dataset_id'], int)
        assert sample.metainfo['dataset_name'] in MINI_UODB_DATASETS


@TRANSFORMS.register_module(force=True)
class _RejectOddImages:
    """Test transform: rejects images with odd img_id of dataset 1."""

    def __call__(self, results):
        if results['dataset_id'] == 1 and results['img_id'] % 2:
            return None
        return results


def test_rejected_sample_is_replaced_from_same_dataset(mini_cfg):
    init_default_scope('mmdet')
    cfg = copy.deepcopy(mini_cfg.train_dataloader.dataset)
    cfg['pipeline'] = [dict(type='_RejectOddImages')]
    ds = DATASETS.build(cfg)
    start = ds.dataset_lengths[0]
    odd = next(i for i in range(start, start + 4)
               if ds.get_data_info(i)['img_id'] % 2)
    np.random.seed(0)
    for _ in range(5):
        out = ds[odd]
        assert out['dataset_id'] == 1 and out['img_id'] % 2 == 0


def _one_dataset_cfg(root, classes, name='natural', **kw):
    return dict(
        type='UODBDataset',
        data_root=str(root),
        datasets=[
            dict(type='CocoDataset',
                 ann_file=f'{name}/annotations/train.json',
                 data_prefix=dict(img=f'{name}/JPEGImages/'),
                 metainfo=dict(classes=classes), **kw)
        ],
        dataset_names=[name])


def test_bad_configs_name_the_file_and_class(mini_uodb_root):
    init_default_scope('mmdet')
    root = mini_uodb_root
    natural = MINI_UODB_CLASSES['natural']
    with pytest.raises(ValueError,
                       match=r"\['cat'\] of dataset 'natural' are not "
                       r'categories of .*natural/annotations/train\.json'):
        DATASETS.build(_one_dataset_cfg(root, natural[:3] + ('cat', )))
    with pytest.raises(ValueError,
                       match=r"\['bird'\] of .*train\.json are not in the "
                       "class list of dataset 'natural'"):
        DATASETS.build(_one_dataset_cfg(root, natural[:3]))
    with pytest.raises(ValueError, match='in the order'):
        DATASETS.build(_one_dataset_cfg(root, natural[::-1]))
    cfg = _one_dataset_cfg(root, natural)
    cfg['datasets'][0]['ann_file'] = 'natural/annotations/nope.json'
    with pytest.raises(FileNotFoundError,
                       match=r"'natural' not found: .*nope\.json"):
        DATASETS.build(cfg)
    with pytest.raises(ValueError, match='own pipeline'):
        DATASETS.build(_one_dataset_cfg(
            root, natural, pipeline=[dict(type='LoadImageFromFile')]))
    with pytest.raises(ValueError, match='2 dataset_names'):
        UODBDataset(datasets=[dict(type='CocoDataset')],
                    dataset_names=['a', 'b'], lazy_init=True)
    with pytest.raises(ValueError, match='must be unique'):
        UODBDataset(datasets=[dict(type='CocoDataset')] * 2,
                    dataset_names=['a', 'a'], lazy_init=True)


def test_empty_dataset_after_filtering_is_an_error(mini_uodb_root, tmp_path):
    init_default_scope('mmdet')
    coco = _json(mini_uodb_root, 'medical', 'train')
    coco['annotations'] = []
    (tmp_path / 'medical' / 'annotations').mkdir(parents=True)
    (tmp_path / 'medical' / 'annotations' / 'train.json').write_text(
        json.dumps(coco))
    cfg = _one_dataset_cfg(tmp_path, ('lesion', ), name='medical')
    cfg['filter_cfg'] = dict(filter_empty_gt=True)
    with pytest.raises(ValueError, match="dataset 'medical' .* no samples"):
        DATASETS.build(cfg)
