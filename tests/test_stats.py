"""The order-statistic interval covers the true quantile as often as it promises, and agrees with the
median interval the records already use."""

import math

import numpy as np

from bench.core.measure import median_ci95
from bench.core.stats import binomial_cdf, percentile_ci


def test_binomial_cdf_matches_the_exact_sum():
    n, p = 30, 0.1
    exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(4))
    assert math.isclose(binomial_cdf(3, n, p), exact, rel_tol=1e-12)
    assert binomial_cdf(-1, n, p) == 0.0 and binomial_cdf(n, n, p) == 1.0


def test_p99_with_zero_misses_needs_459_requests():
    # MLPerf early stopping's k = 0 case: 0.99^n <= 0.01
    assert binomial_cdf(0, 459, 0.01) <= 0.01 < binomial_cdf(0, 458, 0.01)


def test_the_interval_covers_the_true_p90_at_least_as_often_as_promised():
    rng = np.random.default_rng(1)
    truth = math.log(10)  # the 0.9 quantile of Exp(1)
    hits = 0
    for _ in range(400):
        low, high = percentile_ci(sorted(rng.exponential(size=200)), 0.9, 0.95)
        hits += low <= truth <= high
    assert hits / 400 >= 0.93


def test_too_few_samples_give_no_interval_and_the_median_agrees():
    samples = sorted(np.random.default_rng(0).exponential(size=1000))
    assert percentile_ci(samples[:26], 0.99) is None
    assert percentile_ci(samples, 0.5) == tuple(median_ci95(samples)[:2])


def test_queries_needed_is_the_smallest_passing_count():
    from bench.core.stats import early_stopping_met, queries_needed

    assert (queries_needed(0, 0.99, 0.99), queries_needed(0, 0.9, 0.99)) == (459, 44)
    assert (queries_needed(1, 0.99, 0.99), queries_needed(1, 0.9, 0.99)) == (662, 64)  # MLPerf's 64 (p90)
    for k in (0, 1, 5, 30):
        for p in (0.5, 0.9, 0.99):
            n = queries_needed(k, p, 0.99)
            assert early_stopping_met(n, k, p, 0.99) and not early_stopping_met(n - 1, k, p, 0.99)
            assert binomial_cdf(k, n, 1 - p) <= 0.01 < binomial_cdf(k, n - 1, 1 - p)


def test_the_early_stopping_estimate_follows_loadgens_search():
    """LoadGen (results.cc): t = 1 must pass (n >= h(1) + 1), then t grows while n >= h(t) + t; the
    estimate is the t-th largest latency. Done here the slow way, one t at a time."""
    from bench.core.stats import early_stopping_estimate, queries_needed

    rng = np.random.default_rng(5)
    for n, p in ((100, 0.9), (700, 0.99), (3000, 0.99), (63, 0.9), (64, 0.9)):
        samples = sorted(rng.exponential(size=n))
        if n < queries_needed(1, p, 0.99):
            assert early_stopping_estimate(samples, p, 0.99) is None
            continue
        t = 1
        while n >= queries_needed(t + 1, p, 0.99):
            t += 1
        assert early_stopping_estimate(samples, p, 0.99) == samples[n - t] >= np.percentile(samples, p * 100)
