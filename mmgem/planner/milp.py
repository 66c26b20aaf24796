# Copyright (c) mmgem contributors. All rights reserved.
"""The exact integral optimum of levels 1-2: a MILP of the GEM problem.

The integral version of the LP of :mod:`mmgem.planner.lp`, solved with HiGHS
through :func:`scipy.optimize.milp`::

    minimise   sum_{d,c} cost[d, c] * x[d, c]
    subject to sum_c x[d, c] = 1                 x[d, c] in [0, 1]
               x[d, c] <= y[c]                   y[c] in {0, 1}
               y[c] <= u[c] <= M * y[c]          u[c] in {0, 1, ..., M}
               sum_c u[c] = M
               sum_d n[d] / C * x[d, c] <= u[c]  (capacity, when C is set)

``y`` (anchor opened) and ``u`` (its expert count) are integers, ``x`` stays
continuous: a dataset may be split over groups, exactly as the compiler may
split it. For fixed ``(y, u)`` the remaining problem is a transportation
problem with integer supplies and capacities, so an optimal ``x`` with whole
images exists and the compiler reaches the MILP optimum exactly. ``u <= M y``
only forbids experts on an unopened anchor, which serve nobody; moving them
to an opened group never raises the cost, so the optimum is that of the
problem in spec section 2 with integral ``y`` and ``u``.

The MILP is the ``rounding='exact'`` path of the compiler and the certificate
of the heuristic: every plan that solved it records its optimum. HiGHS runs
with a node limit, never a time limit, so the result does not depend on the
machine's speed: the same inputs give the same plan.
"""
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import PlanError

#: relative gap at which HiGHS stops (its default, 1e-4, is too coarse here)
MIP_REL_GAP = 1e-9
#: branch-and-bound nodes before HiGHS gives up (deterministic, unlike time)
NODE_LIMIT = 20000


@dataclass
class MILPSolution:
    """Result of :func:`solve_gem_milp`.

    Attributes:
        status (str): ``'optimal'``, or why HiGHS stopped (for example
            ``'node limit'``).
        value (float): Objective of the best integral point found (nan if
            none).
        bound (float): HiGHS' lower bound on the integral optimum.
        y (np.ndarray): (K,) int64 opened anchors of the best point.
        u (np.ndarray): (K,) int64 expert counts of the best point.
        nodes (int): Branch-and-bound nodes HiGHS explored.
        solve_time (float): Wall seconds.
    """

    status: str
    value: float
    bound: float
    y: np.ndarray
    u: np.ndarray
    nodes: int
    solve_time: float

    @property
    def optimal(self) -> bool:
        """bool: Whether HiGHS proved the point optimal."""
        return self.status == 'optimal'


def solve_gem_milp(cost: np.ndarray,
                   images: np.ndarray,
                   num_experts: int,
                   capacity: Optional[int],
                   node_limit: int = NODE_LIMIT,
                   mip_rel_gap: float = MIP_REL_GAP) -> MILPSolution:
    """Solve the GEM MILP (levels 1-2) with HiGHS.

    Args:
        cost (np.ndarray): K x K ``w[d] * (1 - S[d, c])``.
        images (np.ndarray): (K,) images per epoch.
        num_experts (int): M.
        capacity (int, optional): C; None for no limit.
        node_limit (int): Branch-and-bound node limit. Defaults to
            :data:`NODE_LIMIT`.
        mip_rel_gap (float): Relative optimality gap. Defaults to
            :data:`MIP_REL_GAP`.

    Returns:
        MILPSolution: The result; ``y`` and ``u`` are integral.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix, vstack

    t0 = time.perf_counter()
    cost = np.asarray(cost, dtype=np.float64)
    k = cost.shape[0]
    m = int(num_experts)
    nx = k * k
    nvar = nx + 2 * k
    xi = np.arange(nx).reshape(k, k)  # x[d, c] is variable d * k + c
    yi = nx + np.arange(k)
    ui = nx + k + np.arange(k)
    # scale the objective to a maximum of 1: HiGHS' tolerances are absolute
    scale = float(cost.max(initial=0.0)) or 1.0
    obj = np.zeros(nvar)
    obj[:nx] = cost.ravel() / scale

    def rows(r, c, v, n_rows):
        return coo_matrix((np.asarray(v, dtype=np.float64), (np.asarray(r), np.asarray(c))),
                          shape=(n_rows, nvar))

    ones_k = np.ones(k)
    blocks, lo, hi = [], [], []
    # sum_c x[d, c] = 1
    blocks.append(rows(np.repeat(np.arange(k), k), xi.ravel(), np.ones(nx), k))
    lo.append(ones_k)
    hi.append(ones_k)
    # x[d, c] - y[c] <= 0
    r = np.arange(nx)
    blocks.append(rows(np.concatenate([r, r]),
                       np.concatenate([xi.ravel(), yi[np.tile(np.arange(k), k)]]),
                       np.concatenate([np.ones(nx), -np.ones(nx)]), nx))
    lo.append(np.full(nx, -np.inf))
    hi.append(np.zeros(nx))
    # y[c] - u[c] <= 0 and u[c] - M y[c] <= 0
    rk = np.arange(k)
    blocks.append(rows(np.concatenate([rk, rk]), np.concatenate([yi, ui]),
                       np.concatenate([ones_k, -ones_k]), k))
    blocks.append(rows(np.concatenate([rk, rk]), np.concatenate([ui, yi]),
                       np.concatenate([ones_k, -m * ones_k]), k))
    lo += [np.full(k, -np.inf)] * 2
    hi += [np.zeros(k)] * 2
    # sum_c u[c] = M
    blocks.append(rows(np.zeros(k, dtype=np.int64), ui, ones_k, 1))
    lo.append(np.array([float(m)]))
    hi.append(np.array([float(m)]))
    if capacity is not None:
        load = np.asarray(images, dtype=np.float64) / float(capacity)
        rr = np.repeat(np.arange(k), k)  # row c, over d
        cc = xi.T.ravel()  # x[d, c] for c-major rows
        blocks.append(rows(np.concatenate([rr, rk]), np.concatenate([cc, ui]),
                           np.concatenate([np.tile(load, k), -ones_k]), k))
        lo.append(np.full(k, -np.inf))
        hi.append(np.zeros(k))
    a = vstack(blocks).tocsr()
    constraint = LinearConstraint(a, np.concatenate(lo), np.concatenate(hi))
    integrality = np.zeros(nvar)
    integrality[nx:] = 1
    lb = np.zeros(nvar)
    ub = np.ones(nvar)
    ub[ui] = m
    res = milp(obj, integrality=integrality, bounds=Bounds(lb, ub), constraints=constraint,
               options=dict(node_limit=int(node_limit), mip_rel_gap=float(mip_rel_gap),
                            presolve=True))
    elapsed = time.perf_counter() - t0
    status = {0: 'optimal', 1: 'node limit', 2: 'infeasible', 3: 'unbounded'}.get(
        res.status, f'status {res.status}')
    if res.status == 1 and 'node' not in str(res.message).lower():
        status = f'stopped: {res.message}'
    if res.x is None:
        if res.status == 2:
            raise PlanError(f'the GEM MILP (K={k}, M={m}, capacity={capacity}) is infeasible')
        return MILPSolution(status=status, value=float('nan'),
                            bound=float(getattr(res, 'mip_dual_bound', np.nan) or np.nan) * scale,
                            y=np.zeros(k, dtype=np.int64), u=np.zeros(k, dtype=np.int64),
                            nodes=int(getattr(res, 'mip_node_count', 0) or 0),
                            solve_time=elapsed)
    y = np.round(res.x[yi]).astype(np.int64)
    u = np.round(res.x[ui]).astype(np.int64)
    return MILPSolution(status=status, value=float(res.fun) * scale,
                        bound=float(res.mip_dual_bound) * scale, y=y, u=u,
                        nodes=int(res.mip_node_count), solve_time=elapsed)
