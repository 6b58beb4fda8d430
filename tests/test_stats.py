"""Statistics over seeds, with numbers a person can check by hand (cifarlab.analysis.stats)."""

from __future__ import annotations

import math

import pytest

from cifarlab.analysis import stats

# The README's simple CNN at the lab's settings, three seeds (%).
SEEDS = [64.00, 64.43, 65.00]


def test_mean_sd_and_interval_by_hand():
    summary = stats.summarise(SEEDS)
    # mean = 193.43 / 3; squared deviations 0.2272 + 0.0022 + 0.2739 = 0.5033, / 2 -> sd 0.5016
    assert summary.n == 3
    assert summary.mean == pytest.approx(64.47667, abs=1e-5)
    assert summary.sd == pytest.approx(0.50163, abs=1e-5)
    # t(0.975, 2) = 4.303 (any t table); half-width 4.303 * 0.50163 / sqrt(3) = 1.2462
    assert stats.t_quantile(0.975, 2) == pytest.approx(4.303, abs=1e-3)
    half = 4.303 * 0.50163 / math.sqrt(3)
    assert summary.low == pytest.approx(summary.mean - half, abs=1e-3)
    assert summary.high == pytest.approx(summary.mean + half, abs=1e-3)
    assert (round(summary.low, 2), round(summary.high, 2)) == (63.23, 65.72)


def test_where_a_value_lies_against_the_interval():
    summary = stats.summarise(SEEDS)
    assert summary.position(66.71) == "above"  # the lab's simple CNN
    assert summary.position(64.0) == "inside"
    assert summary.position(60.0) == "below"


def test_one_seed_has_no_interval_and_none_has_no_mean():
    one = stats.summarise([70.0])
    assert (one.n, one.mean, one.sd, one.low, one.high) == (1, 70.0, None, None, None)
    assert one.position(70.0) is None
    assert stats.summarise([]) == stats.Summary(0, None, None, None, None)


def test_welch_by_hand():
    # a: mean 2, var 1; b: mean 5, var 1; n = 3 each: t = -3 / sqrt(2/3) = -3.674, dof 4
    # two-sided p from a t table with 4 dof: 0.0213
    p = stats.welch_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert p == pytest.approx(0.0213, abs=5e-4)
    assert stats.welch_p([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)


def test_welch_needs_two_seeds_each_and_some_spread():
    assert stats.welch_p([1.0], [2.0, 3.0]) is None
    assert stats.welch_p([1.0, 1.0], [2.0, 2.0]) is None


# --- many comparisons and power (issue 24) ---------------------------------------------------------


def test_benjamini_hochberg_adjustment_by_hand():
    # sorted p 0.01, 0.04, 0.3 of m = 3: 0.01 * 3 / 1 = 0.03, 0.04 * 3 / 2 = 0.06, 0.3 * 3 / 3 = 0.3
    assert stats.adjust_p([0.04, 0.3, 0.01]) == pytest.approx([0.06, 0.3, 0.03])
    assert stats.adjust_p([]) == []


def test_detectable_difference_of_three_seeds_against_a_simulation():
    # the figure: three seeds a side, sd about 1.2 points: about 3.6-3.7 points
    detectable = stats.detectable_difference(1.2, 3, 1.2, 3)
    assert detectable == pytest.approx(3.685, abs=0.01)
    # the noncentral t's power against simulated seeds (independent of nct): exact for Student's
    # t-test; Welch's, which estimates its dof from 3 seeds, has less (the docstring says so)
    import numpy as np
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.2, size=(20000, 3))
    b = rng.normal(detectable, 1.2, size=(20000, 3))
    student = np.mean(scipy_stats.ttest_ind(a, b, axis=1).pvalue < 0.05)
    welch = np.mean(scipy_stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05)
    assert student == pytest.approx(0.8, abs=0.015)
    assert welch == pytest.approx(0.69, abs=0.02)
    assert stats.detectable_difference(1.2, 1, 1.2, 3) is None
    assert stats.detectable_difference(0.0, 3, 0.0, 3) is None


def test_seeds_needed_is_the_smallest_n_with_80_percent_power():
    n = stats.seeds_needed(1.0, 1.2, 1.2)
    assert n == 24
    assert stats.welch_power(1.0, 1.2, n, 1.2, n) >= 0.8 > stats.welch_power(1.0, 1.2, n - 1, 1.2, n - 1)
    assert stats.seeds_needed(0.001, 1.2, 1.2) == stats.MAX_SEEDS + 1
    assert stats.seeds_needed(None, 1.2, 1.2) is None
