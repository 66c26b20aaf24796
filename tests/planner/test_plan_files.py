# Copyright (c) mmgem contributors. All rights reserved.
"""Plan files against hostile input, the hash over quota and thresholds,
and the fairness exponent against an independent LP."""
import itertools
import json
import re

import numpy as np
import pytest
from scipy.optimize import linprog

from mmgem.planner import GEMPlan, PlanError, make_plan, plan_schema


@pytest.fixture(scope='module')
def plan():
    rng = np.random.default_rng(0)
    sim = rng.uniform(0, 1, (4, 4))
    sim = (sim + sim.T) / 2
    np.fill_diagonal(sim, 1.0)
    return make_plan(['a', 'b', 'c', 'd'], [300, 50, 120, 80], sim, 6, capacity_factor=1.25,
                     rounding='heuristic')


def _edit_text(plan: GEMPlan, field: str, value_text: str) -> str:
    """The plan's JSON with the value of a top-level field replaced by raw
    JSON text (which ``json.dumps`` could not write)."""
    text = plan.to_json()
    new, count = re.subn(rf'^  "{field}": .*?(?=,\n  "|\n}})', f'  "{field}": {value_text}',
                         text, count=1, flags=re.M | re.S)
    assert count == 1
    return new


@pytest.mark.parametrize('case,field', [
    ('nan', 'beta'), ('inf', 'rounded_cost'), ('overflow', 'beta'), ('huge int', 'capacity'),
    ('deep', 'similarity_spec'), ('very deep', 'integral'), ('unknown', 'surprise'),
    ('missing', 'thresholds'), ('type', 'num_experts'), ('lp unknown', "lp.'extra'"),
    ('lp missing', "lp.'bound'"),
])
def test_each_bad_plan_file_is_a_plan_error_naming_file_and_field(tmp_path, plan, case, field):
    """Before: RecursionError, ValueError (NaN), OverflowError, silently
    accepted unknown fields; none named the file."""
    data = plan.to_dict()
    if case == 'nan':
        text = _edit_text(plan, 'beta', 'NaN')
    elif case == 'inf':
        text = _edit_text(plan, 'rounded_cost', 'Infinity')
    elif case == 'overflow':
        text = _edit_text(plan, 'beta', '1e999')
    elif case == 'huge int':
        text = _edit_text(plan, 'capacity', '9' * 5000)
    elif case == 'deep':
        text = _edit_text(plan, 'similarity_spec', '{"a":' * 30 + '1' + '}' * 30)
    elif case == 'very deep':
        text = _edit_text(plan, 'integral', '[' * 100000 + ']' * 100000)
    elif case == 'unknown':
        data['surprise'] = 1
        text = json.dumps(data)
    elif case == 'missing':
        del data['thresholds']
        text = json.dumps(data)
    elif case == 'type':
        data['num_experts'] = 'six'
        text = json.dumps(data)
    elif case == 'lp unknown':
        data['lp']['extra'] = []
        text = json.dumps(data)
    else:
        del data['lp']['bound']
        text = json.dumps(data)
    path = tmp_path / 'bad_plan.json'
    path.write_text(text)
    with pytest.raises(PlanError) as info:
        GEMPlan.load(str(path))
    message = str(info.value)
    assert f"plan file '{path}'" in message, message
    quoted = field if field.startswith('lp.') else repr(field)
    assert quoted in message, message


def test_a_plan_file_over_the_size_limit_is_refused_before_reading(tmp_path, plan,
                                                                   monkeypatch):
    """The size is checked before the file is read (before: a 200 MB file
    was read whole)."""
    path = tmp_path / 'big_plan.json'
    path.write_text(plan.to_json() + ' ' * (plan_schema.MAX_PLAN_BYTES + 1))
    opened = []
    real_open = open
    monkeypatch.setattr('builtins.open', lambda p, *a, **k: opened.append(p) or
                        real_open(p, *a, **k))
    with pytest.raises(PlanError, match=rf"plan file '{re.escape(str(path))}' is \d+ bytes, "
                       'more than a plan file may be'):
        GEMPlan.load(str(path))
    assert str(path) not in opened
    monkeypatch.undo()
    path.write_text(plan.to_json())
    assert GEMPlan.load(str(path)) == plan


def test_a_model_plan_file_reports_a_bad_plan_file_as_plan_error(tmp_path, plan):
    """``model.plan_file`` (the one place a plan file enters) names the file
    and the field."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmgem  # noqa: F401  (registers GEMDINO)
    path = tmp_path / 'bad_plan.json'
    path.write_text(_edit_text(plan, 'beta', 'NaN'))
    cfg = Config.fromfile('configs/gem/gem-dino-tiny_r18_mini-uodb.py')
    init_default_scope('mmdet')
    with pytest.raises(PlanError, match=rf"{re.escape(str(path))}.*field 'beta' holds NaN"):
        MODELS.build(dict(cfg.model, plan_file=str(path)))


# --- the hash covers the quota and the thresholds ---------------------------

def _quota_only_edit(plan: GEMPlan):
    """Move one image of a dataset between two experts of the same anchor
    (the cost, the capacity and the thresholds still fit): an edit of the
    quota alone."""
    for d, e1, e2 in itertools.product(range(plan.num_datasets), range(plan.num_experts),
                                       range(plan.num_experts)):
        if e1 != e2 and plan.expert_anchor[e1] == plan.expert_anchor[e2] and \
                plan.quota[d, e1] >= 2 and plan.quota[d, e2] >= 1 and \
                plan.expert_loads[e2] < plan.capacity:
            data = plan.to_dict()
            data['quota'][d][e1] -= 1
            data['quota'][d][e2] += 1
            return data
    raise AssertionError('no quota-only edit in this plan')


def test_a_plan_with_only_its_quota_edited_is_a_hash_mismatch(instance):
    names, loads, sim = instance(4, 3)
    plan = make_plan(names, loads, sim, 9, capacity_factor=1.5, rounding='heuristic')
    data = _quota_only_edit(plan)
    edited = GEMPlan.from_dict(data, force=True, _quiet=True)  # a valid plan otherwise
    assert not np.array_equal(edited.quota, plan.quota)
    with pytest.raises(PlanError, match='hash mismatch'):
        GEMPlan.from_dict(data)


def test_a_plan_with_only_its_thresholds_edited_is_a_hash_mismatch(plan):
    data = plan.to_dict()
    d, e = next((d, e) for d in range(plan.num_datasets) for e in range(plan.num_experts - 1)
                if plan.quota[d, e] > 0 and plan.thresholds[d, e] > (
                    plan.thresholds[d, e - 1] if e else 0) + 1)
    data['thresholds'][d][e] -= 1  # still non-decreasing, still fits the quota
    edited = GEMPlan.from_dict(data, force=True, _quiet=True)
    assert edited.thresholds[d, e] == plan.thresholds[d, e] - 1  # kept: a valid table
    with pytest.raises(PlanError, match='hash mismatch'):
        GEMPlan.from_dict(data)


# --- beta against an independent LP ----------------------------------------

def _reference_lp(loads, sim, num_experts, beta):
    """The spec's LP (gem-spec.md section 2), capacity off, with scipy's
    HiGHS: variables x (K x K), y (K), u (K)."""
    n = np.asarray(loads, dtype=np.float64)
    k = len(n)
    w = n ** beta / (n ** beta).sum()
    nx = k * k
    cost = np.concatenate([(w[:, None] * (1 - sim)).ravel(), np.zeros(2 * k)])
    a_eq, b_eq = [], []
    for d in range(k):  # sum_c x_dc = 1
        row = np.zeros(nx + 2 * k)
        row[d * k:(d + 1) * k] = 1
        a_eq.append(row)
        b_eq.append(1)
    row = np.zeros(nx + 2 * k)  # sum_c u_c = M
    row[nx + k:] = 1
    a_eq.append(row)
    b_eq.append(num_experts)
    a_ub = []
    for d, c in itertools.product(range(k), range(k)):  # x_dc <= y_c
        row = np.zeros(nx + 2 * k)
        row[d * k + c], row[nx + c] = 1, -1
        a_ub.append(row)
    for c in range(k):  # y_c <= u_c
        row = np.zeros(nx + 2 * k)
        row[nx + c], row[nx + k + c] = 1, -1
        a_ub.append(row)
    bounds = [(0, 1)] * (nx + k) + [(0, None)] * k
    res = linprog(cost, A_ub=np.array(a_ub), b_ub=np.zeros(len(a_ub)), A_eq=np.array(a_eq),
                  b_eq=np.array(b_eq), bounds=bounds, method='highs')
    assert res.status == 0
    return res.fun, res.x[:nx].reshape(k, k)


def test_beta_changes_the_optimal_plan_as_the_reference_lp_does():
    """A big dataset ``A`` close to a small ``B``; ``B`` also serves ``E``,
    which ``A`` serves badly; ``D`` is far from all. Two experts, no capacity. Weighing datasets
    equally (beta 0), the best is to open ``B`` and ``D`` (``A`` joins
    ``B``); weighing by volume (beta 1), ``A`` must keep its own expert and
    ``B`` joins it. An implementation that ignores beta (``n ** 0``) plans
    the same for both and misses the reference LP's value for beta 1."""
    names = ['A', 'B', 'E', 'D']
    loads = [1000, 10, 10, 10]
    cost = np.ones((4, 4))
    np.fill_diagonal(cost, 0)
    for i, j, c in ((0, 1, 0.2), (1, 2, 0.5), (0, 2, 0.9)):
        cost[i, j] = cost[j, i] = c
    sim = 1 - cost
    anchors = {}
    for beta in (0.0, 1.0):
        ref_value, ref_x = _reference_lp(loads, sim, 2, beta)
        assert np.allclose(ref_x, np.round(ref_x), atol=1e-7)  # integral at this instance
        ref_open = sorted({names[int(c)] for c in ref_x.argmax(1)})
        plan = make_plan(names, loads, sim, 2, capacity_factor=None, beta=beta)
        assert plan.lp_bound == pytest.approx(ref_value, rel=1e-6, abs=1e-9)
        assert plan.rounded_cost == pytest.approx(ref_value, rel=1e-6, abs=1e-9)
        anchors[beta] = sorted(names[int(a)] for a in plan.expert_anchor)
        assert anchors[beta] == ref_open
    assert anchors == {0.0: ['B', 'D'], 1.0: ['A', 'D']}
