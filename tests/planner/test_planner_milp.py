# Copyright (c) mmgem contributors. All rights reserved.
"""The exact MILP, the transportation solver and the heuristic against them."""
import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.sparse import csr_matrix

from mmgem.planner import PlanError, dataset_weights, make_plan, solve_gem_milp
from mmgem.planner.compiler import EXACT_MAX_K
from mmgem.planner.planner import check_loads, plan_capacity
from mmgem.planner.transport import _highs, transport


def cvxpy_milp(cost, images, num_experts, capacity):
    """The same MILP written independently with CVXPY (HiGHS underneath)."""
    k = cost.shape[0]
    x = cp.Variable((k, k), nonneg=True)
    y = cp.Variable(k, boolean=True)
    u = cp.Variable(k, integer=True)
    cons = [cp.sum(x, axis=1) == 1, x <= np.ones((k, 1)) @ cp.reshape(y, (1, k), order='C'),
            y <= u, u >= 0, cp.sum(u) == num_experts]
    if capacity is not None:
        cons.append((images / capacity) @ x <= u)
    prob = cp.Problem(cp.Minimize(cp.sum(cp.multiply(cost, x))), cons)
    prob.solve(solver='HIGHS')
    assert prob.status == cp.OPTIMAL
    return float(prob.value)


def instance_inputs(instance, k, m, cf, beta, seed):
    names, loads, sim = instance(k, seed)
    images = check_loads(names, loads)
    cap = plan_capacity(cf, images, m)
    cost = dataset_weights(images, beta)[:, None] * (1 - sim)
    return names, loads, sim, images, cap, cost


CASES = [(5, 3, 1.0, 0.0, 0), (7, 4, 1.1, 0.5, 1), (8, 5, None, 0.0, 2), (9, 6, 1.25, 1.0, 3),
         (6, 8, 1.0, 0.0, 4), (10, 3, 2.0, 0.0, 5)]


@pytest.mark.parametrize('k, m, cf, beta, seed', CASES)
def test_milp_equals_an_independent_model(instance, k, m, cf, beta, seed):
    _, _, _, images, cap, cost = instance_inputs(instance, k, m, cf, beta, seed)
    sol = solve_gem_milp(cost, images, m, cap)
    assert sol.optimal and sol.u.sum() == m and np.all(sol.y <= sol.u)
    assert sol.value == pytest.approx(cvxpy_milp(cost, images, m, cap), rel=1e-7, abs=1e-9)
    assert sol.bound <= sol.value + 1e-12


@pytest.mark.parametrize('k, m, cf, beta, seed', CASES)
def test_exact_rounding_reaches_the_milp_and_the_heuristic_is_close(instance, k, m, cf, beta,
                                                                      seed):
    names, loads, sim, images, cap, cost = instance_inputs(instance, k, m, cf, beta, seed)
    best = cvxpy_milp(cost, images, m, cap)
    exact = make_plan(names, loads, sim, m, capacity_factor=cf, beta=beta, rounding='exact')
    assert exact.rounding == 'exact' and exact.integral['status'] == 'optimal'
    assert exact.rounded_cost == pytest.approx(best, rel=1e-7, abs=1e-9)
    assert exact.integral_optimum == pytest.approx(best, rel=1e-7, abs=1e-9)
    assert exact.lp_bound <= exact.rounded_cost
    heur = make_plan(names, loads, sim, m, capacity_factor=cf, beta=beta, rounding='heuristic')
    assert heur.integral is None and heur.rounding == 'heuristic'
    assert heur.rounded_cost >= best - 1e-9 * max(1.0, best)  # a feasible integral plan
    assert heur.rounded_cost <= 1.05 * best + 1e-12
    for plan in (exact, heur):
        if cap is not None:
            assert plan.expert_loads.max() <= cap
        np.testing.assert_array_equal(plan.quota.sum(1), images)
    auto = make_plan(names, loads, sim, m, capacity_factor=cf, beta=beta)  # K <= 16: both
    assert auto.integral_optimum == pytest.approx(best, rel=1e-7, abs=1e-9)
    assert auto.rounded_cost <= heur.rounded_cost * (1 + 1e-12)
    assert 'integral optimum (MILP)' in auto.table()


def test_heuristic_within_five_percent_of_the_optimum_on_many_instances(instance):
    """60 seeded small instances with capacity (the benchmark has 190)."""
    ratios = []
    rng = np.random.default_rng(7)
    for seed in range(60):
        k, m = int(rng.integers(3, 13)), int(rng.integers(1, 11))
        cf = [1.0, 1.1, 1.25, 2.0][seed % 4]
        names, loads, sim, images, cap, cost = instance_inputs(instance, k, m, cf, 0.0, seed)
        plan = make_plan(names, loads, sim, m, capacity_factor=cf, rounding='heuristic')
        best = solve_gem_milp(cost, images, m, cap)
        assert best.optimal
        assert plan.rounded_cost >= plan.lp_bound
        ratios.append(plan.rounded_cost / best.value if best.value > 1e-12 else 1.0)
    assert max(ratios) <= 1.05, sorted(ratios)[-5:]


def test_exact_rounding_size_limit(instance):
    names, loads, sim = instance(EXACT_MAX_K + 1, 0)
    with pytest.raises(PlanError, match=rf"rounding='exact' .* K <= {EXACT_MAX_K}"):
        make_plan(names, loads, sim, 4, rounding='exact')
    with pytest.raises(PlanError, match="rounding='nope' is not one of"):
        make_plan(names[:3], loads[:3], sim[:3, :3], 2, rounding='nope')


def transport_lp(unit, images, caps):
    """The transportation LP written out and solved by HiGHS' interior point."""
    k, g = unit.shape
    idx = np.arange(k * g)
    a_eq = csr_matrix((np.ones(k * g), (np.repeat(np.arange(k), g), idx)), shape=(k, k * g))
    a_ub = csr_matrix((np.ones(k * g), (np.tile(np.arange(g), k), idx)), shape=(g, k * g))
    scale = unit.max()
    res = linprog(unit.ravel() / scale, A_ub=a_ub, b_ub=caps, A_eq=a_eq, b_eq=images,
                  method='highs-ipm')
    assert res.status == 0
    return res.fun * scale


@pytest.mark.parametrize('seed', range(8))
def test_transport_is_optimal_and_integral(seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        k = int(rng.integers(2, 40))
        g = int(rng.integers(1, min(k, 16) + 1))
        images = rng.integers(1, 5000, k)
        unit = rng.random((k, g)) ** 2 / images[:, None]
        caps = np.full(g, int(np.ceil(rng.choice([1.0, 1.05, 1.3]) * images.sum() / g)))
        flow = transport(unit, images, caps)
        assert flow.dtype == np.int64 and np.all(flow >= 0)
        np.testing.assert_array_equal(flow.sum(1), images)
        assert np.all(flow.sum(0) <= caps)
        ref = transport_lp(unit, images, caps)
        assert (unit * flow).sum() == pytest.approx(ref, rel=1e-9)
        # the simplex fallback in shares agrees
        assert (unit * _highs(unit, images, caps)).sum() == pytest.approx(ref, rel=1e-9)
    with pytest.raises(PlanError, match='cannot hold'):
        transport(unit, images, caps // 2)
