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
