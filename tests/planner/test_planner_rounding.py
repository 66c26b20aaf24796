# Copyright (c) mmgem contributors. All rights reserved.
"""Integer apportionment: largest remainder and highest averages."""
import itertools
from fractions import Fraction

import numpy as np
import pytest

from mmgem.planner import highest_averages, largest_remainder, round_half_up


@pytest.mark.parametrize('seed', range(5))
def test_largest_remainder_is_hamilton(seed):
    rng = np.random.default_rng(seed)
    shares = rng.random(7) * rng.integers(0, 2, 7)
    shares[0] += 0.1
    total = int(rng.integers(1, 1000))
    got = largest_remainder(shares, total)
    assert got.sum() == total and got.dtype == np.int64
    # independent: exact rational quotas, floors, then the largest remainders
    fr = [Fraction(float(s)) for s in shares]
    quotas = [q * total / sum(fr) for q in fr]
    floors = [int(q) for q in quotas]
    rem = sorted(range(7), key=lambda i: (-(quotas[i] - floors[i]), i))
    want = floors[:]
    for i in rem[:total - sum(floors)]:
        want[i] += 1
    assert got.tolist() == want
    assert np.all(got[shares == 0] == 0)


def test_largest_remainder_ties_go_to_lowest_index():
    assert largest_remainder([1, 1, 1], 2).tolist() == [1, 1, 0]
    assert largest_remainder([1, 1, 1, 1], 6).tolist() == [2, 2, 1, 1]


def test_largest_remainder_bad_input():
    with pytest.raises(ValueError, match='all zero'):
        largest_remainder([0, 0], 3)
    with pytest.raises(ValueError, match='finite and >= 0'):
        largest_remainder([1, -1], 3)


@pytest.mark.parametrize('seed', range(4))
def test_highest_averages_minimises_the_largest_load_per_seat(seed):
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0, 1, 4)
    seats = 7
    got = highest_averages(weights, seats)
    assert got.sum() == seats and np.all(got >= 1)
    best = min(max(w / c for w, c in zip(weights, combo))
               for combo in itertools.product(range(1, seats), repeat=4)
               if sum(combo) == seats)
    assert max(weights / got) == pytest.approx(best)


def test_highest_averages_minimum_and_error():
    got = highest_averages([10, 1], 4, minimum=[0, 2])
    assert got.tolist() == [2, 2]
    with pytest.raises(ValueError, match='cannot give the minimum'):
        highest_averages([1, 1, 1], 2)


def test_round_half_up():
    assert round_half_up([0.5, 1.5, 2.5, 2.4999, 7]).tolist() == [1, 2, 3, 2, 7]


@pytest.mark.parametrize('seed', range(6))
def test_largest_remainder_with_minimum_is_the_bounded_hamilton(seed):
    rng = np.random.default_rng(10 + seed)
    shares = rng.random(5) * rng.integers(0, 2, 5)
    minimum = rng.integers(0, 3, 5)
    total = int(minimum.sum() + rng.integers(0, 12))
    got = largest_remainder(shares, total, minimum=minimum)
    assert got.sum() == total and np.all(got >= minimum)
    # independent: fix, one at a time, the entries a plain apportionment of
    # the others leaves below their minimum, until none is
    fixed = set()
    while True:
        free = [i for i in range(5) if i not in fixed]
        left = total - sum(int(minimum[i]) for i in fixed)
        fr = [Fraction(float(shares[i])) for i in free]
        if sum(fr) == 0:
            fr = [Fraction(1)] * len(free)
        quotas = [q * left / sum(fr) for q in fr]
        alloc = [int(q) for q in quotas]
        rem = sorted(range(len(free)), key=lambda j: (-(quotas[j] - alloc[j]), j))
        for j in rem[:left - sum(alloc)]:
            alloc[j] += 1
        want = [int(minimum[i]) for i in range(5)]
        for j, i in enumerate(free):
            want[i] = alloc[j]
        below = [i for j, i in enumerate(free) if alloc[j] < minimum[i]]
        if not below:
            break
        fixed.update(below)
    assert got.tolist() == want


def test_largest_remainder_minimum_errors_and_plain_case():
    assert largest_remainder([1.0, 1.43, 1.77, 3.8], 8).tolist() == [1, 1, 2, 4]
    assert largest_remainder([1.0, 1.43, 1.77, 3.8], 8, minimum=[1, 1, 1, 1]).tolist() == \
        [1, 1, 2, 4]
    assert largest_remainder([0.0, 0.0, 5.0], 4, minimum=[1, 1, 0]).tolist() == [1, 1, 2]
    with pytest.raises(ValueError, match='cannot be met'):
        largest_remainder([1, 1], 2, minimum=[2, 1])


def test_sampler_uses_the_planners_largest_remainder():
    from mmgem.datasets.samplers import uodb_sampler
    from mmgem.planner import rounding
    assert uodb_sampler.largest_remainder is rounding.largest_remainder
    assert not hasattr(uodb_sampler, '_hamilton')
