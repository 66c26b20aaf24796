# Copyright (c) mmgem contributors. All rights reserved.
"""Means over training seeds with Student-t confidence intervals.

The benchmarks in ``tools/benchmark/`` train every method with the same
seeds and report, per number, the mean over seeds with a t-interval, and
per comparison the paired difference (method A minus method B on the same
seed) with a paired t-interval and its paired t-test p-value; the
comparisons of one table column are one family, corrected for multiplicity
with Holm's step-down procedure (:func:`holm_adjust`). numpy and scipy only.
"""
from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np
from scipy import stats


class Interval(NamedTuple):
    """A mean over ``n`` values with the half-width of its interval.

    Attributes:
        mean (float): The mean (nan when ``n == 0``).
        half_width (float): Half-width of the two-sided t-interval; nan when
            ``n < 2`` (no interval from one value).
        n (int): Number of values.
        sd (float): Sample standard deviation (ddof 1); nan when ``n < 2``.
    """
    mean: float
    half_width: float
    n: int
    sd: float

    @property
    def low(self) -> float:
        """float: Lower end of the interval."""
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        """float: Upper end of the interval."""
        return self.mean + self.half_width

    def excludes_zero(self) -> bool:
        """bool: Whether the interval lies strictly on one side of 0."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    @property
    def p_value(self) -> float:
        """float: Two-sided p-value of the t-test of mean 0 (paired t-test
        for a :func:`paired_difference`); nan when ``n < 2``.

        ``2 * P(T_{n-1} >= |mean| / (sd / sqrt(n)))``; with ``sd == 0`` it
        is 0 for a non-zero mean and 1 for a zero one.
        """
        if self.n < 2:
            return float('nan')
        if self.sd == 0:
            return 0.0 if self.mean != 0 else 1.0
        t = abs(self.mean) / (self.sd / np.sqrt(self.n))
        return float(2 * stats.t.sf(t, self.n - 1))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and two-sided Student-t confidence interval.

    ``mean +- t_{(1 + confidence) / 2, n - 1} * sd / sqrt(n)``.

    Args:
        values (Sequence[float]): The values (one per seed); nan is an error.
        confidence (float): Confidence level in (0, 1). Defaults to 0.95.

    Returns:
        Interval: The mean, half-width, n and sd.
    """
    if not 0 < confidence < 1:
        raise ValueError(f'confidence must be in (0, 1), got {confidence}')
    x = np.asarray(list(values), dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError(f'values contain nan: {x.tolist()}')
    n = int(x.size)
    if n == 0:
        return Interval(float('nan'), float('nan'), 0, float('nan'))
    if n == 1:
        return Interval(float(x[0]), float('nan'), 1, float('nan'))
    sd = float(x.std(ddof=1))
    t = float(stats.t.ppf((1 + confidence) / 2, n - 1))
    return Interval(float(x.mean()), t * sd / np.sqrt(n), n, sd)


def paired_difference(a: Mapping, b: Mapping, confidence: float = 0.95) -> Interval:
    """Paired difference ``a - b`` over the keys (seeds) both have.

    Args:
        a (Mapping): Seed -> value of method A.
        b (Mapping): Seed -> value of method B.
        confidence (float): Confidence level. Defaults to 0.95.

    Returns:
        Interval: The t-interval of ``a[s] - b[s]`` over the common seeds
        (in sorted seed order).
    """
    common = sorted(set(a) & set(b))
    return t_interval([a[s] - b[s] for s in common], confidence)


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values of one family of comparisons.

    With the ``m`` finite p-values sorted ascending, ``p_(1) <= ... <=
    p_(m)``, the adjusted value of ``p_(i)`` is
    ``min(1, max_{j <= i} (m - j + 1) * p_(j))`` (Holm 1979; the step-down
    form of statsmodels' ``multipletests(method='holm')``). A comparison is
    rejected at level ``alpha`` when its adjusted p-value is ``<= alpha``,
    which controls the family-wise error rate at ``alpha``.

    Args:
        p_values (Sequence[float]): The family's p-values, in any order;
            nan (no test, e.g. one seed) is left out of the family.

    Returns:
        np.ndarray: The adjusted p-values in the input order (nan where the
        input was nan).
    """
    p = np.asarray(list(p_values), dtype=np.float64)
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f'p-values must lie in [0, 1], got {p.tolist()}')
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    order = tested[np.argsort(p[tested], kind='stable')]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


def holm_reject(p_values: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """Which comparisons of a family survive Holm's correction at ``alpha``.

    Args:
        p_values (Sequence[float]): The family's p-values (nan: not tested,
            never rejected).
        alpha (float): The family-wise error rate. Defaults to 0.05.

    Returns:
        np.ndarray: Booleans in the input order.
    """
    adjusted = holm_adjust(p_values)
    return ~np.isnan(adjusted) & (adjusted <= alpha)


def format_interval(iv: Interval, scale: float = 100.0, digits: int = 1,
                    signed: bool = False, show_n: bool = False) -> str:
    """Render an interval as ``mean ± half-width``.

    Args:
        iv (Interval): The interval.
        scale (float): Multiply by this (AP in [0, 1] -> points). Defaults
            to 100.
        digits (int): Decimals. Defaults to 1.
        signed (bool): Always print the sign of the mean (differences).
        show_n (bool): Append `` (n=…)``.

    Returns:
        str: e.g. ``'27.4 ± 1.2'``, ``'27.4'`` for one value, ``'–'`` for
        none.
    """
    if iv.n == 0:
        return '–'
    sign = '+' if signed else ''
    text = f'{iv.mean * scale:{sign}.{digits}f}'
    if iv.n >= 2:
        text += f' ± {iv.half_width * scale:.{digits}f}'
    if show_n:
        text += f' (n={iv.n})'
    return text


def mean_or_none(values: Sequence[float]) -> Optional[float]:
    """float: The mean of ``values``, None when empty."""
    values = list(values)
    return float(np.mean(values)) if values else None


__all__ = ['Interval', 't_interval', 'paired_difference', 'holm_adjust', 'holm_reject',
           'format_interval', 'mean_or_none']
