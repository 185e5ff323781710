"""The order-statistic interval covers the true quantile as often as it promises, and agrees with the
median interval the records already use."""

import math

import numpy as np

from bench.measure import median_ci95
from bench.stats import binomial_cdf, percentile_ci


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
