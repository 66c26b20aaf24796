# Copyright (c) mmgem contributors. All rights reserved.
"""The GEM compiler: hierarchical rounding of the LP (spec section 3).

Three deterministic levels turn the LP optimum into an integer quota table
``quota[d, e]`` (images of dataset d per epoch that go to expert e). A
*configuration* is a set of anchors with an integer expert count each; its
exact cost is that of the cheapest assignment of the datasets' images to the
anchor groups under their capacities ``count * C`` (level 2, a
transportation problem solved exactly by :func:`mmgem.planner.transport.
transport`); level 3 never changes the cost.

1. **Anchors.** Two starting sets of at most M anchors come from the LP:
   ``'lp'`` walks the LP's anchors by rank (``y``, then ``u``, then dataset
   order) and keeps each unless every dataset it serves in the LP is already
   served as cheaply by a kept anchor (this collapses interchangeable
   anchors, which an interior-point solver opens evenly); ``'greedy'`` keeps
   the fully opened anchors (``y = 1``). Both then fill up with LP-support
   anchors while the cost drops. The filling is *capacity-aware* where the
   local search runs (below): it adds the anchor whose configuration has the
   lowest exact capacitated cost. On larger instances it adds the anchor
   that lowers the uncapacitated cost most (exact scoring of every candidate
   would cost too much there).
2. **Expert counts.** Counts follow the LP: the largest remainder of the
   LP's ``u`` over the kept anchors, each raised to what its group's load
   needs (``max(1, ceil(load / C))``, lower-bounded Hamilton method). When
   the datasets do not all fit their cheapest group, the counts by largest
   remainder of ``u`` (at least 1 each) and the highest-averages counts of the
   loads are tried as well and the cheapest exact configuration is kept.
   Without capacity the counts do not change the cost, and the
   highest-averages rule on the loads balances the experts.
3. **Local search** (K <= :data:`LOCAL_SEARCH_MAX_K`): from each starting
   configuration, best-improvement moves -- add an anchor (taking one expert
   from a group), drop one (its experts to another group), swap an anchor for
   a non-anchor (same count), move one expert between groups -- scored by the
   exact level-2 cost; moves whose uncapacitated lower bound cannot beat the
   best move found are pruned, so the search is exact best improvement.
4. **Inside a group of u experts.** With fewer datasets than experts each
   dataset gets its own experts (highest averages on its images) and is
   split evenly over them, so no expert is idle -- DAMEX's "two experts per
   dataset" case. Otherwise datasets are placed largest first, whole, on the
   least loaded expert (LPT); a dataset that does not fit under C is split
   over the least loaded experts. An expert left idle then takes half of the
   largest share of the most loaded expert.

With ``rounding='exact'`` levels 1-2 come from the MILP
(:mod:`mmgem.planner.milp`), the integral optimum; ``'auto'`` (the
default) runs the heuristic and, for K <= :data:`AUTO_EXACT_MAX_K`, also the
MILP, keeps the cheaper plan and records the integral optimum as the plan's
certificate.

An image of a split dataset finds its expert through the plan's bucket
thresholds (:mod:`mmgem.planner.hashing`).
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import PlanError
from .lp import LPSolution
from .milp import MILPSolution, solve_gem_milp
from .rounding import highest_averages, largest_remainder
from .transport import capacity_prices, transport

#: the local search runs up to this many datasets ...
LOCAL_SEARCH_MAX_K = 64
#: ... and up to this many datasets x experts (measured: <= ~1 s at 50 x 16)
LOCAL_SEARCH_MAX_SIZE = 1024
#: best-improvement steps and exact evaluations of one local search (a
#: deterministic budget: never a time limit, so plans do not depend on speed)
LOCAL_SEARCH_MAX_STEPS = 200
LOCAL_SEARCH_MAX_EVALS = 4000
#: ``rounding='exact'`` accepts up to this many datasets
EXACT_MAX_K = 60
#: ``rounding='auto'`` also solves the MILP up to this many datasets
AUTO_EXACT_MAX_K = 16
ROUNDINGS = ('auto', 'heuristic', 'exact')

_REL = 1e-12  # relative tolerance of cost comparisons


@dataclass
class CompiledPlan:
    """Output of :func:`compile_plan`.

    Attributes:
        quota (np.ndarray): (K, M) int64 images per epoch of d routed to e.
        expert_anchor (np.ndarray): (M,) int64 anchor dataset of each
            expert's group; experts of a group are consecutive and groups are
            ordered by their anchor's dataset index.
        rounded_cost (float): The LP objective of the rounded plan.
        rounding (str): What made levels 1-2: ``'heuristic'`` or
            ``'exact'``.
        integral (dict, optional): The MILP certificate when it was solved:
            ``status``, ``value`` (best integral cost), ``bound`` (HiGHS' lower
            bound on it), ``nodes``.
    """

    quota: np.ndarray
    expert_anchor: np.ndarray
    rounded_cost: float
    rounding: str = 'heuristic'
    integral: Optional[Dict] = None


@dataclass
class _Config:
    """Anchors (ascending dataset index) with their counts and exact cost."""

    anchors: Tuple[int, ...]
    counts: Tuple[int, ...]
    value: float = float('inf')
    flow: Optional[np.ndarray] = field(default=None, repr=False)


def _rank(lp: LPSolution) -> np.ndarray:
    """Anchor rank: by y, then u (both to 1e-6), then dataset index."""
    k = lp.y.shape[0]
    y = np.round(lp.y, 6)
    u = np.round(lp.u, 6)
    return np.lexsort((np.arange(k), -u, -y))


def _need(loads: np.ndarray, capacity: Optional[int]) -> np.ndarray:
    """Experts a group needs: ``max(1, ceil(load / C))``."""
    if capacity is None:
        return np.ones(loads.shape, dtype=np.int64)
    return np.maximum(1, -(-np.asarray(loads, dtype=np.int64) // int(capacity)))


class _Scorer:
    """Exact level-2 cost of configurations, with a cache."""

    def __init__(self, cost: np.ndarray, images: np.ndarray, num_experts: int,
                 capacity: Optional[int]) -> None:
        self.cost = cost
        self.images = images
        self.num_experts = num_experts
        self.capacity = capacity
        self.unit = cost / images[:, None]
        self.cache: Dict[Tuple, Tuple[float, np.ndarray]] = {}
        self.evaluations = 0

    def whole(self, anchors) -> Tuple[np.ndarray, np.ndarray, float]:
        """Each dataset at its cheapest anchor (ties: lowest dataset index)."""
        sub = self.cost[:, list(anchors)]
        pick = np.argmin(sub, axis=1)
        loads = np.bincount(pick, weights=self.images, minlength=len(anchors))
        return pick, np.round(loads).astype(np.int64), float(
            sub[np.arange(sub.shape[0]), pick].sum())

    def prices(self, cfg: _Config) -> np.ndarray:
        """Capacity prices of a scored configuration (zeros without C)."""
        if self.capacity is None:
            return np.zeros(len(cfg.anchors))
        caps = np.asarray(cfg.counts, dtype=np.int64) * int(self.capacity)
        return capacity_prices(self.unit[:, list(cfg.anchors)], cfg.flow, caps)

    def score(self, anchors: Tuple[int, ...], counts: Tuple[int, ...]) -> _Config:
        """The exact cost of a configuration."""
        key = (anchors, counts)
        hit = self.cache.get(key)
        if hit is None:
            self.evaluations += 1
            pick, _, _ = self.whole(anchors)
            idx = list(anchors)
            if self.capacity is None:
                flow = np.zeros((self.cost.shape[0], len(idx)), dtype=np.int64)
                flow[np.arange(flow.shape[0]), pick] = self.images
            else:
                caps = np.asarray(counts, dtype=np.int64) * int(self.capacity)
                flow = transport(self.unit[:, idx], self.images, caps, start=pick)
            value = float((self.cost[:, idx] * (flow / self.images[:, None])).sum())
            hit = (value, flow)
            self.cache[key] = hit
        return _Config(anchors, counts, hit[0], hit[1])


def select_anchors(cost: np.ndarray, lp: LPSolution, num_experts: int, strategy: str = 'lp',
                   scorer: Optional['_Scorer'] = None) -> List[int]:
    """Level 1a: choose at most M anchors.

    ``'lp'`` walks the LP's anchors by rank (``y``, then ``u``, then dataset
    order) and keeps each one unless it is redundant: every dataset it serves
    in the LP (``x[d, c] > 0``) is already served as cheaply by a kept
    anchor. ``'greedy'`` starts from the fully opened anchors. Both then fill
    up with LP-support anchors. Without ``scorer`` (or without capacity) the
    filling adds the anchor that lowers the uncapacitated assignment cost
    most, while it drops. With a ``scorer`` of a capacitated instance the
    filling is *capacity-aware*: it adds the anchor whose configuration
    (counts by :func:`expert_counts`) has the lowest exact capacitated cost,
    while that cost drops.

    Args:
        cost (np.ndarray): K x K planner costs.
        lp (LPSolution): The LP optimum.
        num_experts (int): M.
        strategy (str): ``'lp'`` or ``'greedy'``. Defaults to ``'lp'``.
        scorer (_Scorer, optional): Exact scoring for the capacity-aware
            filling.

    Returns:
        list[int]: Anchor dataset indices in selection order.
    """
    order = _rank(lp)
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)
    cand = [int(c) for c in order if lp.y[c] > 1e-6] or [int(c) for c in order]
    chosen: List[int] = []
    cur = None

    def add(c: int) -> None:
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
            add(c)
    elif strategy == 'greedy':
        for c in [c for c in cand if lp.y[c] >= 1 - 1e-6][:num_experts]:
            add(c)
    else:
        raise ValueError(f'unknown anchor strategy {strategy!r}')

    aware = scorer is not None and scorer.capacity is not None
    taken = set(chosen)
    rest = np.array([c for c in cand if c not in taken], dtype=np.int64)
    best = _best_config(scorer, tuple(sorted(chosen)), lp.u) if aware and chosen else None
    while len(chosen) < num_experts and rest.size:
        if aware and cur is not None:
            trials = [_best_config(scorer, tuple(sorted(chosen + [int(c)])), lp.u)
                      for c in rest]
            j = min(range(len(trials)), key=lambda t: (round(trials[t].value, 15), pos[rest[t]]))
            if trials[j].value >= best.value - _REL * max(1.0, abs(best.value)):
                break
            best = trials[j]
        else:
            sub = cost[:, rest]
            if cur is None:
                gain = -sub.sum(axis=0)  # first anchor: the 1-median
            else:
                gain = np.maximum(cur[:, None] - sub, 0.0).sum(axis=0)
                if float(gain.max()) <= 1e-12:
                    break
            gain = np.round(gain, 12)
            j = int(np.lexsort((pos[rest], -gain))[0])
            if aware:
                best = _best_config(scorer, (int(rest[j]), ), lp.u)
        add(int(rest[j]))
        rest = np.delete(rest, j)
    return chosen


def expert_counts(scorer: _Scorer, anchors: Tuple[int, ...], lp_u: np.ndarray) -> List[Tuple]:
    """Level 1b: candidate integer expert counts of an anchor set.

    Args:
        scorer (_Scorer): The instance.
        anchors (tuple[int]): Anchors, ascending.
        lp_u (np.ndarray): The LP's fractional expert counts.

    Returns:
        list[tuple[int]]: Count vectors summing to M, the LP-following one
        first.
    """
    m = scorer.num_experts
    _, loads, _ = scorer.whole(anchors)
    if scorer.capacity is None:
        return [tuple(highest_averages(loads, m).tolist())]
    u = np.clip(lp_u[list(anchors)], 0.0, None)
    need = _need(loads, scorer.capacity)
    out = []
    if int(need.sum()) <= m:  # every dataset fits its cheapest group
        out.append(largest_remainder(u, m, minimum=need))
    else:
        out.append(largest_remainder(u, m, minimum=np.ones(len(anchors), dtype=np.int64)))
        out.append(highest_averages(loads, m))
    seen, uniq = set(), []
    for c in out:
        t = tuple(int(v) for v in c)
        if t not in seen:
            seen.add(t)
            uniq.append(t)
    return uniq


def _best_config(scorer: _Scorer, anchors: Tuple[int, ...], lp_u: np.ndarray) -> _Config:
    """The cheapest of the :func:`expert_counts` candidates of an anchor set."""
    return _best([scorer.score(anchors, c) for c in expert_counts(scorer, anchors, lp_u)])


def _best(configs: List[_Config]) -> _Config:
    """Cheapest configuration, ties to the first."""
    best = configs[0]
    for c in configs[1:]:
        if c.value < best.value - _REL * max(1.0, abs(best.value)):
            best = c
    return best


def _new_anchor_bound(base: np.ndarray, out_cost: np.ndarray, images: np.ndarray,
                      cap_new: np.ndarray) -> np.ndarray:
    """Best Lagrangian bound over the price of a new anchor.

    For every row r of ``base`` (what each dataset pays elsewhere, priced)
    and candidate anchor c of capacity ``cap_new[r]`` (0: no capacity), the
    maximum over ``pi >= 0`` of ``sum_d min(base[r, d], cost[d, c] + n[d] pi)
    - cap_new[r] pi``: a concave piecewise-linear function of ``pi`` whose
    maximum is at the price where the datasets that would choose c stop
    exceeding its capacity.

    Args:
        base (np.ndarray): (R, K) priced cost of each dataset without c.
        out_cost (np.ndarray): (K, P) cost of each dataset at each candidate.
        images (np.ndarray): (K,) images.
        cap_new (np.ndarray): (R,) capacity of the new anchor for each row.

    Returns:
        np.ndarray: (R, P) bounds (without the prices of the other anchors).
    """
    n = images.astype(np.float64)
    if not np.any(cap_new > 0):
        return np.minimum(base[:, :, None], out_cost[None]).sum(1)
    t = (base[:, :, None] - out_cost[None]) / n[None, :, None]  # (R, K, P) break prices
    order = np.argsort(-t, axis=1, kind='stable')
    ts = np.take_along_axis(t, order, axis=1)
    ns = np.where(ts > 0, n[order], 0.0)
    over = np.cumsum(ns, axis=1) > cap_new[:, None, None]
    first = np.argmax(over, axis=1)  # (R, P): first dataset beyond the capacity
    price = np.where(over.any(axis=1), np.take_along_axis(ts, first[:, None], axis=1)[:, 0], 0.0)
    price = np.where(cap_new[:, None] > 0, np.clip(price, 0.0, None), 0.0)
    val = np.minimum(base[:, :, None], out_cost[None] + n[None, :, None] * price[:, None, :])
    return val.sum(1) - cap_new[:, None] * price


def local_search(scorer: _Scorer, start: _Config, max_steps: int = LOCAL_SEARCH_MAX_STEPS,
                 max_evals: int = LOCAL_SEARCH_MAX_EVALS) -> _Config:
    """Best-improvement local search over configurations (see module doc).

    Moves: add an anchor (one expert from a group with two or more), drop an
    anchor (all its experts to one other group), swap an anchor for a
    non-anchor (keeping its count), move one expert between groups. Each step
    takes the move of lowest exact cost; a move whose uncapacitated lower
    bound is not below the best cost found so far in the step is skipped.

    Args:
        scorer (_Scorer): The instance.
        start (_Config): The starting configuration (scored).
        max_steps (int): Improvement steps at most.
        max_evals (int): Exact evaluations at most (the step that reaches
            the budget still takes its best move found).

    Returns:
        _Config: A configuration no single move improves (or the last after
        the budget).
    """
    cost = scorer.cost
    k = cost.shape[0]
    m = scorer.num_experts
    cap = 0 if scorer.capacity is None else int(scorer.capacity)
    capped = scorer.capacity is not None
    cur = start
    evals = 0
    for _ in range(max_steps):
        if evals >= max_evals:
            break
        anchors = list(cur.anchors)
        counts = list(cur.counts)
        g = len(anchors)
        # Lagrangian bounds with the current capacity prices pi (new anchors
        # priced 0): sum_d min_g (cost[d, g] + n[d] pi[g]) - C sum_g pi[g] k[g]
        pi = scorer.prices(cur)
        sub = cost[:, anchors] + scorer.images[:, None] * pi[None, :]
        priced = cap * pi * np.asarray(counts)  # C pi[g] k[g]
        base = float(priced.sum())
        order = np.argsort(sub, axis=1, kind='stable')
        m1 = sub[np.arange(k), order[:, 0]]
        m2 = sub[np.arange(k), order[:, 1]] if g > 1 else np.full(k, np.inf)
        # without anchor i: the best of the others
        without = np.where(order[:, [0]] == np.arange(g)[None, :], m2[:, None], m1[:, None])
        outside = [c for c in range(k) if c not in set(anchors)]
        moves = []  # (lower bound, anchors, counts)
        if capped:  # move one expert i -> j
            total = float(m1.sum())
            for i in range(g):
                if counts[i] < 2:
                    continue
                for j in range(g):
                    if i != j:
                        c2 = counts[:]
                        c2[i] -= 1
                        c2[j] += 1
                        lb = total - base + cap * (pi[i] - pi[j])
                        moves.append((lb, anchors, c2))
        if outside:
            out_cost = cost[:, outside]
            add_lb = _new_anchor_bound(m1[None], out_cost, scorer.images,
                                       np.array([cap]))[0]
            swap_lb = _new_anchor_bound(without.T, out_cost, scorer.images,
                                        cap * np.asarray(counts))
            if g < m:
                donors = [i for i in range(g) if counts[i] >= 2] if capped else \
                         [int(np.argmax(counts))]
                for jc, c in enumerate(outside):
                    for i in donors:
                        c2 = counts[:]
                        c2[i] -= 1
                        lb = float(add_lb[jc]) - base + cap * pi[i]
                        moves.append((lb, anchors + [c], c2 + [1]))
            for i in range(g):
                for jc, c in enumerate(outside):
                    a2 = anchors[:]
                    a2[i] = c
                    moves.append((float(swap_lb[i, jc]) - base + priced[i], a2, counts[:]))
        if g > 1:
            drop_lb = without.sum(0)
            for i in range(g):
                receivers = [j for j in range(g) if j != i] if capped else [(i + 1) % g]
                for j in receivers:
                    c2 = counts[:]
                    c2[j] += c2[i]
                    lb = float(drop_lb[i]) - base + priced[i] - cap * pi[j] * counts[i]
                    moves.append((lb, anchors[:i] + anchors[i + 1:], c2[:i] + c2[i + 1:]))
        tol = _REL * max(1.0, abs(cur.value))
        ranked = sorted(range(len(moves)), key=lambda t: (round(moves[t][0], 15), t))
        best = None
        for t in ranked:
            lb, a2, c2 = moves[t]
            limit = cur.value if best is None else best.value
            if lb >= limit - tol or evals >= max_evals:
                break
            evals += 1
            srt = np.argsort(a2, kind='stable')
            cand = scorer.score(tuple(int(a2[s]) for s in srt), tuple(int(c2[s]) for s in srt))
            if not capped:  # counts do not change the cost: recount for balance
                cand = scorer.score(cand.anchors, expert_counts(scorer, cand.anchors,
                                                                np.zeros(k))[0])
            if cand.value < limit - tol:
                best = cand
        if best is None:
            return cur
        cur = best
    return cur


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


def _heuristic(scorer: _Scorer, lp: LPSolution, k: int) -> _Config:
    """Levels 1-2 by the LP-guided heuristic and the local search."""
    small = k <= LOCAL_SEARCH_MAX_K and k * scorer.num_experts <= LOCAL_SEARCH_MAX_SIZE
    starts: List[_Config] = []
    for strategy in ('lp', 'greedy'):
        chosen = select_anchors(scorer.cost, lp, scorer.num_experts, strategy,
                                scorer=scorer if small else None)
        start = _best_config(scorer, tuple(sorted(chosen)), lp.u)
        if all(s.anchors != start.anchors or s.counts != start.counts for s in starts):
            starts.append(start)
    if small:
        starts = [local_search(scorer, s) for s in starts]
    return _best(starts)


def _from_milp(scorer: _Scorer, sol: MILPSolution) -> _Config:
    """The configuration of a MILP point, re-scored in whole images."""
    anchors = tuple(int(c) for c in np.flatnonzero(sol.u > 0))
    counts = tuple(int(sol.u[c]) for c in anchors)
    return scorer.score(anchors, counts)


def _drop_empty_groups(cfg: _Config, capacity: Optional[int]) -> Tuple[List[int], List[int],
                                                                           np.ndarray]:
    """Give the experts of groups without images to the busiest group."""
    anchors, counts, flow = list(cfg.anchors), list(cfg.counts), cfg.flow
    loads = flow.sum(0)
    empty = [i for i in range(len(anchors)) if loads[i] == 0]
    if not empty or len(empty) == len(anchors):
        return anchors, counts, flow
    keep = [i for i in range(len(anchors)) if loads[i] > 0]
    counts_k = np.array([counts[i] for i in keep], dtype=np.int64)
    spare = sum(counts[i] for i in empty)
    loads_k = loads[keep].astype(np.float64)
    for _ in range(spare):  # highest load per expert first (ties: lowest index)
        j = int(np.argmax(loads_k / counts_k))
        counts_k[j] += 1
    return ([anchors[i] for i in keep], counts_k.tolist(), flow[:, keep])


def compile_plan(cost: np.ndarray, images: np.ndarray, num_experts: int,
                 capacity: Optional[int], lp: LPSolution,
                 rounding: str = 'auto') -> CompiledPlan:
    """Round an LP optimum to a deterministic, capacity-aware quota table.

    Args:
        cost (np.ndarray): K x K ``w[d] * (1 - S[d, c])``.
        images (np.ndarray): (K,) int64 images per epoch of every dataset,
            all >= 1.
        num_experts (int): M.
        capacity (int, optional): Images per expert per epoch; None for no
            limit. ``capacity * M >= images.sum()`` must hold.
        lp (LPSolution): The LP optimum for the same inputs.
        rounding (str): ``'heuristic'`` (LP-guided rounding and local
            search), ``'exact'`` (the MILP optimum; K <= :data:`EXACT_MAX_K`)
            or ``'auto'`` (the heuristic, and the MILP too when K <=
            :data:`AUTO_EXACT_MAX_K`; the cheaper wins). Defaults to
            ``'auto'``.

    Returns:
        CompiledPlan: Quota table, expert anchors, rounded cost, what
        rounded it and the MILP certificate if solved.
    """
    cost = np.asarray(cost, dtype=np.float64)
    images = np.asarray(images, dtype=np.int64)
    k = cost.shape[0]
    if rounding not in ROUNDINGS:
        raise PlanError(f'rounding={rounding!r} is not one of {list(ROUNDINGS)}')
    if capacity is not None and int(capacity) * num_experts < int(images.sum()):
        raise PlanError(f'capacity {capacity} x {num_experts} experts cannot hold '
                        f'{int(images.sum())} images')
    if rounding == 'exact' and k > EXACT_MAX_K:
        raise PlanError(f"rounding='exact' solves a MILP and is limited to K <= {EXACT_MAX_K} "
                        f"datasets (this plan has K={k}); use rounding='heuristic' or 'auto'")
    scorer = _Scorer(cost, images, num_experts, capacity)
    chosen, used, integral = None, 'heuristic', None
    if rounding != 'exact':
        chosen = _heuristic(scorer, lp, k)
    if rounding == 'exact' or (rounding == 'auto' and k <= AUTO_EXACT_MAX_K):
        sol = solve_gem_milp(cost, images, num_experts, capacity)
        integral = dict(status=sol.status, value=sol.value, bound=sol.bound, nodes=sol.nodes)
        if rounding == 'exact' and not sol.optimal:
            raise PlanError(f'the exact MILP (K={k}, M={num_experts}) stopped without proof of '
                            f'optimality ({sol.status}); use rounding=\'auto\' or '
                            '\'heuristic\'')
        if np.isfinite(sol.value):
            exact = _from_milp(scorer, sol)
            if chosen is None or exact.value < chosen.value - _REL * max(1.0, chosen.value):
                chosen, used = exact, 'exact'
    anchors, counts, flow = _drop_empty_groups(chosen, capacity)
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
    if start != num_experts or not np.array_equal(quota.sum(1), images):  # pragma: no cover
        raise PlanError('internal error: the quota does not cover the experts and images')
    if capacity is not None and quota.sum(0).max() > capacity:  # pragma: no cover
        raise PlanError('internal error: an expert exceeds the capacity')
    rounded = plan_cost(cost, images, quota, expert_anchor)
    if integral is not None and math.isfinite(integral['value']):
        integral['value'] = float(integral['value'])
    return CompiledPlan(quota=quota, expert_anchor=expert_anchor, rounded_cost=rounded,
                        rounding=used, integral=integral)


def plan_cost(cost: np.ndarray, images: np.ndarray, quota: np.ndarray,
              expert_anchor: np.ndarray) -> float:
    """The LP objective of a quota table: ``sum cost[d, anchor(e)] q[d, e] / n[d]``.

    Args:
        cost (np.ndarray): K x K planner costs.
        images (np.ndarray): (K,) images per epoch (the quota's row sums).
        quota (np.ndarray): (K, M) quota table.
        expert_anchor (np.ndarray): (M,) anchor of every expert.

    Returns:
        float: The cost.
    """
    share = np.asarray(quota, dtype=np.float64) / np.asarray(images, dtype=np.float64)[:, None]
    return float((np.asarray(cost)[:, np.asarray(expert_anchor)] * share).sum())
