# Copyright (c) mmgem contributors. All rights reserved.
"""Level 2 of the compiler: datasets' images to capacitated anchor groups.

For a fixed set of anchor groups with capacities ``caps[g]`` (expert count
times C), the cheapest assignment of every dataset's ``n[d]`` images is a
transportation problem (per-image cost ``cost[d, a] / n[d]``). With integer
supplies and capacities it has an optimal solution in whole images, and
:func:`transport` returns one:

* **Successive shortest paths**. Every dataset
  starts whole at its cheapest group, the optimum without capacities, so the
  residual network has no negative cycle. Images are then moved out of
  over-full groups along shortest paths in the network whose nodes are the
  groups (moving images of ``d`` from group ``a`` to ``b`` costs
  ``unit[d, b] - unit[d, a]``, at most the images of ``d`` in ``a``), found
  with Bellman-Ford from all over-full groups at once, until no group is
  over-full. This is the classical min-cost flow algorithm, so the result is
  optimal; it is exact in integers and fast when few images must move.
* **HiGHS' dual simplex**, only if the float arithmetic of the paths above
  hits a rounding cycle: the transportation LP in shares (well scaled); its
  optimal vertex is integral.

HiGHS alone would do, but slower and not the same plans: on the level-2
problems of 20 random planner instances and a 50 x 16 one (323 solves, one
core) the paths took 0.83 s in all, HiGHS 5.26 s; both found the optimal
cost every time, but another optimal flow (a tie) in 15 of the 323, which
changes those plans and their hashes.
"""
from typing import Optional

import numpy as np

from .errors import PlanError
from .rounding import largest_remainder


def transport(unit: np.ndarray, images: np.ndarray, caps: np.ndarray,
              start: Optional[np.ndarray] = None) -> np.ndarray:
    """Cheapest integral assignment of images to capacitated groups.

    Args:
        unit (np.ndarray): (K, G) per-image cost of dataset d in group g.
        images (np.ndarray): (K,) int64 images of every dataset.
        caps (np.ndarray): (G,) int64 capacities, ``sum(caps) >= sum(images)``.
        start (np.ndarray, optional): (K,) group of every dataset without
            capacities (its cheapest group; computed when not given).

    Returns:
        np.ndarray: (K, G) int64 flow: images of d in group g; rows sum to
        ``images``, columns to at most ``caps``.
    """
    unit = np.asarray(unit, dtype=np.float64)
    images = np.asarray(images, dtype=np.int64)
    caps = np.asarray(caps, dtype=np.int64)
    k, g = unit.shape
    if int(caps.sum()) < int(images.sum()):
        raise PlanError(f'groups of capacity {caps.tolist()} (sum {int(caps.sum())}) cannot '
                        f'hold {int(images.sum())} images')
    if start is None:
        start = np.argmin(unit, axis=1)
    flow = np.zeros((k, g), dtype=np.int64)
    flow[np.arange(k), start] = images
    if np.all(flow.sum(0) <= caps):
        return flow
    out = _shortest_paths(unit, flow, caps)
    if out is not None:
        return out
    return _highs(unit, images, caps)


def _move_row(unit: np.ndarray, flow: np.ndarray, a: int, weight: np.ndarray,
              via: Optional[np.ndarray] = None) -> None:
    """Row ``a`` of the move network: cheapest move of images from a to b.

    ``weight[a, b] = min over d with images in a of unit[d, b] - unit[d, a]``
    (``inf`` for ``b = a`` or an empty group); ``via[a, b]`` is that ``d``.
    """
    ds = np.flatnonzero(flow[:, a] > 0)
    if ds.size == 0:
        weight[a] = np.inf
        return
    sub = unit[ds] - unit[ds, a][:, None]
    j = np.argmin(sub, axis=0)
    weight[a] = sub[j, np.arange(sub.shape[1])]
    weight[a, a] = np.inf
    if via is not None:
        via[a] = ds[j]


def _shortest_paths(unit: np.ndarray, flow: np.ndarray, caps: np.ndarray) -> Optional[np.ndarray]:
    """Successive shortest paths from the uncapacitated optimum ``flow``.

    Returns None if Bellman-Ford does not settle (a float rounding cycle);
    the caller then solves the LP.
    """
    k, g = unit.shape
    flow = flow.copy()
    idx = np.arange(g)
    tol = 1e-12 * float(np.abs(unit).max(initial=0.0))
    excess = flow.sum(0) - caps
    # weight[a, b]: per-image cost of the cheapest move of images from group
    # a to group b, over the datasets with images in a; via[a, b]: which one
    weight = np.full((g, g), np.inf)
    via = np.zeros((g, g), dtype=np.int64)
    for a in range(g):
        _move_row(unit, flow, a, weight, via)
    for _ in range(int(max(excess.clip(0).sum(), 0)) + k * g + 1):
        over = excess > 0
        if not over.any():
            return flow
        dist = np.where(over, 0.0, np.inf)
        pred = np.full(g, -1, dtype=np.int64)
        for _ in range(g + 1):
            cand = dist[:, None] + weight
            best = np.argmin(cand, axis=0)
            new = cand[best, idx]
            better = new < dist - tol
            if not better.any():
                break
            dist = np.where(better, new, dist)
            pred = np.where(better, best, pred)
        else:
            return None  # still relaxing after G rounds: a (rounding) cycle
        reach = np.where(excess < 0, dist, np.inf)
        if not np.isfinite(reach).any():  # pragma: no cover - caps hold every image
            raise PlanError('internal error: no group with room is reachable')
        sink = int(np.argmin(reach))
        path = []
        node = sink
        for _ in range(g + 1):
            if pred[node] < 0:
                break
            path.append((int(pred[node]), node))
            node = int(pred[node])
        else:
            return None
        source = node
        amount = min(int(excess[source]), int(-excess[sink]))
        for a, b in path:
            amount = min(amount, int(flow[via[a, b], a]))
        if amount <= 0:  # pragma: no cover - every arc on the path has images
            return None
        touched = set()
        for a, b in path:
            d = via[a, b]
            flow[d, a] -= amount
            flow[d, b] += amount
            touched.update((a, b))
        for a in touched:
            _move_row(unit, flow, a, weight, via)
        excess[source] -= amount
        excess[sink] += amount
    return None  # pragma: no cover - the excess falls by >= 1 per path


def capacity_prices(unit: np.ndarray, flow: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Prices of the groups' capacities at an optimal flow (LP duals).

    The price of group ``a`` is what pushing one image out of it costs: the
    shortest path from ``a`` to a group with room in the move network (see
    the module docstring). Groups with room cost 0. Any prices ``>= 0`` give
    the Lagrangian lower bound ``sum_d n[d] min_g (unit[d, g] + pi[g]) -
    sum_g pi[g] caps[g]`` on the transportation cost, and these make it
    tight at ``flow``; the local search uses them to bound its moves.

    Args:
        unit (np.ndarray): (K, G) per-image costs.
        flow (np.ndarray): (K, G) optimal flow.
        caps (np.ndarray): (G,) capacities.

    Returns:
        np.ndarray: (G,) float64 prices, ``>= 0``; all 0 when no group has
        room (then any common shift is optimal and 0 is a valid choice).
    """
    k, g = unit.shape
    room = flow.sum(0) < caps
    if not room.any():
        return np.zeros(g)
    weight = np.full((g, g), np.inf)
    for a in range(g):
        _move_row(unit, flow, a, weight)
    dist = np.where(room, 0.0, np.inf)
    for _ in range(g + 1):
        new = np.minimum(dist, (weight + dist[None, :]).min(1))
        if np.array_equal(new, dist):
            break
        dist = new
    return np.clip(np.where(np.isfinite(dist), dist, 0.0), 0.0, None)


def _highs(unit: np.ndarray, images: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """The transportation LP with HiGHS' dual simplex (integral vertex)."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix
    k, g = unit.shape
    # in shares s = flow / n the problem is well scaled (costs ~ cost[d, c],
    # rows of ones, capacity rows divided by their capacity); in images the
    # per-image costs span orders of magnitude and HiGHS' tolerances stop the
    # simplex at a visibly suboptimal vertex. The change of variables keeps
    # the vertices, so the optimum is still integral in images.
    n = images.astype(np.float64)
    share_cost = unit * n[:, None]
    scale = float(np.abs(share_cost).max(initial=0.0)) or 1.0
    idx = np.arange(k * g)
    capf = np.maximum(caps.astype(np.float64), 1.0)
    a_eq = csr_matrix((np.ones(k * g), (np.repeat(np.arange(k), g), idx)), shape=(k, k * g))
    a_ub = csr_matrix(((np.repeat(n, g) / np.tile(capf, k)), (np.tile(np.arange(g), k), idx)),
                      shape=(g, k * g))
    res = linprog(share_cost.ravel() / scale, A_ub=a_ub, b_ub=caps / capf, A_eq=a_eq,
                  b_eq=np.ones(k), bounds=(0, 1), method='highs-ds',
                  options=dict(dual_feasibility_tolerance=1e-10,
                               primal_feasibility_tolerance=1e-10))
    if res.status != 0:
        raise PlanError(f'the capacitated assignment of {k} datasets to {g} anchor groups '
                        f'failed: {res.message}')
    exact = np.maximum(res.x.reshape(k, g), 0.0) * n[:, None]
    flow = np.round(exact).astype(np.int64)
    for d in range(k):  # the vertex is integral; repair rounding noise anyway
        if flow[d].sum() != images[d]:
            flow[d] = largest_remainder(exact[d] + 1e-12, images[d])
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
        best = None
        for d in np.flatnonzero(flow[:, g] > 0):
            targets = np.flatnonzero(room > 0)
            t = targets[np.lexsort((targets, unit[d, targets]))[0]]
            delta = unit[d, t] - unit[d, g]
            if best is None or delta < best[0]:
                best = (delta, d, t)
        _, d, t = best
        move = int(min(over[g], flow[d, g], room[t]))
        flow[d, g] -= move
        flow[d, t] += move
    raise PlanError('capacity repair did not converge')  # pragma: no cover
