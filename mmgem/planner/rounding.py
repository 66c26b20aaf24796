# Copyright (c) mmgem contributors. All rights reserved.
"""Integer apportionment helpers of the GEM compiler.

Both rules are deterministic: ties are broken by position (lowest index
first), never by floating point noise beyond ``1e-12``.
"""
import heapq
from typing import Optional, Sequence

import numpy as np

_EPS = 1e-12


def round_half_up(values: Sequence[float]) -> np.ndarray:
    """Round non-negative values to the nearest integer, halves going up.

    numpy's :func:`numpy.round` rounds halves to even, which would make an
    expected load of 2.5 images round to 2 and 3.5 to 4; the planner wants
    the plain school rule.

    Args:
        values (Sequence[float]): Non-negative numbers.

    Returns:
        np.ndarray: ``floor(v + 0.5)`` as int64.
    """
    arr = np.asarray(values, dtype=np.float64)
    return np.floor(arr + 0.5).astype(np.int64)


def largest_remainder(shares: Sequence[float], total: int,
                      minimum: Optional[Sequence[int]] = None) -> np.ndarray:
    """Apportion ``total`` integer units proportionally to ``shares``.

    This is Hamilton's largest-remainder method: every entry gets the floor
    of its exact quota ``total * share / sum(shares)`` and the units left over
    go, one each, to the largest fractional remainders (ties: lowest index).
    The quota table of a plan uses it so that each row sums to its dataset's
    images per epoch exactly; the compiler uses it (with ``minimum``) to turn
    the LP's fractional expert counts ``u`` into integers; the UODB sampler
    uses it for the per-dataset draws of an epoch.

    With ``minimum``, an entry whose apportionment falls below its minimum is
    fixed at the minimum and the units left are apportioned again over the
    other entries, until every entry has at least its minimum (the lower
    bounded Hamilton method). An entry with zero share then gets exactly its
    minimum.

    Args:
        shares (Sequence[float]): Non-negative weights, not all zero unless
            ``total`` is 0 (or ``minimum`` takes up every unit).
        total (int): Non-negative number of units to hand out.
        minimum (Sequence[int], optional): Lower bound of every entry;
            ``sum(minimum) <= total``. Defaults to no bound (zeros).

    Returns:
        np.ndarray: int64 array with the shape of ``shares`` summing to
        ``total``; without ``minimum`` an entry with zero share gets 0.
    """
    w = np.asarray(shares, dtype=np.float64)
    total = int(total)
    if total < 0:
        raise ValueError(f'largest_remainder: total={total} is negative')
    if np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f'largest_remainder: shares {w.tolist()} must be finite and >= 0')
    if minimum is None:
        return _hamilton(w, total)
    low = np.asarray(minimum, dtype=np.int64).reshape(w.shape)
    if np.any(low < 0) or int(low.sum()) > total:
        raise ValueError(f'largest_remainder: minimum {low.tolist()} (sum {int(low.sum())}) '
                         f'cannot be met with total={total}')
    fixed = np.zeros(w.shape, dtype=bool)
    while True:
        free = ~fixed
        out = low.copy()
        left = total - int(low[fixed].sum())
        if free.any():
            share = w[free]
            if share.sum() <= 0:  # nothing to follow: spread evenly
                share = np.ones_like(share)
            out[free] = _hamilton(share, left)
        below = free & (out < low)
        if not below.any():
            return out
        fixed |= below


def _hamilton(w: np.ndarray, total: int) -> np.ndarray:
    """Plain largest remainder of validated shares (see above)."""
    out = np.zeros(w.shape, dtype=np.int64)
    if total == 0:
        return out
    wsum = w.sum()
    if wsum <= 0:
        raise ValueError(f'largest_remainder: shares {w.tolist()} are all zero '
                         f'but total={total}')
    exact = w * (total / wsum)
    base = np.floor(exact + _EPS).astype(np.int64)
    base = np.minimum(base, np.where(w > 0, total, 0))
    left = total - int(base.sum())
    if left > 0:
        rem = np.where(w > 0, exact - base, -np.inf)
        # stable sort on the negated remainder: ties go to the lowest index
        order = np.argsort(-np.round(rem, 12), kind='stable')
        base[order[:left]] += 1
    elif left < 0:  # only through _EPS on huge totals: take from the smallest
        rem = exact - base
        order = np.argsort(np.round(rem, 12), kind='stable')
        order = [i for i in order if base[i] > 0]
        for i in order[:-left]:
            base[i] -= 1
    return base


def highest_averages(weights: Sequence[float], seats: int,
                     minimum: Optional[Sequence[int]] = None) -> np.ndarray:
    """Apportion ``seats`` by the highest-averages (D'Hondt) rule.

    Every entry starts with its ``minimum`` (1 by default); each further seat
    goes to the entry whose weight per seat is currently the highest, ties to
    the lowest index. Among all allocations with those minima it minimises
    the largest weight per seat, which is what a capacity limit needs: the
    expert counts of anchor groups and the experts of a group's datasets are
    both apportioned with it.

    Args:
        weights (Sequence[float]): Non-negative loads.
        seats (int): Total number of seats; at least ``sum(minimum)``.
        minimum (Sequence[int], optional): Seats each entry gets first.
            Defaults to one each.

    Returns:
        np.ndarray: int64 seat counts summing to ``seats``.
    """
    w = np.asarray(weights, dtype=np.float64)
    mins = (np.ones(w.shape, dtype=np.int64) if minimum is None else
            np.asarray(minimum, dtype=np.int64).copy())
    if int(mins.sum()) > seats:
        raise ValueError(f'highest_averages: {seats} seats cannot give the '
                         f'minimum {mins.tolist()} (sum {int(mins.sum())})')
    counts = mins.copy()
    heap = []
    for i, (wi, ci) in enumerate(zip(w.tolist(), counts.tolist())):
        avg = wi / ci if ci > 0 else np.inf
        heap.append((-avg, i))
    heapq.heapify(heap)
    for _ in range(seats - int(counts.sum())):
        _, i = heapq.heappop(heap)
        counts[i] += 1
        heapq.heappush(heap, (-(w[i] / counts[i]), i))
    return counts
