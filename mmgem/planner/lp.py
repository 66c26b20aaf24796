# Copyright (c) mmgem contributors. All rights reserved.
"""The LP relaxation of the GEM planner (spec section 2), modelled with CVXPY.

Variables (K datasets, each also a candidate anchor of experts)::

    x[d, c] in [0, 1]  share of dataset d served by the experts anchored at c
    y[c]    in [0, 1]  c anchors at least one expert
    u[c]    >= 0       how many experts anchor c holds

    minimise   sum_{d,c} cost[d, c] * x[d, c]
    subject to sum_c x[d, c] = 1                 (all of d is served)
               x[d, c] <= y[c]                   (only by opened anchors)
               y[c] <= u[c],  sum_c u[c] = M     (exactly M experts)
               sum_d n[d] / C * x[d, c] <= u[c]  (capacity, when C is set)

The capacity rows are divided by C, which keeps them well scaled for interior
point solvers such as ECOS.

The model is built from sparse matrices, never from Python loops over
constraints. For large K the K*K ``x`` is not built at once: the LP is solved
by *column generation* -- start from each dataset's ``init_columns`` cheapest
anchors, solve, price every left-out ``x[d, c]`` with the duals
(reduced cost ``cost[d, c] + nu[d] + n[d] / C * gamma[c]``), add the negative
ones and solve again until none is left. The result is the optimum of the full
LP (up to the solver's tolerance), so its value is a valid lower bound; with
``init_columns >= K`` the full model is solved in one go. While the restricted
model lacks columns, an elastic slack with a large penalty keeps it feasible;
the final solution has no slack.

The reported bound is *certified*: an interior-point solver stops at a
primal point slightly above the optimum (by its duality gap), so its
objective is not a lower bound. The planner instead evaluates the Lagrangian
dual function of the full LP (all K*K columns, whatever the restricted model
held) at the solver's multipliers ``nu`` (all of d is served), ``gamma``
(capacity) and ``mu`` (exactly M experts)::

    r[d, c] = cost[d, c] + nu[d] + n[d] / C * gamma[c]
    g = -sum_d nu[d] - mu * M + sum_c min(0, sum_d min(r[d, c], 0) + mu - gamma[c])

with ``gamma`` clipped to >= 0 and ``mu`` raised to ``max(gamma)``. By weak
duality ``g`` is below the LP optimum for *any* such multipliers, so below
every integral plan; it is computed with a floating-point error bound
subtracted (:func:`lagrangian_bound`), so ``rounded cost >= bound`` holds
exactly, not to a tolerance. The multipliers are stored with the solution, so
the bound can be re-checked independently.
"""
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import scipy.sparse as sp

from .errors import PlanError, SolverFailedError, SolverUnavailableError

#: Solvers tried in this order by :func:`fastest_installed_solver`.
PREFERRED_SOLVERS = ('HIGHS', 'ECOS', 'CLARABEL', 'SCIPY')

_FEAS_TOL = 1e-5


def _cvxpy():
    try:
        import cvxpy
    except ImportError as err:  # pragma: no cover - cvxpy is a requirement
        raise PlanError('the GEM planner needs cvxpy: pip install "cvxpy>=1.4" ecos') from err
    return cvxpy


def installed_solvers() -> List[str]:
    """Return the solver names CVXPY reports installed.

    Returns:
        list[str]: For example ``['CLARABEL', 'ECOS', 'HIGHS', ...]``.
    """
    return list(_cvxpy().installed_solvers())


def known_solvers() -> List[str]:
    """Return every solver name CVXPY knows, installed or not.

    Returns:
        list[str]: Upper-case solver names.
    """
    cp = _cvxpy()
    return sorted(set(cp.settings.SOLVERS) | set(cp.installed_solvers()))


def check_solver_name(solver: str) -> str:
    """Normalise a solver name and reject names CVXPY does not know.

    Args:
        solver (str): A CVXPY solver name, any case.

    Returns:
        str: The upper-case name.
    """
    if not isinstance(solver, str) or not solver:
        raise PlanError(f'solver must be a CVXPY solver name; got {solver!r}')
    name = solver.upper()
    if name not in known_solvers():
        raise PlanError(f'unknown solver {solver!r}: CVXPY knows {known_solvers()}; '
                        f'installed here: {installed_solvers()}')
    return name


def fastest_installed_solver() -> str:
    """Return the first installed solver of :data:`PREFERRED_SOLVERS`.

    Returns:
        str: A solver name.
    """
    inst = installed_solvers()
    for name in PREFERRED_SOLVERS:
        if name in inst:
            return name
    raise SolverUnavailableError(f'none of {list(PREFERRED_SOLVERS)} is installed '
                                 f'(installed: {inst})')


@dataclass
class LPSolution:
    """The optimum of the GEM LP.

    Attributes:
        bound (float): Certified lower bound on the LP optimum, hence on
            every integral plan (the Lagrangian dual value at the solver's
            multipliers, minus its floating-point error bound).
        x_index (np.ndarray): (P, 2) int64 ``[d, c]`` of the stored ``x``
            entries (those above 1e-9), sorted row-major.
        x_value (np.ndarray): (P,) float64 values of those entries.
        y (np.ndarray): (K,) anchor openings.
        u (np.ndarray): (K,) fractional expert counts.
        status (str): CVXPY's status of the final solve.
        solver (str): The solver that produced it.
        rounds (int): Column generation rounds (1 for the full model).
        columns (int): ``x`` columns in the final model (K*K when full).
        value (float): The solver's primal objective (at or a little above
            the optimum).
        duals (dict): The multipliers of the certificate: ``assign`` (K,),
            ``capacity`` (K,) or None without capacity, ``experts`` (float).
        solve_time (float): Wall seconds spent building and solving.
    """

    bound: float
    x_index: np.ndarray
    x_value: np.ndarray
    y: np.ndarray
    u: np.ndarray
    status: str
    solver: str
    rounds: int
    columns: int
    value: float = float('nan')
    duals: Dict = field(default_factory=dict)
    solve_time: float = field(default=0.0, compare=False)

    def dense_x(self) -> np.ndarray:
        """Return ``x`` as a dense K x K array.

        Returns:
            np.ndarray: float64 matrix.
        """
        k = self.y.shape[0]
        x = np.zeros((k, k), dtype=np.float64)
        if self.x_index.size:
            x[self.x_index[:, 0], self.x_index[:, 1]] = self.x_value
        return x

    def to_dict(self) -> Dict:
        """Return a JSON-ready dict (the plan stores it).

        Returns:
            dict: Lists and plain floats only.
        """
        return dict(
            bound=float(self.bound),
            x=[[int(d), int(c), float(v)] for (d, c), v in zip(self.x_index, self.x_value)],
            y=[float(v) for v in self.y],
            u=[float(v) for v in self.u],
            status=str(self.status),
            solver=str(self.solver),
            rounds=int(self.rounds),
            columns=int(self.columns),
            value=float(self.value),
            duals=dict(assign=[float(v) for v in self.duals['assign']],
                       capacity=(None if self.duals.get('capacity') is None else
                                 [float(v) for v in self.duals['capacity']]),
                       experts=float(self.duals['experts'])))

    @classmethod
    def from_dict(cls, data: Dict) -> 'LPSolution':
        """Inverse of :meth:`to_dict`.

        Args:
            data (dict): A dict written by :meth:`to_dict`.

        Returns:
            LPSolution: The solution.
        """
        xs = data['x']
        idx = np.asarray([[r[0], r[1]] for r in xs], dtype=np.int64).reshape(-1, 2)
        val = np.asarray([r[2] for r in xs], dtype=np.float64)
        return cls(bound=float(data['bound']), x_index=idx, x_value=val,
                   y=np.asarray(data['y'], dtype=np.float64),
                   u=np.asarray(data['u'], dtype=np.float64), status=data['status'],
                   solver=data['solver'], rounds=int(data['rounds']),
                   columns=int(data['columns']), value=float(data['value']),
                   duals=dict(assign=np.asarray(data['duals']['assign'], dtype=np.float64),
                              capacity=(None if data['duals']['capacity'] is None else
                                        np.asarray(data['duals']['capacity'],
                                                   dtype=np.float64)),
                              experts=float(data['duals']['experts'])))


def lagrangian_bound(cost: np.ndarray, loads_c: Optional[np.ndarray], num_experts: int,
                     nu: np.ndarray, gamma: Optional[np.ndarray], mu: float) -> float:
    """A certified lower bound on the GEM LP from any multipliers.

    Evaluates the Lagrangian dual function (module docstring) of the full LP
    at ``nu``, ``gamma`` (clipped to >= 0) and ``mu`` (raised to
    ``max(gamma)``, where the dual function is finite) and subtracts a bound
    on its floating-point rounding error, so the result is below the exact LP
    optimum whatever the multipliers.

    Args:
        cost (np.ndarray): K x K planner costs.
        loads_c (np.ndarray, optional): ``n / C`` per dataset; None without
            capacity.
        num_experts (int): M.
        nu (np.ndarray): (K,) multipliers of ``sum_c x[d, c] = 1``.
        gamma (np.ndarray, optional): (K,) multipliers of the capacity rows.
        mu (float): Multiplier of ``sum_c u[c] = M``.

    Returns:
        float: The bound.
    """
    cost = np.asarray(cost, dtype=np.float64)
    k = cost.shape[0]
    eps = np.finfo(np.float64).eps
    nu = np.asarray(nu, dtype=np.float64).reshape(k)
    if loads_c is None or gamma is None:
        gamma = np.zeros(k)
        scale = np.abs(cost) + np.abs(nu)[:, None]
        r = cost + nu[:, None]
    else:
        gamma = np.clip(np.asarray(gamma, dtype=np.float64).reshape(k), 0.0, None)
        load = np.asarray(loads_c, dtype=np.float64)[:, None] * gamma[None, :]
        scale = np.abs(cost) + np.abs(nu)[:, None] + np.abs(load)
        r = cost + nu[:, None] + load
    mu = max(float(mu), float(gamma.max(initial=0.0)))
    err_r = 4 * eps * scale  # error of each r[d, c]
    neg = r < err_r  # only these can contribute min(r, 0) != 0
    col = np.where(neg, r, 0.0).sum(0)
    col_err = np.where(neg, err_r + (k + 1) * eps * np.abs(r), 0.0).sum(0)
    per_c = col + mu - gamma
    value = -nu.sum() - mu * num_experts + np.minimum(per_c, 0.0).sum()
    margin = (col_err.sum() + (k + 4) * eps *
              (np.abs(nu).sum() + abs(mu) * num_experts + np.abs(per_c).sum() +
               k * abs(mu) + gamma.sum()))
    return float(value - 2.0 * margin)


def _initial_columns(cost: np.ndarray, init_columns: int) -> np.ndarray:
    k = cost.shape[0]
    mask = np.zeros((k, k), dtype=bool)
    if init_columns >= k:
        mask[:] = True
        return mask
    order = np.argsort(cost, axis=1, kind='stable')[:, :max(init_columns, 1)]
    mask[np.arange(k)[:, None], order] = True
    mask[np.arange(k), np.arange(k)] = True
    return mask


def _solve_restricted(cp, cost, loads_c, num_experts, mask, penalty, solver, solver_options):
    """Build and solve the LP restricted to the ``mask`` columns."""
    k = cost.shape[0]
    d_idx, c_idx = np.nonzero(mask)
    p = d_idx.size
    cols = np.arange(p)
    full = p == k * k
    x = cp.Variable(p, nonneg=True)
    y = cp.Variable(k, nonneg=True)
    u = cp.Variable(k, nonneg=True)
    row_sum = sp.csr_matrix((np.ones(p), (d_idx, cols)), shape=(k, p))
    pick_y = sp.csr_matrix((np.ones(p), (cols, c_idx)), shape=(p, k))
    objective = cost[d_idx, c_idx] @ x
    slack = None
    if full:
        assign = row_sum @ x == 1
    else:
        slack = cp.Variable(k, nonneg=True)
        assign = row_sum @ x + slack == 1
        objective = objective + penalty * cp.sum(slack)
    total = cp.sum(u) == num_experts
    cons = [assign, x <= pick_y @ y, y <= 1, y <= u, total]
    cap = None
    if loads_c is not None:
        cap_mat = sp.csr_matrix((loads_c[d_idx], (c_idx, cols)), shape=(k, p))
        cap = cap_mat @ x <= u
        cons.append(cap)
    prob = cp.Problem(cp.Minimize(objective), cons)
    try:
        prob.solve(solver=solver, **(solver_options or {}))
    except cp.error.SolverError as err:
        raise SolverFailedError(f'solver {solver!r} failed on the GEM LP (K={k}, '
                                f'M={num_experts}, {p} columns): {err}') from err
    ok = (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
    if prob.status not in ok or x.value is None:
        raise SolverFailedError(f'solver {solver!r} returned status {prob.status!r} on the '
                                f'GEM LP (K={k}, M={num_experts}, {p} columns)')
    return dict(prob=prob, x=x, y=y, u=u, slack=slack, assign=assign, cap=cap, total=total,
                d_idx=d_idx, c_idx=c_idx)


def _check_feasible(cost, loads_c, num_experts, x, y, u, solver):
    """Reject a 'solution' that breaks the LP's constraints."""
    k = cost.shape[0]
    scale = max(1.0, float(num_experts))
    problems = []
    if np.any(x < -_FEAS_TOL) or np.any(y < -_FEAS_TOL) or np.any(u < -_FEAS_TOL):
        problems.append('negative variables')
    if np.max(np.abs(x.sum(1) - 1.0)) > _FEAS_TOL:
        problems.append(f'sum_c x[d, c] = 1 violated by {np.max(np.abs(x.sum(1) - 1.0)):.2e}')
    if np.max(x - y[None, :]) > _FEAS_TOL:
        problems.append('x <= y violated')
    if np.max(y - np.minimum(u, 1.0)) > _FEAS_TOL:
        problems.append('y <= min(u, 1) violated')
    if abs(u.sum() - num_experts) > _FEAS_TOL * scale:
        problems.append(f'sum u = {u.sum():.6f} != M = {num_experts}')
    if loads_c is not None and np.max(loads_c @ x - u) > _FEAS_TOL * scale:
        problems.append('capacity violated')
    if problems:
        raise SolverFailedError(f'solver {solver!r} returned an infeasible GEM LP solution '
                                f'(K={k}, M={num_experts}): ' + '; '.join(problems))


def solve_gem_lp(cost: np.ndarray,
                 loads: np.ndarray,
                 num_experts: int,
                 capacity: Optional[float],
                 solver: str = 'ECOS',
                 solver_options: Optional[Dict] = None,
                 init_columns: int = 10,
                 max_rounds: int = 100) -> LPSolution:
    """Solve the GEM LP relaxation with one CVXPY solver.

    Args:
        cost (np.ndarray): K x K ``w[d] * (1 - S[d, c])``.
        loads (np.ndarray): (K,) images per epoch of every dataset.
        num_experts (int): M.
        capacity (float, optional): C, images per expert; None for no limit.
        solver (str): Installed CVXPY solver name. Defaults to ``'ECOS'``.
        solver_options (dict, optional): Extra keyword arguments of
            ``cvxpy.Problem.solve`` (for example ``{'max_iters': 200}``).
        init_columns (int): Cheapest anchors per dataset in the first round
            of column generation; ``>= K`` solves the full model at once.
            Defaults to 10.
        max_rounds (int): Column generation rounds before giving up.
            Defaults to 100.

    Returns:
        LPSolution: The optimum.
    """
    cp = _cvxpy()
    name = check_solver_name(solver)
    if name not in installed_solvers():
        raise SolverUnavailableError(f'solver {name!r} is not installed (installed: '
                                     f'{installed_solvers()})')
    t0 = time.perf_counter()
    cost = np.asarray(cost, dtype=np.float64)
    k = cost.shape[0]
    loads_c = None if capacity is None else np.asarray(loads, np.float64) / float(capacity)
    mask = _initial_columns(cost, init_columns)
    # a penalty above any dual price of 'all of d is served' makes the slack
    # vanish at the optimum; it is raised if a round still ends with slack
    penalty = 10.0 * (1.0 + float(cost.max(initial=0.0)))
    tol = 1e-7 * max(float(cost.max(initial=0.0)), 1e-12)
    rounds = 0
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*Solution may be inaccurate.*')
        while True:
            rounds += 1
            if rounds > max_rounds:
                raise SolverFailedError(f'column generation did not converge in {max_rounds} '
                                        f'rounds with solver {name!r} (K={k})')
            res = _solve_restricted(cp, cost, loads_c, num_experts, mask, penalty, name,
                                    solver_options)
            if res['slack'] is None:
                break
            nu = np.asarray(res['assign'].dual_value, dtype=np.float64).reshape(-1)
            if res['cap'] is not None:
                gamma = np.asarray(res['cap'].dual_value, dtype=np.float64).reshape(-1)
                reduced = cost + nu[:, None] + loads_c[:, None] * gamma[None, :]
            else:
                reduced = cost + nu[:, None]
            reduced[mask] = np.inf
            negative = reduced < -tol
            if not negative.any():
                if float(np.max(res['slack'].value)) > 1e-7:
                    if penalty > 1e8:
                        raise SolverFailedError(f'the GEM LP looks infeasible (K={k}, '
                                                f'M={num_experts}, capacity={capacity})')
                    penalty *= 100.0
                    continue
                break
            # add at most 10 most negative columns of each dataset per round
            cand = np.where(negative, reduced, np.inf)
            top = np.argsort(cand, axis=1, kind='stable')[:, :10]
            rows = np.broadcast_to(np.arange(k)[:, None], top.shape)
            keep = np.isfinite(cand[rows, top])
            mask[rows[keep], top[keep]] = True
    x = np.zeros((k, k), dtype=np.float64)
    x[res['d_idx'], res['c_idx']] = np.asarray(res['x'].value, dtype=np.float64)
    y = np.asarray(res['y'].value, dtype=np.float64).reshape(-1)
    u = np.asarray(res['u'].value, dtype=np.float64).reshape(-1)
    _check_feasible(cost, loads_c, num_experts, x, y, u, name)
    x = np.clip(x, 0.0, None)
    nz = np.argwhere(x > 1e-9)
    nu = np.asarray(res['assign'].dual_value, dtype=np.float64).reshape(-1)
    gamma = (None if res['cap'] is None else
             np.clip(np.asarray(res['cap'].dual_value, dtype=np.float64).reshape(-1), 0, None))
    mu = max(float(np.asarray(res['total'].dual_value).reshape(-1)[0]),
             0.0 if gamma is None else float(gamma.max()))
    bound = lagrangian_bound(cost, loads_c, num_experts, nu, gamma, mu)
    value = float(res['prob'].value)
    if not bound <= value + 1e-6 * max(1.0, abs(value)):  # pragma: no cover - solver bug
        raise SolverFailedError(f'solver {name!r} returned multipliers whose dual value '
                                f'{bound} exceeds its primal objective {value}')
    return LPSolution(bound=bound, value=value, duals=dict(assign=nu, capacity=gamma,
                                                           experts=mu),
                      x_index=nz.astype(np.int64),
                      x_value=x[nz[:, 0], nz[:, 1]], y=np.clip(y, 0.0, 1.0),
                      u=np.clip(u, 0.0, None), status=str(res['prob'].status), solver=name,
                      rounds=rounds, columns=int(mask.sum()),
                      solve_time=time.perf_counter() - t0)
