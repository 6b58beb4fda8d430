"""Statistics over seeds: mean, sample standard deviation, the 95 % Student-t interval of the mean,
and Welch's t-test between two sets of seeds.

The t quantiles and the test come from scipy.stats (a well-kept library, instead of hand-written
tables). scipy (and numpy under it) is imported inside the functions that need it, so that
cifarlab.report.tables and cifarlab.report.page stay importable without numpy (the status command reads them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
# Below this p-value the report says the seeds support a difference (two-sided Welch test).
ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    """Values of one quantity over n seeds (accuracies in %: the unit of the values).

    sd: the sample standard deviation (n - 1 in the denominator), None for n < 2.
    low, high: the 95 % Student-t interval of the mean (t(0.975, n - 1) * sd / sqrt(n) either
    side), None for n < 2 (one seed has no interval).
    """

    n: int
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None

    def position(self, value: float) -> str | None:
        """Where `value` lies against the interval: 'inside', 'above' or 'below' (None: no interval)."""
        if self.low is None or self.high is None:
            return None
        if value > self.high:
            return "above"
        if value < self.low:
            return "below"
        return "inside"


def t_quantile(probability: float, dof: int) -> float:
    """Student t's quantile, e.g. t_quantile(0.975, 2) = 4.303."""
    from scipy import stats

    return float(stats.t.ppf(probability, dof))


def summarise(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, sample sd and the `confidence` Student-t interval of `values` (one value per seed)."""
    n = len(values)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, None, None, None)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) between two sets of seeds.

    None when either set has fewer than 2 values, or neither varies (the test is undefined).
    """
    if len(a) < 2 or len(b) < 2:
        return None
    if summarise(a).sd == 0 and summarise(b).sd == 0:
        return None
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


# --- many comparisons, and what the seeds could detect ---------------------------------------------

# The power the detectable difference and the seeds needed are stated at (the usual 80 %).
POWER = 0.8
# The adjustment for the several pairs tested within one sweep: Benjamini-Hochberg (false
# discovery rate), scipy.stats.false_discovery_control. Chosen over Holm (family-wise error) because
# a sweep's pairs are exploratory: the report says which differences to believe, and BH keeps the
# expected share of false ones among those it calls supported at ALPHA while losing less power
# than Holm with 3 seeds; scipy has it, so no new dependency.
ADJUSTMENT = "Benjamini-Hochberg"
# Beyond this many seeds per variant the report says "more than" instead of a number.
MAX_SEEDS = 1000


def adjust_p(p_values: Sequence[float]) -> list[float]:
    """The Benjamini-Hochberg adjusted p-values of one family of tests (same order as given)."""
    if not p_values:
        return []
    from scipy import stats

    return [float(p) for p in stats.false_discovery_control(list(p_values), method="bh")]


def _welch_se_dof(sd_a: float, n_a: int, sd_b: float, n_b: int) -> tuple[float, float]:
    """The standard error of a difference of two means and Welch-Satterthwaite's degrees of freedom."""
    va, vb = sd_a**2 / n_a, sd_b**2 / n_b
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    return se, dof


def welch_power(
    difference: float, sd_a: float, n_a: int, sd_b: float, n_b: int, alpha: float = ALPHA
) -> float:
    """The power of the two-sided Welch test at `alpha` to find a true `difference` (in the values'
    unit) between two sets of n_a and n_b seeds with these standard deviations: the probability
    that |T| exceeds t(1 - alpha/2, dof) when T follows the noncentral t (scipy.stats.nct) with
    noncentrality difference / se and Welch-Satterthwaite's dof of the true sds.

    This is exact for Student's t-test (equal sds and n: dof 2n - 2). Welch's test estimates its dof
    from the seeds, and with very few seeds has less power than this: at 3 seeds a side, about 0.69
    where this says 0.8 (tests/test_stats.py simulates it). So the detectable difference of 3 seeds
    is a lower bound: the report says "about", and more seeds close the gap (0.79 at 10)."""
    from scipy import stats

    se, dof = _welch_se_dof(sd_a, n_a, sd_b, n_b)
    critical = stats.t.ppf(1 - alpha / 2, dof)
    shift = abs(difference) / se
    upper = float(stats.nct.sf(critical, dof, shift))
    # scipy's nct gives nan far in its tail (the wrong side, at a shift of ~10 standard errors): 0
    lower = float(stats.nct.cdf(-critical, dof, shift))
    return upper + (lower if math.isfinite(lower) else 0.0)


def detectable_difference(
    sd_a: float | None, n_a: int, sd_b: float | None, n_b: int, power: float = POWER, alpha: float = ALPHA
) -> float | None:
    """The smallest true difference (values' unit, e.g. points of accuracy) that Welch's test on
    n_a and n_b seeds with the observed sds finds with probability `power` at two-sided `alpha`.
    Solved on scipy.stats.nct (welch_power) with scipy.optimize.brentq. None when a side has fewer
    than 2 seeds or neither varies (no test to power)."""
    if n_a < 2 or n_b < 2 or sd_a is None or sd_b is None or (sd_a == 0 and sd_b == 0):
        return None
    from scipy import optimize

    se, _ = _welch_se_dof(sd_a, n_a, sd_b, n_b)
    high = se
    while welch_power(high, sd_a, n_a, sd_b, n_b, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda d: welch_power(d, sd_a, n_a, sd_b, n_b, alpha) - power, 0.0, high))


def seeds_needed(
    difference: float | None,
    sd_a: float | None,
    sd_b: float | None,
    power: float = POWER,
    alpha: float = ALPHA,
) -> int | None:
    """About how many seeds per variant (the same n on both sides) Welch's test needs to find a true
    difference of `difference` with `power` at two-sided `alpha`, if the sds are the observed ones.
    None without a difference or spread; MAX_SEEDS + 1 when even MAX_SEEDS would not do."""
    if difference is None or sd_a is None or sd_b is None or (sd_a == 0 and sd_b == 0) or difference == 0:
        return None
    low, high = 2, MAX_SEEDS + 1
    if welch_power(difference, sd_a, MAX_SEEDS, sd_b, MAX_SEEDS, alpha) < power:
        return MAX_SEEDS + 1
    while low < high:  # the power grows with n: the smallest n that reaches it
        mid = (low + high) // 2
        if welch_power(difference, sd_a, mid, sd_b, mid, alpha) >= power:
            high = mid
        else:
            low = mid + 1
    return low
