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
