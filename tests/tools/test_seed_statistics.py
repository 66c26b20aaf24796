# Copyright (c) mmgem contributors. All rights reserved.
"""Means over seeds with t-intervals, against scipy's own interval; paired
t p-values against scipy's ``ttest_rel``; Holm's correction against hand-worked
families and the sequential (step-down rejection) form of the procedure."""
import math

import numpy as np
import pytest
from scipy import stats

from tools.benchmark.seed_statistics import (
    format_interval,
    holm_adjust,
    holm_reject,
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


def test_paired_p_value_matches_scipy_ttest_rel():
    a = {0: 0.30, 1: 0.41, 2: 0.22, 3: 0.35}
    b = {0: 0.25, 1: 0.38, 2: 0.21, 3: 0.36}
    iv = paired_difference(a, b)
    ref = stats.ttest_rel([a[s] for s in range(4)], [b[s] for s in range(4)])
    assert iv.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    # the p-value and the interval agree: p < 0.05 exactly when 0 is outside
    for values in ([0.01, 0.02, 0.015], [0.01, -0.02, 0.015], [-0.03, -0.02, -0.031]):
        one = t_interval(values)
        assert one.p_value == pytest.approx(stats.ttest_1samp(values, 0.0).pvalue, rel=1e-9)
        assert (one.p_value < 0.05) == one.excludes_zero()
    assert math.isnan(t_interval([0.1]).p_value)
    assert t_interval([0.1, 0.1]).p_value == 0.0 and t_interval([0.0, 0.0]).p_value == 1.0


def _holm_by_steps(p, alpha):
    """The textbook procedure: walk the sorted p-values, reject p_(i) while
    p_(i) <= alpha / (m - i + 1), stop at the first that is not."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    reject = [False] * len(p)
    for i, idx in enumerate(order):
        if p[idx] > alpha / (len(p) - i):
            break
        reject[idx] = True
    return reject


def test_holm_hand_worked():
    # sorted 0.005, 0.01, 0.03, 0.04: 4 x 0.005 = 0.02, 3 x 0.01 = 0.03,
    # 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06 (monotone step-down)
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_reject([0.01, 0.04, 0.03, 0.005]).tolist() == [True, False, False, True]
    # Holm rejects all three where Bonferroni (3 x p: 0.03, 0.06, 0.09) rejects one
    assert holm_adjust([0.02, 0.01, 0.03]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm_reject([0.02, 0.01, 0.03]).all()
    # ... and none of two where the step-up Hochberg would reject both (0.04 <= 0.05)
    assert holm_adjust([0.03, 0.04]) == pytest.approx([0.06, 0.06])
    assert not holm_reject([0.03, 0.04]).any()
    # capped at 1; nan (one seed, no test) stays out of the family and is never rejected
    # (m = 3: 3 x 0.01 = 0.03, 2 x 0.6 = 1.2 -> 1, max(1, 0.7) = 1)
    adjusted = holm_adjust([0.7, float('nan'), 0.01, 0.6])
    assert math.isnan(adjusted[1])
    assert adjusted[[0, 2, 3]] == pytest.approx([1.0, 0.03, 1.0])
    assert holm_reject([0.7, float('nan'), 0.01, 0.6]).tolist() == [False, False, True, False]
    # the boundary counts as rejected: adjusted p <= alpha (2 x 0.025 = 0.05 exactly)
    assert holm_reject([0.025, 0.5]).tolist() == [True, False]
    assert holm_adjust([]).size == 0
    with pytest.raises(ValueError, match='p-values'):
        holm_adjust([0.1, 1.5])


@pytest.mark.parametrize('seed', range(20))
def test_holm_matches_the_sequential_procedure(seed):
    rng = np.random.default_rng(seed)
    p = (rng.uniform(0, 0.08, size=int(rng.integers(1, 8)))).tolist()
    for alpha in (0.05, 0.1):
        assert holm_reject(p, alpha).tolist() == _holm_by_steps(p, alpha)
    adjusted = holm_adjust(p)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0) and np.all(adjusted >= np.asarray(p))
