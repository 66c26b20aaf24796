# Copyright (c) mmgem contributors. All rights reserved.
"""UODB samplers, loads and the planner hook over dataset wrappers, and
wrappers as sub-datasets of UODBDataset.

What a loader draws is counted independently of mmgem's index maps: each
drawn index is read back through the wrapper's own ``get_data_info`` (which
mmengine implements), and its ``dataset_id`` counted.
"""
import copy
from pathlib import Path

import numpy as np
import pytest
from mmdet.registry import DATASETS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from mmgem.datasets import UODBSampler, expected_images_per_dataset, find_uodb_dataset
from mmgem.datasets.samplers import ExpertLocalitySampler, uodb_index_map

REPO = Path(__file__).resolve().parents[2]


def _wrapped(cfg: Config, wrapper: str) -> dict:
    uodb = copy.deepcopy(cfg.train_dataloader.dataset)
    if wrapper == 'ClassBalancedDataset':
        return dict(type=wrapper, oversample_thr=0.5, dataset=uodb)
    return dict(type=wrapper, times=3, dataset=uodb)


def _drawn_counts(dataset, indices, num_datasets: int) -> np.ndarray:
    """Dataset of every drawn index, through the wrapper's get_data_info."""
    ids = [dataset.get_data_info(int(i))['dataset_id'] for i in indices]
    return np.bincount(ids, minlength=num_datasets)


@pytest.mark.parametrize('wrapper', ['ClassBalancedDataset', 'RepeatDataset'])
@pytest.mark.parametrize('sampler', ['UODBSampler', 'DefaultSampler'])
def test_loader_draws_equal_planner_loads(mini_cfg, wrapper, sampler):
    """Over a wrapper, every dataset is drawn and the loads the planner hook
    reads (expected_images_per_dataset of the training loader) are what the
    loader draws in an epoch."""
    init_default_scope('mmdet')
    loader_cfg = copy.deepcopy(mini_cfg.train_dataloader)
    loader_cfg.dataset = _wrapped(mini_cfg, wrapper)
    loader_cfg.sampler = dict(type=sampler, shuffle=True, seed=0)
    loader_cfg.num_workers = 0
    loader_cfg.persistent_workers = False
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    wrapped = loader.dataset
    uodb = find_uodb_dataset(wrapped)
    k = uodb.num_datasets
    drawn = _drawn_counts(wrapped, [i for batch in loader.batch_sampler for i in batch], k)
    assert drawn.sum() == len(wrapped) and (drawn > 0).all()
    # what GEMPlannerHook._make_plan computes
    loads = expected_images_per_dataset(loader, uodb)
    np.testing.assert_allclose(loads, drawn)
    if wrapper == 'RepeatDataset':
        np.testing.assert_array_equal(drawn, 3 * np.asarray(uodb.dataset_lengths))
    else:  # rare classes repeated: more draws than images, not 3x
        assert (drawn >= np.asarray(uodb.dataset_lengths)).all()
        assert drawn.sum() > len(uodb)


@pytest.mark.parametrize('mode,kwargs', [('ratio', dict(ratios=[1, 1, 1, 1, 1, 2])),
                                         ('temperature', dict(temperature=2.0))])
def test_uodb_sampler_modes_over_class_balanced(mini_cfg, mode, kwargs):
    init_default_scope('mmdet')
    wrapped = DATASETS.build(_wrapped(mini_cfg, 'ClassBalancedDataset'))
    sampler = UODBSampler(wrapped, mode=mode, seed=1, **kwargs)
    k = find_uodb_dataset(wrapped).num_datasets
    drawn = _drawn_counts(wrapped, list(sampler), k)
    np.testing.assert_allclose(sampler.expected_images_per_dataset(), drawn)
    assert all(0 <= i < len(wrapped) for i in sampler)


def test_planner_hook_loads_over_repeat_dataset(mini_uodb_root, tmp_path):
    """GEMPlannerHook in a real Runner, training data wrapped in
    RepeatDataset(times=3) with mmengine's DefaultSampler: the plan's loads
    are 3x the dataset lengths, what the loader draws."""
    from mmgem.engine import GEMPlannerHook
    init_default_scope('mmdet')
    # unformatted: the Runner logs the config text, yapf-formatting it would cost seconds
    # (Config.fromfile of MMEngine 0.10.7 drops its format_python_code, hence the copy)
    cfg = Config.fromfile(str(REPO / 'configs' / 'gem' / 'gem-dino-tiny_r18_mini-uodb.py'))
    cfg = Config(cfg.to_dict(), filename=cfg.filename, format_python_code=False)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(mini_uodb_root)
    cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=3,
                                        dataset=cfg.train_dataloader.dataset)
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True)
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.custom_hooks[0].similarity = dict(sources=dict(labels=1.0))
    cfg.work_dir = str(tmp_path)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=10**6)
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    hook = next(h for h in runner.hooks if isinstance(h, GEMPlannerHook))
    hook.before_train(runner)
    loader = runner.train_dataloader
    uodb = find_uodb_dataset(loader.dataset)
    drawn = _drawn_counts(loader.dataset, [i for b in loader.batch_sampler for i in b],
                          uodb.num_datasets)
    np.testing.assert_allclose(hook.plan.loads, drawn)
    np.testing.assert_allclose(hook.plan.loads, 3 * np.asarray(uodb.dataset_lengths))


def test_unknown_wrappers_and_unsafe_subclasses_are_refused(mini_cfg, mini_train_dataset):
    from mmdet.datasets import MultiImageMixDataset
    init_default_scope('mmdet')
    mix = MultiImageMixDataset(mini_train_dataset, pipeline=[])
    with pytest.raises(TypeError, match='MultiImageMixDataset wraps a UODBDataset but'):
        UODBSampler(mix)
    with pytest.raises(TypeError, match='MultiImageMixDataset wraps a UODBDataset but'):
        expected_images_per_dataset(None, mix)
    wrapped = DATASETS.build(_wrapped(mini_cfg, 'ClassBalancedDataset'))
    with pytest.raises(TypeError, match='ExpertLocalitySampler reads the UODBDataset by its '
                       'own indices, but the dataset is wrapped in ClassBalancedDataset'):
        ExpertLocalitySampler(wrapped, seed=0)

    class Weighted:  # a sampler that does not say what it draws
        dataset = mini_train_dataset

    with pytest.raises(TypeError, match='the sampler Weighted neither reports its load'):
        expected_images_per_dataset(Weighted(), mini_train_dataset)


def test_nested_index_map(mini_cfg):
    init_default_scope('mmdet')
    inner = _wrapped(mini_cfg, 'ClassBalancedDataset')
    outer = DATASETS.build(dict(type='RepeatDataset', times=2, dataset=inner))
    uodb, index, chain = uodb_index_map(outer)
    assert chain == ['RepeatDataset', 'ClassBalancedDataset']
    assert len(index) == len(outer)
    for i in (0, len(outer) // 2 + 3, len(outer) - 1):
        assert outer.get_data_info(i)['img_path'] == uodb.get_data_info(int(index[i]))['img_path']


def test_wrappers_as_sub_datasets(mini_cfg, mini_uodb_root):
    """A sub-dataset may be a RepeatDataset, ClassBalancedDataset or
    ConcatDataset: the wrapper's data_root and the other defaults reach the
    datasets inside, labels are offset as usual."""
    init_default_scope('mmdet')
    cfg = copy.deepcopy(mini_cfg.train_dataloader.dataset)
    natural, aerial, signs = (copy.deepcopy(cfg.datasets[i]) for i in range(3))
    natural_test = dict(copy.deepcopy(natural), ann_file='natural/annotations/test.json')
    cfg.datasets[0] = dict(type='ConcatDataset', datasets=[natural, natural_test])
    cfg.datasets[1] = dict(type='RepeatDataset', times=2, dataset=aerial)
    cfg.datasets[2] = dict(type='ClassBalancedDataset', oversample_thr=1.0, dataset=signs)
    plain = DATASETS.build(mini_cfg.train_dataloader.dataset)
    ds = DATASETS.build(cfg)
    n_test = len(DATASETS.build(dict(natural_test, data_root=str(mini_uodb_root),
                                     pipeline=[])))
    lengths = plain.dataset_lengths
    assert ds.dataset_lengths[0] == lengths[0] + n_test
    assert ds.dataset_lengths[1] == 2 * lengths[1]
    assert ds.dataset_lengths[2] > lengths[2]  # every signs image has a class with f <= 1
    assert ds.dataset_lengths[3:] == lengths[3:]
    assert ds.metainfo['ann_files'][0] == ''  # two files: none to evaluate against
    assert ds.metainfo['ann_files'][1].endswith('aerial/annotations/train.json')
    off = ds.label_offsets[1]
    d1 = [i for i in range(len(ds)) if ds.get_data_info(i)['dataset_id'] == 1]
    assert all(off <= label < ds.label_offsets[2] for i in d1 for label in ds.get_cat_ids(i))
    sample = ds[d1[-1]]
    assert sample['data_samples'].metainfo['dataset_name'] == 'aerial'
    with pytest.raises(ValueError, match='dataset_indices of .natural. needs one dataset'):
        DATASETS.build(dict(cfg, dataset_indices=dict(natural=3)))
    repeat_ok = DATASETS.build(dict(cfg, dataset_indices=dict(aerial=3)))
    assert repeat_ok.dataset_lengths[1] == 6


def test_single_dataset_batches_over_class_balanced(mini_cfg):
    from mmgem.datasets import SingleDatasetBatchSampler
    init_default_scope('mmdet')
    wrapped = DATASETS.build(_wrapped(mini_cfg, 'ClassBalancedDataset'))
    batches = list(SingleDatasetBatchSampler(UODBSampler(wrapped, seed=0), batch_size=3,
                                             aspect_ratio_grouping=True))
    assert sum(len(b) for b in batches) == len(wrapped)
    for batch in batches:  # the datasets of the samples the wrapper reads
        infos = [wrapped.get_data_info(i) for i in batch]
        assert len({info['dataset_id'] for info in infos}) == 1
        assert len({info['width'] < info['height'] for info in infos}) == 1
