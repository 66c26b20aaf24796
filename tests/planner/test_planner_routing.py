# Copyright (c) mmgem contributors. All rights reserved.
"""Exact quotas: bucket thresholds cut at the training images."""
from pathlib import Path

import numpy as np
import pytest

from mmgem.planner import (
    BUCKET_END,
    GEMPlan,
    bucket_thresholds,
    build_similarity,
    expert_of_bucket,
    experts_of_buckets,
    image_bucket,
    image_buckets,
    largest_remainder,
    load_dataset_stats,
    make_plan,
)

REPO = Path(__file__).resolve().parents[2]
UODB_STATS = REPO / 'configs' / '_base_' / 'datasets' / 'uodb_stats.json'


def uodb_ids(stats):
    """UODB-sized id sets: integer COCO ids for some datasets, file names for others."""
    out = {}
    for i, (name, n) in enumerate(zip(stats.names, stats.loads)):
        n = int(n)
        out[name] = (list(range(1, n + 1)) if i % 2 else
                     [f'{name}_{j:06d}.jpg' for j in range(n)])
    return out


@pytest.fixture(scope='module')
def uodb():
    stats = load_dataset_stats(str(UODB_STATS))
    sim = build_similarity(stats.names, labels=stats.labels)
    return stats, sim, uodb_ids(stats)


@pytest.mark.parametrize('m', [8, 16])
def test_exact_quotas_on_uodb_sized_id_sets(uodb, m):
    stats, sim, ids = uodb
    plan = make_plan(stats.names, stats.loads, sim, m, capacity_factor=1.0, image_ids=ids)
    assert all(v is not None for v in plan.id_digests)
    realised = plan.realised_counts(ids)
    np.testing.assert_array_equal(realised, plan.quota)  # exactly, every expert
    assert realised.sum(0).max() <= plan.capacity
    # the same quota routed by quantiles (counts only) holds only on average:
    # some expert is over its capacity with these very images
    counts_only = make_plan(stats.names, stats.loads, sim, m, capacity_factor=1.0)
    np.testing.assert_array_equal(counts_only.quota, plan.quota)
    assert counts_only.realised_counts(ids).sum(0).max() > plan.capacity
    # with_image_ids on the counts-only plan gives the same exact plan
    assert counts_only.with_image_ids(ids) == plan


def test_unseen_images_follow_the_same_thresholds(uodb):
    stats, sim, ids = uodb
    plan = make_plan(stats.names, stats.loads, sim, 8, capacity_factor=1.0, image_ids=ids)
    for d, name in enumerate(stats.names):
        test_ids = [f'test_{name}_{j}' for j in range(300)] + list(range(10**7, 10**7 + 300))
        got = plan.route(name, test_ids)
        assert set(got.tolist()) <= set(plan.experts_of(name))
        # one image at a time, the scalar rule and a direct count agree
        for image_id, e in zip(test_ids[::37], got[::37]):
            bucket = image_bucket(name, image_id)
            assert plan.expert_of(name, image_id) == e
            assert e == expert_of_bucket(plan.thresholds[d], bucket)
            assert e == int(np.sum(plan.thresholds[d] <= bucket))


def test_thresholds_cut_the_sorted_buckets():
    rng = np.random.default_rng(0)
    buckets = rng.integers(0, BUCKET_END, 1000)
    row = np.array([0, 300, 0, 200, 500, 0])
    t = bucket_thresholds(row, buckets)
    assert np.all(np.diff(t) >= 0) and t[0] == 0 and t[-1] == BUCKET_END
    np.testing.assert_array_equal(np.bincount(experts_of_buckets(t, buckets), minlength=6), row)
    # another number of images than the load: the largest-remainder share
    few = buckets[:77]
    t = bucket_thresholds(row, few)
    np.testing.assert_array_equal(np.bincount(experts_of_buckets(t, few), minlength=6),
                                  largest_remainder(row, 77))
    # without images: quantiles of the bucket range
    t = bucket_thresholds(row)
    assert t.tolist()[:4] == [0, BUCKET_END * 300 // 1000, BUCKET_END * 300 // 1000,
                              BUCKET_END * 500 // 1000]
    assert t[4] == t[5] == BUCKET_END
    counts = np.bincount(experts_of_buckets(t, buckets), minlength=6)
    assert counts[[0, 2, 5]].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match='routes no image'):
        bucket_thresholds([0, 0])


def test_buckets_are_below_the_end():
    assert all(0 <= image_bucket('d', i) < BUCKET_END for i in range(2000))
    np.testing.assert_array_equal(image_buckets('d', list(range(50))),
                                  [image_bucket('d', i) for i in range(50)])


def test_thresholds_round_trip_and_enter_the_hash(tmp_path, instance):
    names, loads, sim = instance(6, 3)
    loads = np.round(loads)
    ids = {n: list(range(int(v))) for n, v in zip(names, loads)}
    plan = make_plan(names, loads, sim, 4, capacity_factor=1.0, image_ids=ids)
    again = GEMPlan.load(plan.save(str(tmp_path / 'plan.json')))
    assert again == plan and again.thresholds.tobytes() == plan.thresholds.tobytes()
    assert again.id_digests == plan.id_digests
    other = {n: [i + 1 for i in v] for n, v in ids.items()}
    assert plan.with_image_ids(other).hash != plan.hash
    # corrupt thresholds are found even when the hash is recomputed
    data = plan.to_dict()
    row = data['thresholds'][0]
    data['thresholds'][0] = row[::-1]
    data.pop('hash')
    with pytest.warns(UserWarning, match='thresholds re-derived'):
        fixed = GEMPlan.from_dict(data, force=True)
    assert fixed.id_digests == [None] * 6
