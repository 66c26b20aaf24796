# Copyright (c) mmgem contributors. All rights reserved.
"""The LP relaxation: a true lower bound, equal across solvers and paths."""
import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from mmgem.planner import installed_solvers, make_plan, solve_gem_lp


def best_integral_cost(cost, images, num_experts, capacity):
    """Exhaustive search over integral points of the GEM LP.

    y binary, u integer (sum M, u >= y), x binary (each dataset whole to one
    open anchor), capacity sum_d n_d x_dc <= C u_c.
    """
    k = cost.shape[0]
    best = np.inf
    for u in itertools.product(range(num_experts + 1), repeat=k):
        if sum(u) != num_experts:
            continue
        opened = [c for c in range(k) if u[c] > 0]
        assign = np.array(list(itertools.product(opened, repeat=k)))  # (P, K)
        total = cost[np.arange(k), assign].sum(1)
        if capacity is not None:
            ok = np.ones(len(assign), dtype=bool)
            for c in opened:
                ok &= ((assign == c) * images).sum(1) <= capacity * u[c]
            total = total[ok]
        if total.size:
            best = min(best, float(total.min()))
    return best


def dense_lp_with_scipy(cost, images, num_experts, capacity):
    """The GEM LP written out row by row and solved by scipy's HiGHS."""
    k = cost.shape[0]
    nx = k * k
    nvar = nx + 2 * k  # x (row-major), y, u
    xi = lambda d, c: d * k + c  # noqa: E731
    yi = lambda c: nx + c  # noqa: E731
    ui = lambda c: nx + k + c  # noqa: E731
    c_vec = np.zeros(nvar)
    c_vec[:nx] = cost.ravel()
    a_eq, b_eq, a_ub, b_ub = [], [], [], []
    for d in range(k):
        row = np.zeros(nvar)
        for c in range(k):
            row[xi(d, c)] = 1
        a_eq.append(row)
        b_eq.append(1)
    row = np.zeros(nvar)
    for c in range(k):
        row[ui(c)] = 1
    a_eq.append(row)
    b_eq.append(num_experts)
    for d in range(k):
        for c in range(k):
            row = np.zeros(nvar)
            row[xi(d, c)], row[yi(c)] = 1, -1
            a_ub.append(row)
            b_ub.append(0)
    for c in range(k):
        row = np.zeros(nvar)
        row[yi(c)], row[ui(c)] = 1, -1
        a_ub.append(row)
        b_ub.append(0)
        if capacity is not None:
            row = np.zeros(nvar)
            for d in range(k):
                row[xi(d, c)] = images[d]
            row[ui(c)] = -capacity
            a_ub.append(row)
            b_ub.append(0)
    bounds = [(0, 1)] * nx + [(0, 1)] * k + [(0, None)] * k
    res = linprog(c_vec, A_ub=np.array(a_ub), b_ub=b_ub, A_eq=np.array(a_eq), b_eq=b_eq,
                  bounds=bounds, method='highs')
    assert res.status == 0
    return res.fun


CASES = [(k, m, cf, beta, seed) for seed, (k, m, cf, beta) in enumerate(
    [(4, 2, None, 0.0), (5, 3, 1.0, 0.0), (6, 2, 1.25, 1.0), (6, 3, None, 0.5),
     (5, 2, 1.5, 0.0), (6, 3, 1.1, 0.0)])]


@pytest.mark.parametrize('k, m, cf, beta, seed', CASES)
def test_lp_bound_below_every_integral_plan(instance, k, m, cf, beta, seed):
    names, loads, sim = instance(k, seed)
    plan = make_plan(names, loads, sim, m, capacity_factor=cf, beta=beta)
    best = best_integral_cost(plan.cost_matrix, plan.images, m, plan.capacity)
    assert np.isfinite(best)
    assert plan.lp_bound <= best + 1e-7
    assert plan.rounded_cost >= plan.lp_bound - 1e-7
    if cf is None:
        # without capacity the compiler assigns whole datasets: an integral plan
        assert plan.rounded_cost >= best - 1e-9
        assert np.all((plan.quota > 0).sum(1) >= 1)


@pytest.mark.parametrize('k, m, cf, beta, seed', CASES[:4])
def test_lp_bound_equals_an_independent_solver(instance, k, m, cf, beta, seed):
    names, loads, sim = instance(k, seed)
    plan = make_plan(names, loads, sim, m, capacity_factor=cf, beta=beta)
    ref = dense_lp_with_scipy(plan.cost_matrix, plan.images, m, plan.capacity)
    assert plan.lp_bound == pytest.approx(ref, abs=1e-6)


def test_column_generation_reaches_the_full_lp(instance):
    names, loads, sim = instance(30, 7)
    plan = make_plan(names, loads, sim, 8, capacity_factor=1.25, solver='ECOS',
                     init_columns=30)
    cost, images = plan.cost_matrix, plan.images
    full = solve_gem_lp(cost, images, 8, plan.capacity, solver='ECOS', init_columns=30)
    assert full.rounds == 1 and full.columns == 900
    cg = solve_gem_lp(cost, images, 8, plan.capacity, solver='ECOS', init_columns=2)
    assert cg.rounds > 1 and cg.columns < 900
    assert cg.bound == pytest.approx(full.bound, abs=1e-6)
    ref = dense_lp_with_scipy(cost, images, 8, plan.capacity)
    assert full.bound == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize('solver', ['ECOS', 'CLARABEL', 'HIGHS', 'SCIPY'])
def test_solvers_agree(instance, solver):
    if solver not in installed_solvers():
        pytest.skip(f'{solver} is not installed')
    names, loads, sim = instance(12, 3)
    ecos = make_plan(names, loads, sim, 5, capacity_factor=1.25, solver='ECOS')
    other = make_plan(names, loads, sim, 5, capacity_factor=1.25, solver=solver)
    assert other.solver == solver
    assert other.lp_bound == pytest.approx(ecos.lp_bound, abs=1e-6)
    assert other.expert_loads.max() <= other.capacity


def exact_dual_value(cost, loads_c, num_experts, nu, gamma, mu):
    """The Lagrangian dual function in exact rational arithmetic."""
    from fractions import Fraction as F
    k = cost.shape[0]
    nu = [F(float(v)) for v in nu]
    gamma = [F(0)] * k if gamma is None else [max(F(0), F(float(v))) for v in gamma]
    mu = max([F(float(mu))] + gamma)
    total = -sum(nu) - mu * num_experts
    for c in range(k):
        col = F(0)
        for d in range(k):
            r = F(float(cost[d, c])) + nu[d]
            if loads_c is not None:
                r += F(float(loads_c[d])) * gamma[c]
            col += min(r, F(0))
        total += min(F(0), col + mu - gamma[c])
    return total


@pytest.mark.parametrize('k, m, cf, beta, seed', CASES)
def test_certified_bound_from_the_stored_multipliers(instance, k, m, cf, beta, seed):
    names, loads, sim = instance(k, seed)
    plan = make_plan(names, loads, sim, m, capacity_factor=cf, beta=beta)
    lp = plan.lp
    loads_c = None if plan.capacity is None else plan.images / plan.capacity
    exact = exact_dual_value(plan.cost_matrix, loads_c, m, lp.duals['assign'],
                             lp.duals['capacity'], lp.duals['experts'])
    # the stored bound is below the exact dual value: a valid lower bound
    assert lp.bound <= exact
    assert float(exact) - lp.bound < 1e-12
    # ... below the LP optimum, and close to the solver's primal objective
    ref = dense_lp_with_scipy(plan.cost_matrix, plan.images, m, plan.capacity)
    assert lp.bound <= ref + 1e-12
    assert lp.value - lp.bound <= 1e-6
    assert plan.rounded_cost >= plan.lp_bound  # exactly, no tolerance


def test_lagrangian_bound_holds_for_any_multipliers(instance):
    """Weak duality: random multipliers never give a bound above the LP."""
    from mmgem.planner import lagrangian_bound
    rng = np.random.default_rng(0)
    names, loads, sim = instance(6, 3)
    plan = make_plan(names, loads, sim, 3, capacity_factor=1.1)
    ref = dense_lp_with_scipy(plan.cost_matrix, plan.images, 3, plan.capacity)
    loads_c = plan.images / plan.capacity
    for _ in range(200):
        nu = rng.normal(scale=0.3, size=6)
        gamma = rng.normal(scale=0.3, size=6)
        mu = rng.normal(scale=0.3)
        assert lagrangian_bound(plan.cost_matrix, loads_c, 3, nu, gamma, mu) <= ref + 1e-12
    # at the solver's multipliers it is tight
    d = plan.lp.duals
    tight = lagrangian_bound(plan.cost_matrix, loads_c, 3, d['assign'], d['capacity'],
                             d['experts'])
    assert tight == plan.lp_bound and ref - tight < 1e-7


def test_rounded_never_below_the_bound_on_many_instances(instance):
    for seed in range(25):
        k = 3 + seed % 10
        names, loads, sim = instance(k, 200 + seed)
        if seed % 3 == 0:
            sim = np.eye(k)  # a zero bound: the tightest case for the float margin
        for cf in (None, 1.0, 1.25):
            plan = make_plan(names, loads, sim, 1 + seed % 7, capacity_factor=cf,
                             rounding='heuristic')
            assert plan.rounded_cost >= plan.lp_bound
