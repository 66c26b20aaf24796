# Copyright (c) mmgem contributors. All rights reserved.
"""Tests of UODBSampler, SingleDatasetBatchSampler and the planner's load."""
import copy

import numpy as np
import pytest
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmgem.datasets.samplers.uodb_sampler as uodb_sampler_module
from mmgem.datasets import SingleDatasetBatchSampler, UODBSampler, expected_images_per_dataset
from mmgem.datasets.samplers import largest_remainder

MIN_DRAWS = 10_000


def _draw_frequencies(sampler, ids, min_draws=MIN_DRAWS):
    """Per-dataset frequencies over whole epochs of at least min_draws."""
    counts = np.zeros(ids.max() + 1)
    epoch = 0
    while counts.sum() < min_draws:
        sampler.set_epoch(epoch)
        counts += np.bincount(ids[list(sampler)], minlength=len(counts))
        epoch += 1
    return counts / counts.sum(), epoch


@pytest.mark.parametrize('kwargs,weights', [
    (dict(mode='proportional'), lambda n: n),
    (dict(mode='ratio', ratios=[1, 0, 2, 1, 1, 5]),
     lambda n: np.array([1, 0, 2, 1, 1, 5], float)),
    (dict(mode='temperature', temperature=2.0), lambda n: n**0.5),
    (dict(mode='temperature', temperature=1e6), lambda n: np.ones_like(n)),
])
def test_empirical_frequencies_match_expectation(mini_train_dataset, kwargs,
                                                 weights):
    ds = mini_train_dataset
    ids = np.asarray(ds.sample_dataset_ids)
    lengths = np.asarray(ds.dataset_lengths, dtype=float)
    sampler = UODBSampler(ds, seed=0, **kwargs)
    expected = sampler.expected_images_per_dataset()
    assert expected.shape == (ds.num_datasets, )
    freq, epochs = _draw_frequencies(sampler, ids)
    assert epochs * len(sampler) >= MIN_DRAWS
    np.testing.assert_allclose(freq, expected / expected.sum(), atol=0.01)
    target = weights(lengths)
    np.testing.assert_allclose(freq, target / target.sum(), atol=0.01)
    assert expected.sum() == pytest.approx(len(ds))  # one dataset length


def test_upsampled_dataset_sees_every_image_before_repeats(
        mini_train_dataset):
    ds = mini_train_dataset
    ids = np.asarray(ds.sample_dataset_ids)
    medical = ds.dataset_names.index('medical')
    sampler = UODBSampler(ds, mode='ratio', ratios=[0, 0, 0, 0, 0, 1],
                          seed=3, epoch_length=2 * ds.dataset_lengths[medical]
                          + 5)
    drawn = np.array(list(sampler))
    assert (ids[drawn] == medical).all()
    counts = np.bincount(drawn, minlength=len(ds))[ids == medical]
    assert counts.min() >= 2 and counts.max() <= 3


def test_seeded_epochs_and_distributed_split(mini_train_dataset,
                                             monkeypatch):
    ds = mini_train_dataset
    a = UODBSampler(ds, mode='temperature', temperature=3, seed=5)
    b = UODBSampler(ds, mode='temperature', temperature=3, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    world = 3
    ranks = []
    for rank in range(world):
        monkeypatch.setattr(uodb_sampler_module, 'get_dist_info',
                            lambda r=rank: (r, world))
        s = UODBSampler(ds, mode='temperature', temperature=3, seed=5)
        ranks.append(list(s))
        assert len(s) == len(ranks[-1]) == -(-len(first) // world)
        np.testing.assert_allclose(
            s.expected_images_per_dataset().sum(), s.total_size)
    merged = [ranks[i % world][i // world]
              for i in range(world * len(ranks[0]))]
    assert merged[:len(first)] == first  # strided split of the same list


def test_largest_remainder_sums_exactly():
    counts = largest_remainder(np.array([1.0, 1.0, 1.0]), 10)
    assert counts.sum() == 10 and sorted(counts.tolist()) == [3, 3, 4]


def test_sampler_rejects_bad_arguments(mini_train_dataset):
    ds = mini_train_dataset
    with pytest.raises(ValueError, match="mode must be one of"):
        UODBSampler(ds, mode='uniform')
    with pytest.raises(ValueError, match='needs 6 ratios'):
        UODBSampler(ds, mode='ratio', ratios=[1, 2])
    with pytest.raises(ValueError, match=r'>= 0 and not all 0, got \[-1'):
        UODBSampler(ds, mode='ratio', ratios=[-1, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match='temperature > 0, got 0'):
        UODBSampler(ds, mode='temperature', temperature=0)
    with pytest.raises(TypeError, match='not a UODBDataset'):
        UODBSampler(list(range(5)))


@pytest.mark.parametrize('drop_last', [False, True])
@pytest.mark.parametrize('grouping', [False, True])
def test_single_dataset_batches(mini_train_dataset, drop_last, grouping):
    ds = mini_train_dataset
    ids = np.asarray(ds.sample_dataset_ids)
    sampler = DefaultSampler(ds, shuffle=True, seed=1)
    bs = 4
    batch_sampler = SingleDatasetBatchSampler(
        sampler, bs, drop_last=drop_last, aspect_ratio_grouping=grouping)
    batches = list(batch_sampler)
    assert len(batches) == len(batch_sampler)
    for batch in batches:
        assert len(set(ids[batch].tolist())) == 1
        assert 1 <= len(batch) <= bs
        if grouping:
            portrait = {ds.get_data_info(i)['width'] <
                        ds.get_data_info(i)['height'] for i in batch}
            assert len(portrait) == 1
    flat = sorted(i for b in batches for i in b)
    if drop_last:
        assert all(len(b) == bs for b in batches)
        assert set(flat) <= set(range(len(ds)))
    else:
        assert flat == list(range(len(ds)))


def test_expected_images_per_dataset_fallbacks(mini_train_dataset):
    ds = mini_train_dataset
    lengths = np.asarray(ds.dataset_lengths, dtype=float)
    np.testing.assert_array_equal(expected_images_per_dataset(None, ds),
                                  lengths)
    np.testing.assert_array_equal(
        expected_images_per_dataset(DefaultSampler(ds, seed=0), ds), lengths)
    np.testing.assert_array_equal(
        expected_images_per_dataset(InfiniteSampler(ds, seed=0), ds),
        lengths)
    uodb = UODBSampler(ds, mode='ratio', ratios=[1, 1, 1, 1, 1, 1], seed=0)
    batch = SingleDatasetBatchSampler(uodb, 4)
    np.testing.assert_array_equal(expected_images_per_dataset(batch, ds),
                                  uodb.expected_images_per_dataset())
    equal = batch.expected_images_per_dataset()  # integral counts per epoch
    assert equal.sum() == len(ds) and np.ptp(equal) <= 1
    assert (equal == np.round(equal)).all()


def test_expected_images_from_a_runner_dataloader(mini_cfg):
    """Given the DataLoader, the load comes from the UODBSampler behind
    mmdet's AspectRatioBatchSampler (``DataLoader.sampler`` is torch's
    SequentialSampler there, which knows nothing of the ratios)."""
    init_default_scope('mmdet')
    cfg = copy.deepcopy(mini_cfg.train_dataloader)
    cfg.sampler = dict(type='UODBSampler', mode='temperature',
                       temperature=4)
    loader = Runner.build_dataloader(cfg, seed=0)
    want = loader.batch_sampler.sampler.expected_images_per_dataset()
    got = expected_images_per_dataset(loader, loader.dataset)
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(
        got, np.asarray(loader.dataset.dataset_lengths, float))
