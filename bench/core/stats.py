"""Distribution-free statistics of latency samples: a percentile's confidence interval from order
statistics, and the binomial tail that MLPerf's early stopping rests on.

Both need no assumption about the latency distribution (which is skewed and often bimodal): the
number of samples below the true q-quantile is Binomial(n, q), whatever the distribution.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space so that n in the tens of thousands is exact
    enough and never overflows; the shorter tail is summed (1 - the upper tail above the mean), so a
    call costs at most min(k, n - k) terms."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    if k > n * p:
        return max(0.0, 1.0 - _binomial_sum(k + 1, n, n, p))
    return min(1.0, _binomial_sum(0, k, n, p))


def _binomial_sum(lo: int, hi: int, n: int, p: float) -> float:
    """P(lo <= X <= hi) for X ~ Binomial(n, p), in log space."""
    log_p, log_q = math.log(p), math.log1p(-p)
    lgn = math.lgamma(n + 1)
    terms = [lgn - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(lo, hi + 1)]
    top = max(terms)
    return math.exp(top) * sum(math.exp(t - top) for t in terms)


def _first(lo: int, hi: int, passes: Callable[[int], bool]) -> int:
    """The smallest i in [lo, hi) with ``passes(i)`` for a predicate false then true; ``hi`` when none."""
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(mid) else (mid + 1, hi)
    return lo


def percentile_ci(sorted_samples: Sequence[float], q: float, confidence: float = 0.95) -> tuple[float, float] | None:
    """A two-sided ``confidence`` interval of the q-quantile from order statistics, or None when the
    samples are too few for it (then even [min, max] covers less than ``confidence``).

    With B ~ Binomial(n, q) the count of samples below the quantile, [x_(l), x_(u)] (1-based) covers it
    with probability P(l <= B < u); each tail is kept within (1 - confidence) / 2.
    """
    ranks = _ci_ranks(len(sorted_samples), q, confidence)
    return (float(sorted_samples[ranks[0] - 1]), float(sorted_samples[ranks[1] - 1])) if ranks else None


@functools.lru_cache(maxsize=4096)
def _ci_ranks(n: int, q: float, confidence: float) -> tuple[int, int] | None:
    """The 1-based ranks (l, u) of ``percentile_ci``'s bounds for n samples: they depend on n, q and the
    confidence only, so a report of 43,000 cells with a few sample counts computes them a few times."""
    if n == 0 or not 0.0 < q < 1.0 or not 0.0 < confidence < 1.0:
        return None
    alpha = (1.0 - confidence) / 2.0
    # x_(j) < quantile exactly when B >= j. Lower bound x_(l): it fails when B <= l - 1; take the largest l
    # with P(B <= l - 1) <= alpha. Upper bound x_(u): it fails when B >= u; take the smallest u with
    # P(B >= u) <= alpha. P(B <= j) rises with j, so both are found by bisection.
    lower = _first(0, n, lambda j: binomial_cdf(j, n, q) > alpha)
    upper = _first(1, n + 1, lambda u: 1.0 - binomial_cdf(u - 1, n, q) <= alpha)
    if lower == 0 or upper > n:
        return None
    return lower, upper


def early_stopping_met(n: int, overlatency: int, percentile: float, confidence: float) -> bool:
    """MLPerf's early stopping: with ``overlatency`` of ``n`` requests over the bound, the true
    ``percentile`` latency is within the bound at ``confidence`` when P(X <= overlatency) <= 1 - confidence,
    X ~ Binomial(n, 1 - percentile) (LoadGen ``loadgen/early_stopping.cc``, ``results.cc``)."""
    return n > overlatency and binomial_cdf(overlatency, n, 1.0 - percentile) <= 1.0 - confidence


def queries_needed(overlatency: int, percentile: float, confidence: float) -> int:
    """The fewest requests with which early stopping passes given ``overlatency`` of them over the bound
    (LoadGen's minimum passing count plus the overlatency ones): 459 for p99 at 99% and none over, 44 for p90.

    P(X <= k) falls as n grows, so the smallest passing n is found by doubling, then bisection."""
    if not (0.0 < percentile < 1.0 and 0.0 < confidence < 1.0) or overlatency < 0:
        raise ValueError(f"percentile and confidence in (0, 1), overlatency >= 0; got {percentile}, {confidence}, "
                         f"{overlatency}")
    lo = overlatency + 1
    if early_stopping_met(lo, overlatency, percentile, confidence):
        return lo
    hi = max(lo + 1, math.ceil(math.log(1.0 - confidence) / math.log(percentile)) + overlatency)
    while not early_stopping_met(hi, overlatency, percentile, confidence):
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # lo fails, hi passes
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if early_stopping_met(mid, overlatency, percentile, confidence) else (mid, hi)
    return hi


def early_stopping_estimate(sorted_samples: Sequence[float], percentile: float, confidence: float) -> float | None:
    """The latency that early stopping guarantees at ``percentile``, as LoadGen reports it ("early stopping
    percentile estimate", ``results.cc``): with t the most requests that could be over a bound while early
    stopping still passes (t >= 1), the t-th largest sample; None when even t = 1 does not pass (too few).

    P(X <= t) rises with t, so t is found by bisection."""
    n = len(sorted_samples)
    if not early_stopping_met(n, 1, percentile, confidence):
        return None
    lo, hi = 1, n  # lo passes; hi (all over) never does
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if early_stopping_met(n, mid, percentile, confidence) else (lo, mid)
    return float(sorted_samples[n - lo])
