# Copyright (c) mmgem contributors. All rights reserved.
"""Guarantees of the compiled plan (spec section 3), routing, serialisation."""
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmgem.planner import (
    GEMPlan,
    PlanError,
    build_similarity,
    image_bucket,
    load_dataset_stats,
    make_plan,
)

REPO = Path(__file__).resolve().parents[2]
UODB_STATS = REPO / 'configs' / '_base_' / 'datasets' / 'uodb_stats.json'
DAMEX = [['clipart'], ['coco', 'voc', 'comic'], ['deeplesion'], ['dota'], ['kitchen'],
         ['kitti', 'lisa'], ['watercolor'], ['widerface']]


def expert_groups(plan):
    """Datasets sharing experts, as a set of frozensets (permutation-free)."""
    return {frozenset(plan.dataset_names[d] for d in np.flatnonzero(plan.quota[:, e]))
            for e in range(plan.num_experts)}


@pytest.mark.parametrize('k, m, cf, beta, seed', [
    (11, 8, 1.25, 0.0, 0), (11, 8, 1.0, 0.0, 1), (20, 6, 1.1, 1.0, 2),
    (7, 12, 1.0, 0.0, 3), (30, 8, 2.0, 0.5, 4), (9, 4, None, 0.0, 5)])
def test_every_dataset_routed_and_no_expert_over_capacity(instance, k, m, cf, beta, seed):
    names, loads, sim = instance(k, seed)
    plan = make_plan(names, loads, sim, m, capacity_factor=cf, beta=beta)
    np.testing.assert_array_equal(plan.quota.sum(1), np.floor(np.asarray(loads) + 0.5))
    assert np.all(plan.quota >= 0)
    if cf is not None:
        assert plan.capacity == math.ceil(round(cf * plan.images.sum() / m, 9))
        assert plan.expert_loads.max() <= plan.capacity
    assert np.all(plan.expert_loads > 0)  # no idle expert
    assert plan.rounded_cost >= plan.lp_bound  # certified: exactly, no tolerance
    # the rounded cost is the LP objective of the plan's shares
    share = plan.quota / plan.images[:, None]
    want = (plan.cost_matrix[:, plan.expert_anchor] * share).sum()
    assert plan.rounded_cost == pytest.approx(want)
    for d, name in enumerate(names):
        experts = plan.experts_of(name)
        assert experts and experts == plan.experts_of(d)
        for image_id in range(5):
            assert plan.expert_of(name, image_id) in experts


@pytest.mark.parametrize('k, m', [(3, 3), (4, 9), (5, 8), (1, 3)])
def test_identity_without_capacity_gives_each_dataset_own_experts(instance, k, m):
    names, loads, _ = instance(k, k)
    plan = make_plan(names, loads, np.eye(k), m, capacity_factor=None)
    owners = (plan.quota > 0).sum(0)
    assert np.all(owners == 1), 'an expert serves two datasets'
    counts = (plan.quota > 0).sum(1)
    assert np.all(counts >= 1) and counts.sum() == m
    assert plan.lp_bound == pytest.approx(0, abs=1e-7) and plan.rounded_cost == 0
    # extra experts go where the load per expert is highest (min-max optimal)
    best = min(max(n / c for n, c in zip(plan.images, combo))
               for combo in itertools.product(range(1, m + 1), repeat=k) if sum(combo) == m)
    assert max(plan.images / counts) == pytest.approx(best)


@pytest.mark.parametrize('loads', ['uodb', 'equal', 'random'])
def test_damex_prior_reproduces_damex_grouping(loads):
    stats = load_dataset_stats(str(UODB_STATS))
    n = dict(uodb=stats.loads, equal=[1000] * 11,
             random=list(np.random.default_rng(0).integers(100, 40000, 11)))[loads]
    sim = build_similarity(stats.names, prior=DAMEX)
    plan = make_plan(stats.names, n, sim, 8, capacity_factor=None)
    assert expert_groups(plan) == {frozenset(g) for g in DAMEX}
    assert plan.rounded_cost == pytest.approx(0, abs=1e-9)


def test_uodb_stats_prior_is_damex():
    stats = load_dataset_stats(str(UODB_STATS))
    assert {frozenset(g) for g in stats.prior} == {frozenset(g) for g in DAMEX}


def test_fewer_datasets_than_experts_splits_large_ones(instance):
    names, _, _ = instance(3, 0)
    plan = make_plan(names, [6000, 1000, 500], np.eye(3), 6, capacity_factor=1.0)
    assert np.all(plan.expert_loads > 0)
    assert plan.expert_loads.max() <= plan.capacity == 1250
    assert len(plan.experts_of(0)) >= 4  # 6000 images need ceil(6000 / 1250) experts


def test_same_inputs_give_bit_identical_plans(instance):
    names, loads, sim = instance(15, 11)
    a = make_plan(names, loads, sim, 6, capacity_factor=1.25)
    b = make_plan(names, loads, sim, 6, capacity_factor=1.25)
    assert a.to_json() == b.to_json() and a.hash == b.hash and a == b
    c = make_plan(names, loads, sim, 6, capacity_factor=1.5)
    assert c.hash != a.hash


def test_plan_and_routing_identical_across_processes(tmp_path, instance):
    names, loads, sim = instance(10, 2)
    plan = make_plan(names, loads, sim, 4, capacity_factor=1.0)
    sharded = [n for n in names if len(plan.experts_of(n)) > 1]
    assert sharded, 'the instance should shard a dataset'
    np.save(tmp_path / 'sim.npy', sim)
    script = (
        'import json, sys, types, numpy as np\n'
        # the planner alone, without mmgem/__init__ (which imports mmdet/torch)
        f'pkg = types.ModuleType("mmgem"); pkg.__path__ = [{str(REPO / "mmgem")!r}]\n'
        'sys.modules["mmgem"] = pkg\n'
        'from mmgem.planner import make_plan, image_bucket\n'
        f'names = {names!r}; loads = {[float(v) for v in loads]!r}\n'
        f'sim = np.load({str(tmp_path / "sim.npy")!r})\n'
        'p = make_plan(names, loads, sim, 4, capacity_factor=1.0)\n'
        f'ids = [(n, i) for n in {sharded!r} for i in list(range(50)) + ["img_007.jpg"]]\n'
        'assert "torch" not in sys.modules, "the planner imported torch"\n'
        'print(json.dumps(dict(hash=p.hash, routes=[p.expert_of(n, i) for n, i in ids],\n'
        '                      buckets=[image_bucket(n, i) for n, i in ids])))\n')
    outs = []
    for seed in ('1', '2'):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO))
        res = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                             text=True, check=True, cwd=str(REPO))
        outs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    ids = [(n, i) for n in sharded for i in list(range(50)) + ['img_007.jpg']]
    here = dict(hash=plan.hash, routes=[plan.expert_of(n, i) for n, i in ids],
                buckets=[image_bucket(n, i) for n, i in ids])
    assert outs[0] == outs[1] == here


def test_hash_routing_follows_the_quota(instance):
    names, loads, sim = instance(4, 0)
    plan = make_plan(names, [40000, 300, 200, 100], np.eye(4), 6, capacity_factor=1.0)
    d = 0
    row = plan.quota[d]
    assert (row > 0).sum() > 1
    ids = range(20000)
    counts = np.bincount([plan.expert_of(d, i) for i in ids], minlength=6)
    expected = len(ids) * row / row.sum()
    assert np.all(counts[row == 0] == 0)
    # a 5-sigma binomial band around the planned proportions
    sigma = np.sqrt(expected * (1 - row / row.sum()))
    assert np.all(np.abs(counts - expected) <= 5 * sigma + 1)


def test_json_round_trip_is_exact(tmp_path, instance):
    names, loads, sim = instance(9, 4)
    loads = np.asarray(loads) + 0.3  # fractional loads round-trip too
    plan = make_plan(names, loads, sim, 5, capacity_factor=1.1, beta=0.5)
    text = plan.to_json()
    again = GEMPlan.from_json(text)
    assert again.to_json() == text and again.hash == plan.hash
    for attr in ('loads', 'images', 'similarity', 'quota', 'expert_anchor'):
        a, b = getattr(plan, attr), getattr(again, attr)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), attr
    assert again.lp.x_value.tobytes() == plan.lp.x_value.tobytes()
    assert again.lp_bound == plan.lp_bound and again.rounded_cost == plan.rounded_cost
    assert GEMPlan.from_dict(plan.to_dict()) == plan
    path = plan.save(str(tmp_path / 'sub' / 'plan.json'))
    assert os.listdir(tmp_path / 'sub') == ['plan.json']  # no temporary left behind
    assert GEMPlan.load(path) == plan
    plan.save(path)  # overwrite in place
    assert GEMPlan.load(path).hash == plan.hash


def test_corrupt_plan_files_are_rejected(tmp_path, instance):
    names, loads, sim = instance(5, 1)
    plan = make_plan(names, loads, sim, 3)
    data = plan.to_dict()
    data['quota'][0][0] += 1
    data['images'][0] += 1
    with pytest.raises(PlanError, match='hash mismatch'):
        GEMPlan.from_dict(data)
    bad = tmp_path / 'bad.json'
    bad.write_text('{"format": "something else"}')
    with pytest.raises(PlanError, match=r"plan file .*bad.json.* is not a GEM plan"):
        GEMPlan.load(str(bad))
    bad.write_text('{not json')
    with pytest.raises(PlanError, match='is not valid JSON'):
        GEMPlan.load(str(bad))
    with pytest.raises(PlanError, match='does not exist'):
        GEMPlan.load(str(tmp_path / 'missing.json'))
    del data['hash']
    with pytest.raises(PlanError, match='has no hash'):
        GEMPlan.from_dict(data)
    del data['lp']
    with pytest.raises(PlanError, match="misses the field 'lp'"):
        GEMPlan.from_dict(data, force=True)


def test_unknown_dataset_in_routing(instance):
    names, loads, sim = instance(4, 1)
    plan = make_plan(names, loads, sim, 2)
    with pytest.raises(PlanError, match=r"dataset 'nope' is not in the plan"):
        plan.expert_of('nope', 1)
    with pytest.raises(PlanError, match=r'dataset index 9 is outside \[0, 4\)'):
        plan.experts_of(9)


def test_str_table_and_heat_map(tmp_path):
    stats = load_dataset_stats(str(UODB_STATS))
    sim = build_similarity(stats.names, prior=stats.prior, labels=stats.labels)
    plan = make_plan(stats.names, stats.loads, sim, 8, capacity_factor=1.25)
    text = str(plan)
    for name in stats.names:
        assert name in text
    assert 'expert load' in text and 'capacity' in text and plan.hash[:12] in text
    assert str(plan.capacity) in text
    png = plan.plot(str(tmp_path / 'plan.png'))
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert os.listdir(tmp_path) == ['plan.png']


def test_anchor_local_search_never_hurts_and_sometimes_helps(instance, monkeypatch):
    from mmgem.planner import compiler
    costs = []
    for seed in range(8):
        names, loads, sim = instance(10, 100 + seed)
        with_ls = make_plan(names, loads, sim, 4, capacity_factor=1.1, rounding='heuristic')
        with monkeypatch.context() as mp:
            mp.setattr(compiler, 'LOCAL_SEARCH_MAX_K', 0)
            without = make_plan(names, loads, sim, 4, capacity_factor=1.1,
                                rounding='heuristic')
        assert with_ls.lp_bound == without.lp_bound
        assert with_ls.rounded_cost <= without.rounded_cost + 1e-12
        costs.append((with_ls.rounded_cost, without.rounded_cost))
    assert any(a < b - 1e-9 for a, b in costs), costs


def test_a_plan_without_a_valid_hash_is_refused_unless_forced(tmp_path, instance):
    names, loads, sim = instance(6, 2)
    plan = make_plan(names, loads, sim, 3, capacity_factor=1.25)
    data = plan.to_dict()
    del data['hash']
    path = tmp_path / 'edited.json'
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match=r"plan file .*edited.json.* has no hash.*force=True"):
        GEMPlan.load(str(path))
    # a deliberate edit: move 10 images of a dataset to an expert with room
    d, src = np.unravel_index(int(np.argmax(plan.quota)), plan.quota.shape)
    room = plan.capacity - plan.expert_loads
    dst = int(np.argmax(np.where(np.arange(3) != src, room, -1)))
    full = int(np.argmin(np.where(np.arange(3) != src, room, 10**9)))
    assert room[dst] >= 10 and plan.quota[d, src] > room[full] + 11
    data['quota'][d][src] -= 10
    data['quota'][d][dst] += 10
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match='re-validating quota, capacity and cost'):
        edited = GEMPlan.load(str(path), force=True)
    assert edited.quota[d, dst] == plan.quota[d, dst] + 10
    share = edited.quota / edited.images[:, None]
    want = (edited.cost_matrix[:, edited.expert_anchor] * share).sum()
    assert edited.rounded_cost == pytest.approx(want, rel=1e-12)
    assert edited.rounded_cost != plan.rounded_cost or plan.expert_anchor[src] == \
        plan.expert_anchor[dst]
    assert GEMPlan.from_dict(edited.to_dict()) == edited  # hashed again
    # an edit that breaks the capacity is refused, forced or not
    move = int(room[full]) + 1 + (10 if full == dst else 0)
    data['quota'][d][full] += move
    data['quota'][d][src] -= move
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match=rf'expert e{full} is planned .* above the capacity'):
        GEMPlan.load(str(path), force=True)
    # a stale hash is a mismatch without force
    data = plan.to_dict()
    data['solver'] = 'edited'
    with pytest.raises(PlanError, match='hash mismatch'):
        GEMPlan.from_dict(data)
    # a wrong cost is found whatever the hash says, and recomputed with force
    data = plan.to_dict()
    data['rounded_cost'] *= 0.5
    with pytest.raises(PlanError, match='is not the cost of the quota'):
        GEMPlan.from_dict(data)
    data.pop('hash')
    with pytest.warns(UserWarning, match='rounded cost'):
        assert GEMPlan.from_dict(data, force=True).rounded_cost == plan.rounded_cost


def test_mismatches_name_the_fields(instance):
    names, loads, sim = instance(4, 1)
    spec = dict(sources=dict(labels=1.0), prior=None)
    plan = make_plan(names, loads, sim, 3, capacity_factor=1.25, beta=0.5,
                     similarity_spec=spec)
    same = dict(dataset_names=names, images=plan.images, num_experts=3, capacity_factor=1.25,
                beta=0.5, similarity_spec=spec)
    assert plan.mismatches(**same) == []
    images = plan.images.copy()
    images[2] = 50
    got = plan.mismatches(**dict(same, images=images, num_experts=4, capacity_factor=None,
                                 beta=0.0, similarity_spec=dict(spec, prior=[names[:2]])))
    text = '\n'.join(got)
    assert len(got) == 5
    assert f'loads (images per epoch): {names[2]} {plan.images[2]} -> 50' in text
    assert 'num_experts: the plan has 3, now 4' in text
    assert 'capacity_factor: the plan has 1.25, now None' in text
    assert 'beta: the plan has 0.5, now 0.0' in text and 'similarity:' in text
    assert plan.mismatches(dataset_names=names[::-1])[0].startswith('datasets: the plan has')


def test_non_symmetric_similarity_is_refused(instance):
    names, loads, sim = instance(4, 0)
    sim = sim.copy()
    sim[0, 1] = min(1.0, sim[1, 0] + 0.2)
    with pytest.raises(PlanError, match=r'not symmetric: similarity\[(0, 1|1, 0)\]'):
        make_plan(names, loads, sim, 2)
    make_plan(names, loads, (sim + sim.T) / 2, 2)  # the suggested fix works
