"""relkd.stats: means over seeds and the Welch and paired tests, None where undefined."""
import math
import statistics

import pytest

from relkd.stats import mean_sd, paired_difference, welch_difference, welch_interval, welch_p


def test_mean_sd_of_none_one_and_several_values():
    assert mean_sd([]) == (None, None)
    assert mean_sd([0.7]) == (0.7, 0.0)
    mean, sd = mean_sd([1.0, 2.0, 3.0])
    assert mean == 2.0 and sd == pytest.approx(1.0)  # the sample (n - 1) standard deviation


def test_welch_is_undefined_without_two_values_or_any_variance():
    assert welch_p([1.0], [1.0, 2.0]) is None
    assert welch_p([1.0, 1.0], [2.0, 2.0]) is None
    assert welch_interval([1.0, 1.0], [2.0, 2.0]) is None
    assert welch_difference([2.0], [1.0]) == (1.0, None, None)


def test_welch_difference_and_interval_agree():
    a, b = [0.50, 0.52, 0.51, 0.49], [0.60, 0.63, 0.61, 0.62]
    difference, se, p = welch_difference(b, a)
    assert difference == pytest.approx(statistics.fmean(b) - statistics.fmean(a))
    assert se == pytest.approx(math.sqrt(statistics.variance(a) / 4 + statistics.variance(b) / 4))
    assert 0 < p < 0.001  # clearly separated samples
    low, high = welch_interval(b, a)
    assert low < difference < high and low > 0
    assert welch_p(a, a[::-1]) == pytest.approx(1.0)  # the same values: no evidence of a difference


def test_paired_difference_pairs_by_position():
    paired = paired_difference([0.6, 0.7, 0.8], [0.5, 0.6, 0.75])
    assert paired.n == 3 and paired.mean == pytest.approx((0.1 + 0.1 + 0.05) / 3)
    assert paired.low < paired.mean < paired.high and 0 < paired.p < 1
    same = paired_difference([0.6, 0.7], [0.5, 0.6])  # a constant difference: no spread, no test
    assert (same.low, same.high, same.p) == (pytest.approx(0.1), pytest.approx(0.1), None)
    assert paired_difference([0.6], [0.5]).p is None
    with pytest.raises(ValueError, match="got 2 and 1"):
        paired_difference([0.1, 0.2], [0.1])
