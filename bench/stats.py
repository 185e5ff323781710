"""Distribution-free statistics of latency samples: a percentile's confidence interval from order
statistics, and the binomial tail that MLPerf's early stopping rests on.

Both need no assumption about the latency distribution (which is skewed and often bimodal): the
number of samples below the true q-quantile is Binomial(n, q), whatever the distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space so that n in the tens of thousands is exact
    enough and never overflows."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    lgn = math.lgamma(n + 1)
    terms = [lgn - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def percentile_ci(sorted_samples: Sequence[float], q: float, confidence: float = 0.95) -> tuple[float, float] | None:
    """A two-sided ``confidence`` interval of the q-quantile from order statistics, or None when the
    samples are too few for it (then even [min, max] covers less than ``confidence``).

    With B ~ Binomial(n, q) the count of samples below the quantile, [x_(l), x_(u)] (1-based) covers it
    with probability P(l <= B < u); each tail is kept within (1 - confidence) / 2.
    """
    n = len(sorted_samples)
    if n == 0 or not 0.0 < q < 1.0 or not 0.0 < confidence < 1.0:
        return None
    alpha = (1.0 - confidence) / 2.0
    # x_(j) < quantile exactly when B >= j. Lower bound x_(l): it fails when B <= l - 1; take the largest l
    # with P(B <= l - 1) <= alpha. Upper bound x_(u): it fails when B >= u; take the smallest u with
    # P(B >= u) <= alpha.
    lower = 0
    while lower < n and binomial_cdf(lower, n, q) <= alpha:
        lower += 1
    upper = 1
    while upper <= n and 1.0 - binomial_cdf(upper - 1, n, q) > alpha:
        upper += 1
    if lower == 0 or upper > n:
        return None
    return float(sorted_samples[lower - 1]), float(sorted_samples[upper - 1])
