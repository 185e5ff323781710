"""How far a cell's figure can be trusted: the 95% interval of the statistic its scenario is judged on.

A scenario is judged on one statistic (offline: throughput; single-stream: request latency p90; server:
request latency p99), so its stability is judged on that statistic's interval, not on the spread of all
its samples (a coefficient of variation says nothing about how well 5 batches pin a throughput, nor a
queue's p99). Intervals are distribution-free (order statistics, ``bench.core.stats.percentile_ci``): a
percentile's needs at least ``samples_needed(q)`` samples (6 for the median, 36 for p90, 368 for p99);
with fewer the verdict is "not enough samples", never "unstable".

- offline: the median batch time's interval (one ``samples_ms`` per batch), carried over to the measured
  throughput as a ratio (throughput × median / bound);
- single-stream: the p90 of ``samples_ms``;
- server: ``server.percentile_ci_ms`` when the run recorded it, else the p99 of ``samples_ms``.

A figure is *stable* when its interval lies within ``STABLE_HALF_WIDTH`` (10%) of it on both sides.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from bench.core.numbers import finite_number
from bench.core.stats import percentile_ci
from bench.pages.page import format_number
from bench.results import Record, figure, value
from bench.scenarios import traits_of

CONFIDENCE = 0.95
STABLE_HALF_WIDTH = 0.10
ALTERNATIVE_FACTOR = 2.0
"""A "best stable" alternative is offered only when its figure is within this factor of the pick's."""

STABLE = "stable"
UNSTABLE = "unstable"
TOO_FEW = "not enough samples"
NO_SAMPLES = "no samples"


def samples_needed(q: float, confidence: float = CONFIDENCE) -> int:
    """The fewest samples for which a ``confidence`` interval of the q-quantile exists: both the smallest
    and the largest sample must fall outside it with probability ≤ (1 - confidence) / 2."""
    alpha = (1.0 - confidence) / 2.0
    return math.ceil(max(math.log(alpha) / math.log(q), math.log(alpha) / math.log(1.0 - q)) - 1e-9)


@dataclass(frozen=True)
class Interval:
    """A judged figure with its 95% interval (None when the samples are too few) and sample count."""

    statistic: str
    unit: str
    estimate: float | None
    low: float | None
    high: float | None
    n: int
    needed: int
    source: str

    @property
    def verdict(self) -> str:
        if self.n == 0 or self.estimate is None:
            return NO_SAMPLES
        if self.low is None or self.high is None:
            return TOO_FEW
        spread = max(self.high - self.estimate, self.estimate - self.low) / self.estimate
        return STABLE if spread <= STABLE_HALF_WIDTH else UNSTABLE

    @property
    def text(self) -> str:
        """One line for a table cell: the interval and n, or why there is none."""
        if self.verdict == NO_SAMPLES:
            return f"{self.statistic}: no samples recorded"
        if self.verdict == TOO_FEW:
            return (f"{TOO_FEW} for a {self.statistic} interval: n = {self.n}, "
                    f"{self.needed} needed")
        return f"{self.statistic} 95% CI {format_number(self.low)}–{format_number(self.high)} {self.unit} (n = {self.n})"


def _samples(rec: Record) -> list[float]:
    return sorted(v for v in rec.samples_ms if not math.isnan(v))


def recorded_interval(value: Any) -> tuple[float, float] | None:
    """An interval as a record may hold it: [low, high] or {"low", "high"}; None otherwise."""
    if isinstance(value, dict):
        value = [value.get("low"), value.get("high")]
    if isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = (finite_number(v) for v in value)
        if low is not None and high is not None and low <= high:
            return low, high
    return None


def judge(rec: Record) -> Interval | None:
    """The interval of the statistic ``rec``'s scenario is judged on; None for an unknown scenario."""
    traits = traits_of(rec)
    if traits.reads is None:
        return None
    samples = _samples(rec)
    throughput_judged = traits.reads == "throughput"
    quantile = 0.5 if throughput_judged else float(traits.statistic[1:]) / 100.0
    needed = samples_needed(quantile)
    if throughput_judged:
        ips = figure(rec, "throughput.images_per_s")
        ci = percentile_ci(samples, 0.5, CONFIDENCE) if samples else None
        median = statistics.median(samples) if samples else None
        low = high = None
        if ci and ips and median and ci[0] > 0:
            low, high = ips * median / ci[1], ips * median / ci[0]
        return Interval("throughput", "images/s", ips, low, high, len(samples), needed,
                        "the median batch time's interval, as a ratio of the measured throughput")
    statistic = traits.statistic
    estimate = figure(rec, f"latency_ms.{statistic}")
    recorded = recorded_interval(value(rec, "server.percentile_ci_ms")) if traits.percentile_from else None
    if recorded is not None:
        n = len(samples) or int(figure(rec, "server.n_requests") or 0)
        return Interval(statistic, "ms", estimate, *recorded, n, needed, "server.percentile_ci_ms")
    ci = percentile_ci(samples, quantile, CONFIDENCE) if samples else None
    low, high = ci if ci else (None, None)
    return Interval(statistic, "ms", estimate, low, high, len(samples), needed,
                    f"order statistics of samples_ms ({statistic})")


def percentile_figure(sorted_samples: list[float], q: float,
                      confidence: float = CONFIDENCE) -> tuple[float, tuple[float, float] | None]:
    """The q-quantile of the samples (linear interpolation, as ``numpy.percentile`` and the server's own
    ``percentile_ms``) and the 95% interval of that same statistic from the same samples (order statistics;
    None when too few). The interval always contains the estimate (tests/test_answer.py checks it for
    random samples and percentiles)."""
    import numpy as np

    return float(np.percentile(sorted_samples, q * 100)), percentile_ci(sorted_samples, q, confidence)
