# Copyright (c) mmgem contributors. All rights reserved.
"""Means over seeds with t-intervals, against scipy's own interval."""
import math

import numpy as np
import pytest
from scipy import stats

from tools.benchmark.seed_statistics import (
    format_interval,
    paired_difference,
    t_interval,
)


@pytest.mark.parametrize('values', [[0.31, 0.27, 0.35], [0.1, 0.2], [0.5, 0.52, 0.49, 0.6, 0.41]])
def test_t_interval_matches_scipy(values):
    iv = t_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                 scale=stats.sem(values))
    assert iv.n == len(values)
    assert iv.low == pytest.approx(low) and iv.high == pytest.approx(high)
    assert iv.sd == pytest.approx(np.std(values, ddof=1))
    wide = t_interval(values, confidence=0.99)
    assert wide.half_width > iv.half_width


def test_one_or_no_value_has_no_interval():
    one = t_interval([0.25])
    assert one.mean == 0.25 and math.isnan(one.half_width) and not one.excludes_zero()
    assert format_interval(one) == '25.0'
    assert t_interval([]).n == 0 and format_interval(t_interval([])) == '–'
    with pytest.raises(ValueError, match='nan'):
        t_interval([0.1, float('nan')])
    with pytest.raises(ValueError, match='confidence'):
        t_interval([0.1, 0.2], confidence=1.0)


def test_paired_difference_pairs_by_seed():
    a = {0: 0.30, 1: 0.40, 2: 0.20, 3: 0.9}
    b = {2: 0.18, 0: 0.25, 1: 0.20}  # seed 3 has no partner; ranks differ from a's
    iv = paired_difference(a, b)
    d = [0.30 - 0.25, 0.40 - 0.20, 0.20 - 0.18]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(d), scale=stats.sem(d))
    assert iv.n == 3 and iv.low == pytest.approx(low) and iv.high == pytest.approx(high)
    assert iv.sd == pytest.approx(np.std(d, ddof=1))
    close = paired_difference({0: 0.30, 1: 0.40, 2: 0.20}, {0: 0.27, 1: 0.36, 2: 0.16})
    assert close.excludes_zero() and not iv.excludes_zero()
    assert format_interval(close, signed=True, show_n=True) == \
        f'+{100 * close.mean:.1f} ± {100 * close.half_width:.1f} (n=3)'
