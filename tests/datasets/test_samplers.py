# Copyright (c) mmgem contributors. All rights reserved.
"""Tests of UODBSampler, SingleDatasetBatchSampler, the planner's load and
where ExpertLocalitySampler gets its plan (the model's)."""
import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.registry import init_default_scope
from mmengine.runner import IterBasedTrainLoop, Runner

import mmgem.datasets.samplers.uodb_sampler as uodb_sampler_module
from mmgem.datasets import SingleDatasetBatchSampler, UODBSampler, expected_images_per_dataset
from mmgem.datasets.samplers import ExpertLocalitySampler, largest_remainder
from mmgem.engine.runner import GEMRunner
from mmgem.models.layers.plan_routing import route_images
from mmgem.planner import build_similarity, image_bucket, make_plan
from mmgem.planner.hashing import bucket_thresholds

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


# ----------------------------------------------------------------------
# ExpertLocalitySampler: the plan is the model's
# ----------------------------------------------------------------------
GEM_CONFIG = 'configs/gem/gem-dino-tiny_r18_mini-uodb.py'


def _tiny_gem(repo_root, **kwargs):
    """Tiny GEM-DINO of the mini-UODB config, with ``kwargs``."""
    model_cfg = Config.fromfile(str(repo_root / GEM_CONFIG)).model
    return MODELS.build(dict(model_cfg, **kwargs))


def _plan_file(dataset, path):
    """A 4-expert plan of ``dataset`` (label similarity) whose thresholds
    split its images exactly (not the quota's quantiles), saved at ``path``."""
    names = list(dataset.dataset_names)
    similarity = build_similarity(
        names, weights=dict(labels=1.0),
        labels={n: list(dataset.dataset_classes[n]) for n in names})
    image_ids = {n: [] for n in names}
    for i, d in enumerate(dataset.sample_dataset_ids):
        image_ids[names[d]].append(dataset.get_data_info(i)['img_id'])
    plan = make_plan(names, dataset.dataset_lengths, similarity,
                     num_experts=4, capacity_factor=1.25, image_ids=image_ids)
    quantiles = np.stack([bucket_thresholds(row) for row in plan.quota])
    assert not np.array_equal(plan.thresholds, quantiles)
    plan.save(str(path))
    return plan


def _locality_loader(model, mini_cfg):
    """The training loader with ExpertLocalitySampler, as GEMRunner builds
    it for a runner holding ``model`` (the only attribute it reads)."""
    cfg = copy.deepcopy(mini_cfg.train_dataloader)
    cfg.sampler = dict(type='ExpertLocalitySampler', seed=3)
    return GEMRunner.build_dataloader(SimpleNamespace(model=model), cfg,
                                      seed=0)


def test_locality_sampler_reads_no_plan_file(mini_train_dataset, tmp_path):
    with pytest.raises(TypeError, match=r'no plan file.*model\.plan_file'):
        ExpertLocalitySampler(mini_train_dataset,
                              plan_file=str(tmp_path / 'gem_plan.json'))


def test_gem_runner_gives_the_models_plan_to_the_locality_sampler(
        repo_root, mini_cfg, mini_train_dataset, tmp_path):
    """A model given ``plan_file``: the loader GEMRunner builds draws by the
    model's plan before any hook runs, each image on the rank of the expert
    the model routes it to; without a plan, drawing names the way to one."""
    init_default_scope('mmdet')
    path = tmp_path / 'gem_plan.json'
    plan = _plan_file(mini_train_dataset, path)
    model = _tiny_gem(repo_root, plan_file=str(path))
    loader = _locality_loader(model, mini_cfg)
    sampler = loader.batch_sampler.sampler
    np.testing.assert_array_equal(sampler.quota, np.asarray(plan.quota))
    np.testing.assert_array_equal(sampler.thresholds,
                                  np.asarray(plan.thresholds))
    ds = loader.dataset
    ids = torch.as_tensor(np.asarray(ds.sample_dataset_ids))
    buckets = torch.tensor([
        image_bucket(ds.dataset_names[d], ds.get_data_info(i)['img_id'])
        for i, d in enumerate(ids.tolist())
    ])
    routed = route_images(model.routing_table.host()[2], ids, buckets)
    np.testing.assert_array_equal(sampler.image_experts(), routed.numpy())
    drawn = list(sampler)  # one rank holds every expert: the whole epoch
    assert sorted(drawn) == sorted(
        sampler._padded(sampler._global_indices()).tolist())

    loader = _locality_loader(_tiny_gem(repo_root), mini_cfg)
    with pytest.raises(RuntimeError, match='plan_file'):
        list(loader.batch_sampler.sampler)


class _LoopRunner(SimpleNamespace):
    """What mmengine's loops read of a runner, with GEMRunner's loader."""
    build_dataloader = GEMRunner.build_dataloader


def test_iter_based_loop_with_workers_draws_by_the_models_plan(
        repo_root, mini_cfg, mini_train_dataset, tmp_path):
    """``IterBasedTrainLoop`` with workers asks the sampler for indices when
    it is built, before any hook: ``model.plan_file`` is enough (GEMRunner
    hands the plan over), and without a plan the loop cannot be built."""
    init_default_scope('mmdet')
    path = tmp_path / 'gem_plan.json'
    _plan_file(mini_train_dataset, path)
    cfg = copy.deepcopy(mini_cfg.train_dataloader)
    cfg.update(sampler=dict(type='ExpertLocalitySampler', seed=3),
               num_workers=1, persistent_workers=False)

    def loop(model):
        runner = _LoopRunner(model=model, seed=0, _randomness_cfg={},
                             visualizer=SimpleNamespace())
        return IterBasedTrainLoop(runner, copy.deepcopy(cfg), max_iters=2)

    batch = next(loop(_tiny_gem(repo_root, plan_file=str(path)))
                 .dataloader_iterator)
    assert len(batch['data_samples']) == cfg.batch_size
    with pytest.raises(RuntimeError, match='plan_file'):
        loop(_tiny_gem(repo_root))


def test_locality_sampler_refuses_a_plan_of_other_datasets(
        mini_train_dataset):
    sampler = ExpertLocalitySampler(mini_train_dataset, seed=3)
    names = list(mini_train_dataset.dataset_names)
    quota = np.full((len(names), 2), 10, dtype=np.int64)
    with pytest.raises(ValueError, match=r'made for datasets .*dataset has'):
        sampler.set_plan(quota, dataset_names=names[::-1])
    sampler.set_plan(quota, dataset_names=names)
    np.testing.assert_array_equal(sampler.quota, quota)
