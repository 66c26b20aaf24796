# Copyright (c) mmgem contributors. All rights reserved.
"""``make_plan``: validate the inputs, solve the LP, compile the plan."""
import math
import time
import warnings
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from .compiler import ROUNDINGS, compile_plan
from .errors import PlanError, SolverFailedError, SolverUnavailableError
from .hashing import ImageId
from .lp import check_solver_name, installed_solvers, solve_gem_lp
from .plan import GEMPlan, dataset_weights
from .rounding import round_half_up
from .similarity import check_similarity


def check_loads(dataset_names: Sequence[str], loads: Sequence[float]) -> np.ndarray:
    """Validate the loads and round them to whole images per epoch.

    Args:
        dataset_names (Sequence[str]): The K dataset names.
        loads (Sequence[float]): Expected images per epoch of each dataset.

    Returns:
        np.ndarray: (K,) int64 images per epoch (half up), all >= 1.
    """
    arr = np.asarray(loads, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != len(dataset_names):
        raise PlanError(f'loads has shape {arr.shape}; expected one load per dataset '
                        f'({len(dataset_names)})')
    for name, v in zip(dataset_names, arr.tolist()):
        if not math.isfinite(v):
            raise PlanError(f'load of dataset {name!r} is {v}; it must be finite')
        if v < 0:
            raise PlanError(f'load of dataset {name!r} is negative ({v})')
    if np.all(arr == 0):
        raise PlanError(f'all loads are zero: no dataset has images to plan '
                        f'({dict(zip(dataset_names, arr.tolist()))})')
    images = round_half_up(arr)
    for name, v, n in zip(dataset_names, arr.tolist(), images.tolist()):
        if n < 1:
            raise PlanError(f'dataset {name!r} has zero images per epoch (load {v}); remove '
                            'it from the plan or give it images')
    return images


def plan_capacity(capacity_factor: Optional[float], images: np.ndarray,
                  num_experts: int) -> Optional[int]:
    """Images per expert per epoch, ``ceil(capacity_factor * N / M)``.

    Args:
        capacity_factor (float, optional): >= 1, or None for no limit.
        images (np.ndarray): Images per epoch of each dataset.
        num_experts (int): M.

    Returns:
        int | None: The capacity C.
    """
    if capacity_factor is None:
        return None
    total = int(images.sum())
    cf = float(capacity_factor)
    if not math.isfinite(cf):
        raise PlanError(f'capacity_factor={capacity_factor} must be finite (or None for '
                        'no capacity limit)')
    if cf < 1:
        raise PlanError(f'capacity_factor={capacity_factor} < 1: the M={num_experts} experts '
                        f'cannot hold N={total} images (capacity {cf * total / num_experts:.1f} '
                        'each)')
    # round to 1e-9 first so that e.g. 1.1 * 10 / 1 gives 11, not 12
    return int(math.ceil(round(cf * total / num_experts, 9)))


def make_plan(dataset_names: Sequence[str],
              loads: Sequence[float],
              similarity,
              num_experts: int,
              capacity_factor: Optional[float] = 1.0,
              beta: float = 0.0,
              solver: str = 'ECOS',
              fallback_solvers: Optional[Sequence[str]] = None,
              solver_options: Optional[Dict] = None,
              init_columns: int = 10,
              rounding: str = 'auto',
              image_ids: Optional[Mapping[str, Sequence[ImageId]]] = None,
              similarity_spec: Optional[Dict] = None) -> GEMPlan:
    """Plan the global expert mapping of GEM: LP relaxation, then compiler.

    The loads are rounded to whole images per epoch (half up) and the LP is
    solved on those, with the capacity ``C = ceil(capacity_factor * N / M)``
    images per expert; so the rounded plan is a feasible point of the same
    LP, and as the LP bound is certified, ``rounded_cost >= lp_bound``
    exactly.

    Args:
        dataset_names (Sequence[str]): The K dataset names, unique.
        loads (Sequence[float]): Expected training images drawn from each
            dataset per epoch.
        similarity (array-like): K x K similarity in [0, 1] with a unit
            diagonal (see :func:`build_similarity`).
        num_experts (int): M >= 1.
        capacity_factor (float, optional): >= 1; None disables the capacity
            limit. Defaults to 1.0.
        beta (float): Fairness exponent in [0, 1]: 0 weighs every dataset
            equally, 1 by volume. Defaults to 0.
        solver (str): Installed CVXPY LP solver. Defaults to ``'ECOS'``.
        fallback_solvers (Sequence[str], optional): Solvers tried in order
            when ``solver`` is not installed or fails. Without it a missing
            or failing solver is an error.
        solver_options (dict, optional): Extra keyword arguments for
            ``solver`` (not the fallbacks, which run with their defaults),
            passed to ``cvxpy.Problem.solve``.
        init_columns (int): Cheapest anchors per dataset in the first round
            of column generation (``>= K`` solves the full LP at once).
            Defaults to 10.
        rounding (str): ``'heuristic'``, ``'exact'`` (the MILP, K <= 60)
            or ``'auto'`` (the heuristic, plus the MILP for K <= 16; the
            cheaper plan wins and the MILP optimum is recorded). See
            :func:`mmgem.planner.compile_plan`. Defaults to ``'auto'``.
        image_ids (Mapping[str, Sequence], optional): The training image ids
            of (some of) the datasets; their routing thresholds are cut at
            these images so that the realised per-expert counts equal the
            quota. Datasets without ids are routed by quantiles (the quota
            holds in expectation).
        similarity_spec (dict, optional): How ``similarity`` was made
            (recorded in the plan and compared when a run resumes).

    Returns:
        GEMPlan: The plan.

    Example:
        >>> from mmgem.planner import build_similarity, make_plan
        >>> S = build_similarity(['voc', 'clipart', 'kitti'],
        ...                      prior=[['voc', 'clipart']])
        >>> plan = make_plan(['voc', 'clipart', 'kitti'], [16551, 500, 7481],
        ...                  S, num_experts=2, capacity_factor=None)
        >>> plan.experts_of('clipart') == plan.experts_of('voc')
        True
    """
    t0 = time.perf_counter()
    names = [str(n) for n in dataset_names]
    if not names:
        raise PlanError('dataset_names is empty: nothing to plan')
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise PlanError(f'dataset names must be unique; repeated: {dup}')
    if isinstance(num_experts, bool) or not isinstance(num_experts, (int, np.integer)):
        raise PlanError(f'num_experts={num_experts!r} must be an integer')
    num_experts = int(num_experts)
    if num_experts < 1:
        raise PlanError(f'num_experts={num_experts} < 1: a plan needs at least one expert')
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise PlanError(f'beta={beta} is outside [0, 1]')
    if rounding not in ROUNDINGS:
        raise PlanError(f'rounding={rounding!r} is not one of {list(ROUNDINGS)}')
    unknown = sorted(set(image_ids or {}) - set(names))
    if unknown:
        raise PlanError(f'image_ids names datasets {unknown} that are not planned ({names})')
    images = check_loads(names, loads)
    sim = check_similarity(similarity, len(names))
    capacity = plan_capacity(capacity_factor, images, num_experts)

    chain = [check_solver_name(solver)]
    chain += [check_solver_name(s) for s in (fallback_solvers or [])]
    have = installed_solvers()
    if not fallback_solvers and chain[0] not in have:
        raise SolverUnavailableError(
            f'solver {chain[0]!r} is not installed (installed: {have}); install it, pick '
            'another, or pass fallback_solvers=[...] to fall back')
    cost = dataset_weights(images, beta)[:, None] * (1.0 - sim)
    errors = []
    lp = None
    for name in chain:
        if name not in have:
            errors.append(f'{name}: not installed')
            continue
        try:
            opts = solver_options if name == chain[0] else None
            lp = solve_gem_lp(cost, images, num_experts, capacity, solver=name,
                              solver_options=opts, init_columns=init_columns)
        except SolverFailedError as err:
            if not fallback_solvers:
                raise
            errors.append(f'{name}: {err}')
            continue
        break
    if lp is None:
        raise SolverFailedError('no LP solver produced a plan: ' + '; '.join(errors))
    if errors:
        warnings.warn(f'GEM planner fell back to solver {lp.solver!r} after: '
                      + '; '.join(errors), stacklevel=2)
    t1 = time.perf_counter()
    compiled = compile_plan(cost, images, num_experts, capacity, lp, rounding=rounding)
    plan = GEMPlan(dataset_names=names, loads=np.asarray(loads, dtype=np.float64),
                   images=images, similarity=sim, num_experts=num_experts,
                   capacity_factor=capacity_factor, capacity=capacity, beta=beta,
                   solver=lp.solver, quota=compiled.quota,
                   expert_anchor=compiled.expert_anchor, lp=lp,
                   rounded_cost=compiled.rounded_cost, similarity_spec=similarity_spec,
                   rounding=compiled.rounding, integral=compiled.integral)
    if image_ids:
        plan = plan.with_image_ids(image_ids)
    t2 = time.perf_counter()
    plan.timings = dict(lp=lp.solve_time, solve=t1 - t0, compile=t2 - t1, total=t2 - t0)
    return plan
