# Copyright (c) mmgem contributors. All rights reserved.
"""The tensor routing rule equals the planner's numpy rule, bit for bit."""
import numpy as np
import pytest
import torch
from test_gem_dino import OFFSETS, _batch, _build, _gem_cfg

from mmgem.models.layers import quantile_thresholds, route_images
from mmgem.planner import (
    BUCKET_END,
    bucket_thresholds,
    expert_of_bucket,
    experts_of_buckets,
    image_bucket,
    make_plan,
)
from tools.benchmark.routing import routing_from_plan

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def exact_plan(num_datasets=5, num_experts=6, seed=0):
    """A plan of sharded datasets whose thresholds are cut at their ids."""
    rng = np.random.default_rng(seed)
    names = [f'set{d}' for d in range(num_datasets)]
    loads = rng.integers(200, 3000, num_datasets).astype(float)
    sim = np.eye(num_datasets)
    ids = {n: [f'{n}/{i}.jpg' if d % 2 else i for i in range(int(v))]
           for d, (n, v) in enumerate(zip(names, loads))}
    plan = make_plan(names, loads, sim, num_experts, capacity_factor=1.0, image_ids=ids,
                     rounding='heuristic')
    assert (plan.quota > 0).sum() > num_datasets, 'some dataset should be sharded'
    return plan, ids


@pytest.mark.parametrize('device', DEVICES)
def test_tensor_rule_equals_numpy_rule_bit_for_bit(device):
    plan, ids = exact_plan()
    rng = np.random.default_rng(1)
    thresholds = torch.from_numpy(plan.thresholds).to(device)
    for d, name in enumerate(plan.dataset_names):
        row = plan.thresholds[d]
        train = [image_bucket(name, i) for i in ids[name]]
        edges = np.concatenate([row, row - 1, row + 1, [0, 1, BUCKET_END - 1]])
        edges = edges[(edges >= 0) & (edges < BUCKET_END)]
        unseen = rng.integers(0, BUCKET_END, 2000)
        buckets = np.concatenate([train, edges, unseen]).astype(np.int64)
        want = experts_of_buckets(row, buckets)
        scalar = [expert_of_bucket(row, int(b)) for b in buckets[::97]]
        assert want[::97].tolist() == scalar
        got = route_images(thresholds, torch.full((buckets.size, ), d, device=device),
                           torch.from_numpy(buckets).to(device))
        assert got.device.type == device and got.dtype == torch.long
        np.testing.assert_array_equal(got.cpu().numpy(), want)
        # the training images land exactly on the quota
        np.testing.assert_array_equal(np.bincount(want[:len(train)], minlength=6),
                                      plan.quota[d])
    # mixed datasets in one batch, against the plan's own rule
    names = list(plan.dataset_names)
    batch = [(d, f'unseen{j}') for j in range(40) for d in range(len(names))]
    ds = torch.tensor([d for d, _ in batch], device=device)
    bs = torch.tensor([image_bucket(names[d], i) for d, i in batch], device=device)
    got = route_images(thresholds, ds, bs).cpu().tolist()
    assert got == [plan.expert_of(d, i) for d, i in batch]


def test_quantile_thresholds_are_the_planners():
    quota = torch.tensor([[3, 1, 0, 0], [0, 0, 2, 2], [0, 0, 0, 0]])
    t = quantile_thresholds(quota)
    assert t[2].tolist() == [0, 0, 0, 0]
    for d in range(2):
        assert t[d].tolist() == bucket_thresholds(quota[d].numpy()).tolist()
    ids = torch.tensor([0, 1, 0])
    buckets = torch.tensor([BUCKET_END - 5, 7, 10])
    assert routing_from_plan(quota[:2], ids, buckets).image_experts.tolist() == [1, 2, 0]
    # explicit thresholds win
    exact = torch.tensor([[8, BUCKET_END, BUCKET_END, BUCKET_END],
                          [0, 0, 8, BUCKET_END]])
    assert routing_from_plan(quota[:2], ids, buckets, exact).image_experts.tolist() == \
        [1, 2, 1]


def test_gem_dino_routes_the_plans_training_images_exactly():
    plan, ids = exact_plan(num_datasets=2, num_experts=4, seed=3)
    model = _build(_gem_cfg(num_experts=4, num_datasets=2, label_offsets=OFFSETS))
    model.install_plan(plan.quota, None, plan.hash, dataset_names=plan.dataset_names,
                       thresholds=plan.thresholds)
    np.testing.assert_array_equal(model.installed_plan_thresholds(), plan.thresholds)
    assert model.routing_table.thresholds.shape == (2, 4)
    assert model.routing_table.thresholds.dtype == torch.long
    # the buffers travel with the state dict (checkpoints carry the rule)
    fresh = _build(_gem_cfg(num_experts=4, num_datasets=2, label_offsets=OFFSETS), seed=1)
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(fresh.installed_plan_thresholds(), plan.thresholds)
    fresh.train()
    inputs, samples = _batch(fresh, [0, 1, 1, 0], training=True)
    for s, image_id in zip(samples, [3, 'set1/7.jpg', 'set1/900.jpg', 11]):
        s.set_metainfo(dict(img_id=image_id))
    routing = fresh._routing(torch.zeros(4, 4, 256), None, samples)['batch']
    want = [plan.expert_of(s.metainfo['dataset_id'], s.metainfo['img_id']) for s in samples]
    assert routing.image_experts.tolist() == want
    # a counts-only installation routes by the quantiles of the quota
    other = _build(_gem_cfg(num_experts=4, num_datasets=2, label_offsets=OFFSETS))
    other.install_plan(plan.quota, None, 'counts', dataset_names=plan.dataset_names)
    np.testing.assert_array_equal(
        other.installed_plan_thresholds(),
        np.stack([bucket_thresholds(r) for r in plan.quota]))


def test_bad_or_missing_thresholds_are_refused():
    plan, _ = exact_plan(num_datasets=2, num_experts=4, seed=3)
    model = _build(_gem_cfg(num_experts=4, num_datasets=2, label_offsets=OFFSETS))
    bad = plan.thresholds.copy()
    bad[0] = bad[0][::-1]
    with pytest.raises(ValueError, match="thresholds do not fit the quota: dataset 0"):
        model.install_plan(plan.quota, None, plan.hash, thresholds=bad)
    # a checkpoint of the plan's quota without thresholds (an older model)
    model.install_plan(plan.quota, None, plan.hash, dataset_names=plan.dataset_names,
                       thresholds=plan.thresholds)
    # in the format of checkpoints made before the routing table (plan buffers)
    state = model.state_dict()
    del state['routing_table._extra_state']
    state['plan_quota'] = torch.from_numpy(plan.quota.astype(np.int64))
    state['plan_thresholds'] = torch.zeros(2, 4, dtype=torch.long)
    model.load_state_dict(state)
    np.testing.assert_array_equal(model.installed_plan_quota(), plan.quota)
    model.train()
    inputs, samples = _batch(model, [0, 1], training=True)
    with pytest.raises(ValueError, match='re-plan it with GEMPlannerHook'):
        model._routing(torch.zeros(2, 4, 256), None, samples)


def test_model_plan_file_installs_the_thresholds(tmp_path):
    plan, _ = exact_plan(num_datasets=2, num_experts=4, seed=3)
    path = plan.save(str(tmp_path / 'plan.json'))
    model = _build(_gem_cfg(num_experts=4, num_datasets=2, label_offsets=OFFSETS,
                            plan_file=path))
    np.testing.assert_array_equal(model.installed_plan_thresholds(), plan.thresholds)
    assert model.installed_plan_hash() == plan.hash
