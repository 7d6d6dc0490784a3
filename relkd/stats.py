"""The statistics relkd's verdicts rest on: means over seeds and the tests between them.

Welch's t-test compares two compositions trained with their own seeds (unpaired); the
paired t-test compares two runs that share each seed (an ablation: the same seed's data
order and initialisation with and without a part). Every function returns ``None`` where
the quantity is undefined (fewer than two values, or no variance), never a made-up number.
"""
from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Sequence

__all__ = ["mean_sd", "welch_p", "welch_difference", "welch_interval", "Paired", "paired_difference"]


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation over seeds: ``(None, None)`` without values, a
    spread of 0 for one value (how every table of relkd shows a single seed)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test, or ``None`` when undefined (fewer than two
    values on a side, or no variance on either)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return None
    from scipy import stats

    with warnings.catch_warnings():  # nearly equal samples: scipy warns about precision, p is still defined
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def welch_difference(b: Sequence[float], a: Sequence[float]) -> tuple[float, float | None, float | None]:
    """``mean(b) - mean(a)``, its standard error (Welch: sqrt(var_a / n_a + var_b / n_b)) and
    Welch's p-value; the last two ``None`` where undefined."""
    difference = statistics.fmean(b) - statistics.fmean(a)
    se = (math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
          if len(a) > 1 and len(b) > 1 else None)
    return difference, se, welch_p(b, a)


def welch_interval(b: Sequence[float], a: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The ``level`` confidence interval of ``mean(b) - mean(a)`` (Welch, with the
    Welch-Satterthwaite degrees of freedom), or ``None`` where undefined."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return None
    from scipy import stats

    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(va + vb)
    difference = statistics.fmean(b) - statistics.fmean(a)
    return difference - half, difference + half


@dataclass(frozen=True)
class Paired:
    """A paired difference over seeds: its mean, a 95% confidence interval (Student's t with
    n - 1 degrees of freedom) and the paired t-test's two-sided p-value."""

    n: int
    mean: float
    low: float | None
    high: float | None
    p: float | None


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Paired:
    """``a[i] - b[i]`` over the pairs (the same seed): mean, 95% CI and paired t-test p."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired values: expected two equally long, non-empty lists, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(d)
    if len(d) < 2:
        return Paired(len(d), mean, None, None, None)
    sd = statistics.stdev(d)
    if sd == 0:
        return Paired(len(d), mean, mean, mean, None)
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(d) - 1)) * sd / math.sqrt(len(d))
    p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(len(d))), len(d) - 1))
    return Paired(len(d), mean, mean - half, mean + half, p)
