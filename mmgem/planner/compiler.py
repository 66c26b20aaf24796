# Copyright (c) mmgem contributors. All rights reserved.
"""The GEM compiler: hierarchical rounding of the LP (spec section 3).

Three deterministic levels turn the LP optimum into an integer quota table
``quota[d, e]`` (images of dataset d per epoch that go to expert e):

1. **Anchors and expert counts.** Two anchor sets of at most M are built
   from the LP: ``'lp'`` walks the LP's anchors by rank (``y``, then ``u``,
   then dataset order) and keeps each unless every dataset it serves in the
   LP is already served as cheaply by a kept anchor -- this collapses
   interchangeable anchors, which an interior-point solver opens evenly
   (three datasets with S = 1 get ``y = 1/3`` each; ranking by ``y`` alone
   would keep all three or drop all three); ``'greedy'`` keeps the fully
   opened anchors (``y = 1``) and adds the LP-support anchor that lowers the
   uncapacitated assignment cost most. Both fill up to M anchors while that
   cost still drops. The M experts are apportioned to the kept anchors by
   the highest-averages rule on their loads, each anchor getting at least
   one expert; this minimises the largest per-expert load, hence fits the
   capacity whenever any count vector does.
2. **Datasets to anchor groups.** Every dataset goes whole to its cheapest
   kept anchor (ties: the LP's ``x``, then rank). If that breaks a group's
   capacity ``C * u``, the assignment is the optimal vertex of the
   transportation LP (datasets' images to groups of capacity ``C * u``,
   per-image cost ``cost[d, c] / n[d]``) solved with HiGHS' dual simplex:
   a vertex splits at most ``groups - 1`` datasets and is integral, as the
   data are integers. Both expert-count candidates (from the whole
   assignment's loads and from the LP's ``x``) are tried, recounting once
   after the assignment, and the cheapest plan over both anchor sets is
   kept (ties: ``'lp'`` first).
   For K <= ``LOCAL_SEARCH_MAX_K`` a deterministic 1-swap local search
   (drop an anchor, or swap it for a non-anchor; at most 4 K evaluations of
   a greedy level-2 estimate) also runs from both anchor sets, because the
   LP may leave nearly closed (``y ~ 0``) an anchor that the best integral
   plan opens; every candidate set is then compiled exactly and the
   cheapest wins.
3. **Inside a group of u experts.** With fewer datasets than experts each
   dataset gets its own experts (highest averages on its images) and is
   split evenly over them, so no expert is idle -- DAMEX's "two experts per
   dataset" case. Otherwise datasets are placed largest first, whole, on the
   least loaded expert (LPT); a dataset that does not fit under C is split
   over the least loaded experts. An expert left idle then takes half of the
   largest share of the most loaded expert.

An image of a split dataset finds its expert through
:func:`mmgem.planner.hashing.route_bucket` on its quota row, so the hash
spreads the dataset in the planned proportions.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import PlanError
from .lp import LPSolution
from .rounding import highest_averages, largest_remainder

_TOL = 1e-9
#: the anchor local search runs up to this many datasets (4 K evaluations)
LOCAL_SEARCH_MAX_K = 64


@dataclass
class CompiledPlan:
    """Output of :func:`compile_plan`.

    Attributes:
        quota (np.ndarray): (K, M) int64 images per epoch of d routed to e.
        expert_anchor (np.ndarray): (M,) int64 anchor dataset of each
            expert's group; experts of a group are consecutive and groups are
            ordered by their anchor's dataset index.
        rounded_cost (float): The LP objective of the rounded plan.
    """

    quota: np.ndarray
    expert_anchor: np.ndarray
    rounded_cost: float


def _rank(lp: LPSolution) -> np.ndarray:
    """Anchor rank: by y, then u (both to 1e-6), then dataset index."""
    k = lp.y.shape[0]
    y = np.round(lp.y, 6)
    u = np.round(lp.u, 6)
    return np.lexsort((np.arange(k), -u, -y))


def select_anchors(cost: np.ndarray, lp: LPSolution, num_experts: int,
                   strategy: str = 'lp') -> List[int]:
    """Level 1a: choose at most M anchors.

    ``'lp'`` walks the LP's anchors by rank (``y``, then ``u``, then dataset
    order) and keeps each one unless it is redundant: every dataset it serves
    in the LP (``x[d, c] > 0``) is already served as cheaply by a kept
    anchor. This keeps the LP's choice while collapsing interchangeable
    anchors (an interior-point solver spreads ``y`` evenly over datasets with
    S = 1). ``'greedy'`` starts from the fully opened anchors and adds the
    LP-support anchor that lowers the uncapacitated assignment cost most.
    Both then fill up to M anchors greedily while that cost still drops.

    Args:
        cost (np.ndarray): K x K planner costs.
        lp (LPSolution): The LP optimum.
        num_experts (int): M.
        strategy (str): ``'lp'`` or ``'greedy'``. Defaults to ``'lp'``.

    Returns:
        list[int]: Anchor dataset indices in selection order.
    """
    order = _rank(lp)
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)
    cand = [int(c) for c in order if lp.y[c] > 1e-6] or [int(c) for c in order]
    chosen: List[int] = []
    cur = None

    def try_add(c: int) -> None:
        nonlocal cur
        chosen.append(c)
        cur = cost[:, c].copy() if cur is None else np.minimum(cur, cost[:, c])

    if strategy == 'lp':
        x = lp.dense_x()
        for c in cand:
            if len(chosen) == num_experts:
                break
            served = np.flatnonzero(x[:, c] > 1e-6)
            if cur is not None and np.all(cur[served] <= cost[served, c] + 1e-12):
                continue
            try_add(c)
    elif strategy == 'greedy':
        for c in [c for c in cand if lp.y[c] >= 1 - 1e-6][:num_experts]:
            try_add(c)
    else:
        raise ValueError(f'unknown anchor strategy {strategy!r}')
    taken = set(chosen)
    rest = np.array([c for c in cand if c not in taken], dtype=np.int64)
    while len(chosen) < num_experts and rest.size:
        sub = cost[:, rest]
        if cur is None:
            gain = -sub.sum(axis=0)  # first anchor: the 1-median
        else:
            gain = np.maximum(cur[:, None] - sub, 0.0).sum(axis=0)
            if float(gain.max()) <= 1e-12:
                break
        gain = np.round(gain, 12)
        best = np.lexsort((pos[rest], -gain))[0]
        c = int(rest[best])
        rest = np.delete(rest, best)
        try_add(c)
    return chosen


def _cheapest_anchor(cost: np.ndarray, x: np.ndarray, anchors: np.ndarray,
                     pos: np.ndarray) -> np.ndarray:
    """Index into ``anchors`` of each dataset's cheapest anchor."""
    sub = np.round(cost[:, anchors], 12)
    xs = x[:, anchors]
    out = np.empty(cost.shape[0], dtype=np.int64)
    for d in range(cost.shape[0]):
        out[d] = np.lexsort((pos[anchors], -xs[d], sub[d]))[0]
    return out


def _transport(cost: np.ndarray, images: np.ndarray, anchors: np.ndarray,
               caps: np.ndarray) -> np.ndarray:
    """Integral min-cost assignment of images to capacitated groups."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix
    k, g = cost.shape[0], anchors.size
    unit = cost[:, anchors] / images[:, None]
    # per-image costs are tiny (w ~ 1/K over ~1e4 images): scale them to a
    # maximum of 1, or HiGHS' dual feasibility tolerance (1e-7) would stop the
    # simplex early at a far-from-optimal vertex
    scale = float(unit.max())
    idx = np.arange(k * g)
    a_eq = csr_matrix((np.ones(k * g), (np.repeat(np.arange(k), g), idx)), shape=(k, k * g))
    a_ub = csr_matrix((np.ones(k * g), (np.tile(np.arange(g), k), idx)), shape=(g, k * g))
    res = linprog(unit.ravel() / (scale if scale > 0 else 1.0), A_ub=a_ub,
                  b_ub=caps.astype(np.float64), A_eq=a_eq, b_eq=images.astype(np.float64),
                  bounds=(0, None), method='highs-ds')
    if res.status != 0:
        raise PlanError(f'the capacitated assignment of {k} datasets to {g} anchor groups '
                        f'failed: {res.message}')
    flow = np.maximum(np.round(res.x.reshape(k, g)), 0).astype(np.int64)
    for d in range(k):  # the vertex is integral; repair rounding noise anyway
        if flow[d].sum() != images[d]:
            flow[d] = largest_remainder(np.maximum(res.x[d * g:(d + 1) * g], 0) + 1e-12,
                                        images[d])
    return _repair_capacity(flow, unit, caps)


def _repair_capacity(flow: np.ndarray, unit: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Move images out of over-full groups to the cheapest groups with room."""
    flow = flow.copy()
    for _ in range(flow.shape[0] * flow.shape[1] + 1):
        over = flow.sum(0) - caps
        bad = np.flatnonzero(over > 0)
        if bad.size == 0:
            return flow
        g = int(bad[0])
        room = caps - flow.sum(0)
        ds = np.flatnonzero(flow[:, g] > 0)
        # the dataset whose move costs least
        best = None
        for d in ds:
            targets = np.flatnonzero(room > 0)
            if targets.size == 0:
                break
            t = targets[np.lexsort((targets, unit[d, targets]))[0]]
            delta = unit[d, t] - unit[d, g]
            if best is None or delta < best[0] - _TOL:
                best = (delta, d, t)
        if best is None:
            raise PlanError('no group has room left: the capacity cannot hold the images')
        _, d, t = best
        move = int(min(over[g], flow[d, g], room[t]))
        flow[d, g] -= move
        flow[d, t] += move
    raise PlanError('capacity repair did not converge')  # pragma: no cover


def _assign(cost, images, anchors, counts, capacity, whole, pos):
    """Level 2 for one count vector: whole if it fits, else transportation."""
    k, g = cost.shape[0], anchors.size
    flow = np.zeros((k, g), dtype=np.int64)
    flow[np.arange(k), whole] = images
    if capacity is not None:
        caps = counts.astype(np.int64) * int(capacity)
        if np.any(flow.sum(0) > caps):
            flow = _transport(cost, images, anchors, caps)
    return flow


def _level2(cost, images, anchors, capacity, x, pos, num_experts):
    """Level 1b + 2: expert counts and the datasets' group shares."""
    whole = _cheapest_anchor(cost, x, anchors, pos)
    k = cost.shape[0]
    whole_loads = np.bincount(whole, weights=images, minlength=anchors.size)
    # LP loads projected onto the kept anchors
    proj = x[:, anchors].copy()
    lost = 1.0 - proj.sum(1)
    proj[np.arange(k), whole] += np.clip(lost, 0.0, None)
    lp_loads = images @ proj
    best: Optional[Tuple[float, np.ndarray, np.ndarray]] = None
    for loads in (whole_loads, lp_loads):
        counts = highest_averages(loads, num_experts)
        for _ in range(2):  # assign, then recount once from the real loads
            flow = _assign(cost, images, anchors, counts, capacity, whole, pos)
            share = flow / images[:, None]
            value = float((cost[:, anchors] * share).sum())
            if best is None or value < best[0] - 1e-12:
                best = (value, flow, counts)
            recount = highest_averages(flow.sum(0), num_experts)
            if np.array_equal(recount, counts):
                break
            counts = recount
    return best[1], best[2]


def _quick_value(cost, images, anchors, capacity, x, pos, num_experts) -> float:
    """Level-2 cost of an anchor set with one count vector (local search)."""
    k = cost.shape[0]
    sub = cost[:, anchors]
    whole = np.argmin(sub, axis=1)
    flow = np.zeros((k, anchors.size), dtype=np.int64)
    flow[np.arange(k), whole] = images
    if capacity is not None:
        counts = highest_averages(flow.sum(0), num_experts)
        caps = counts * int(capacity)
        if np.any(flow.sum(0) > caps):  # greedy repair: an upper bound of level 2
            flow = _repair_capacity(flow, sub / images[:, None], caps)
    return float((sub * (flow / images[:, None])).sum())


def improve_anchors(cost: np.ndarray, images: np.ndarray, anchors: np.ndarray,
                    capacity: Optional[int], lp: LPSolution, num_experts: int,
                    max_evals: int) -> np.ndarray:
    """Deterministic 1-swap local search over the anchor set (small K only).

    Tries, in order, to drop an anchor or to swap it for a non-anchor (by LP
    rank) and keeps the first change that lowers the level-2 cost, until no
    change helps or ``max_evals`` evaluations are spent. The LP can leave an
    anchor nearly closed (``y ~ 0``) that the best integral plan opens;
    this finds such plans on small instances.

    Args:
        cost (np.ndarray): K x K planner costs.
        images (np.ndarray): Images per dataset.
        anchors (np.ndarray): Starting anchors.
        capacity (int, optional): C.
        lp (LPSolution): The LP optimum (ranks and tie-breaks).
        num_experts (int): M.
        max_evals (int): Evaluation budget.

    Returns:
        np.ndarray: The improved anchors.
    """
    order = _rank(lp)
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)
    x = lp.dense_x()
    best = _quick_value(cost, images, anchors, capacity, x, pos, num_experts)
    evals = 0
    improved = True
    while improved and evals < max_evals:
        improved = False
        current = anchors.tolist()
        outside = [int(c) for c in order if int(c) not in set(current)]
        moves = [[a for a in current if a != drop] for drop in current if len(current) > 1]
        moves += [[c if a == drop else a for a in current]
                  for drop in current for c in outside]
        for cand in moves:
            if evals >= max_evals:
                break
            evals += 1
            cand = np.array(cand, dtype=np.int64)
            value = _quick_value(cost, images, cand, capacity, x, pos, num_experts)
            if value < best - 1e-12 * max(1.0, abs(best)):
                best, anchors, improved = value, cand, True
                break
    return anchors


def _fill_group(quotas: Dict[int, int], k: int, limit: Optional[int]) -> Dict[int, np.ndarray]:
    """Level 3: place a group's dataset quotas on its k experts."""
    items = sorted(quotas.items(), key=lambda it: (-it[1], it[0]))
    if len(items) < k:
        alloc = highest_averages([q for _, q in items], k)
        start = 0
        out = {}
        for (d, q), n_e in zip(items, alloc.tolist()):
            row = np.zeros(k, dtype=np.int64)
            row[start:start + n_e] = largest_remainder(np.ones(n_e), q)
            out[d] = row
            start += n_e
        loads = np.sum(list(out.values()), axis=0)
        if limit is None or loads.max() <= limit:
            return out
    loads = np.zeros(k, dtype=np.int64)
    out = {d: np.zeros(k, dtype=np.int64) for d, _ in items}
    for d, q in items:
        e = int(np.argmin(loads))
        if limit is None or loads[e] + q <= limit:
            out[d][e] += q
            loads[e] += q
            continue
        rem = q
        for e in np.argsort(loads, kind='stable'):
            take = min(rem, int(limit) - int(loads[e]))
            if take > 0:
                out[d][e] += take
                loads[e] += take
                rem -= take
            if rem == 0:
                break
        if rem:
            raise PlanError(f'a group of {k} experts cannot hold its {sum(quotas.values())} '
                            f'images under capacity {limit}')
    for e in range(k):  # no idle expert: take half of the largest share
        if loads[e] > 0:
            continue
        donor = int(np.argmax(loads))
        d = max(out, key=lambda dd: (out[dd][donor], -dd))
        move = int(out[d][donor] // 2)
        if move == 0:
            continue
        out[d][donor] -= move
        out[d][e] += move
        loads[donor] -= move
        loads[e] += move
    return out


def compile_plan(cost: np.ndarray, images: np.ndarray, num_experts: int,
                 capacity: Optional[int], lp: LPSolution) -> CompiledPlan:
    """Round an LP optimum to a deterministic, capacity-aware quota table.

    Args:
        cost (np.ndarray): K x K ``w[d] * (1 - S[d, c])``.
        images (np.ndarray): (K,) int64 images per epoch of every dataset,
            all >= 1.
        num_experts (int): M.
        capacity (int, optional): Images per expert per epoch; None for no
            limit. ``capacity * M >= images.sum()`` must hold.
        lp (LPSolution): The LP optimum for the same inputs.

    Returns:
        CompiledPlan: Quota table, expert anchors and rounded cost.
    """
    cost = np.asarray(cost, dtype=np.float64)
    images = np.asarray(images, dtype=np.int64)
    k = cost.shape[0]
    if capacity is not None and int(capacity) * num_experts < int(images.sum()):
        raise PlanError(f'capacity {capacity} x {num_experts} experts cannot hold '
                        f'{int(images.sum())} images')
    order = _rank(lp)
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)
    x = lp.dense_x()
    best = None
    tried = []
    for strategy in ('lp', 'greedy'):
        start = np.array(select_anchors(cost, lp, num_experts, strategy), dtype=np.int64)
        options = [start]
        if k <= LOCAL_SEARCH_MAX_K:
            options.append(improve_anchors(cost, images, start, capacity, lp, num_experts,
                                           max_evals=4 * k))
        for anchors in options:
            if any(np.array_equal(anchors, t) for t in tried):
                continue
            tried.append(anchors)
            flow, counts = _level2(cost, images, anchors, capacity, x, pos, num_experts)
            value = float((cost[:, anchors] * (flow / images[:, None])).sum())
            if best is None or value < best[0] - 1e-12:
                best = (value, anchors, flow, counts)
    _, anchors, flow, counts = best
    # experts: groups in dataset order of their anchors, experts consecutive
    group_order = np.argsort(anchors, kind='stable')
    quota = np.zeros((k, num_experts), dtype=np.int64)
    expert_anchor = np.zeros(num_experts, dtype=np.int64)
    start = 0
    for gi in group_order:
        n_e = int(counts[gi])
        members = {int(d): int(flow[d, gi]) for d in np.flatnonzero(flow[:, gi])}
        placed = _fill_group(members, n_e, capacity) if members else {}
        for d, row in placed.items():
            quota[d, start:start + n_e] = row
        expert_anchor[start:start + n_e] = anchors[gi]
        start += n_e
    if not np.array_equal(quota.sum(1), images):  # pragma: no cover - internal check
        raise PlanError('internal error: the quota rows do not sum to the images')
    if capacity is not None and quota.sum(0).max() > capacity:  # pragma: no cover
        raise PlanError('internal error: an expert exceeds the capacity')
    share = quota / images[:, None]
    rounded = float((cost[:, expert_anchor] * share).sum())
    return CompiledPlan(quota=quota, expert_anchor=expert_anchor, rounded_cost=rounded)
