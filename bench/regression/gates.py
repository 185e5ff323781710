"""The gate metrics: how each is compared (ratio or delta, direction, unit, where a record stores it), the
``--fail-on`` thresholds, and the verdict of a value or interval against one. Its own module because
``compare`` and ``bench.regression.history`` both judge by these, and neither owns them."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from bench.core.errors import UsageError


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is compared: ratio or delta, which direction is good, the default threshold, and
    the statistic of the request-latency samples its value is (``bench.regression.history`` judges by these too)."""

    name: str
    kind: str  # "ratio" (current / baseline) or "delta" (current - baseline, in points)
    higher_is_better: bool | None  # None: a metric whose direction is not known (never judged)
    default: float
    unit: str
    # the quantile of the latency samples the value is (throughput: images at the median latency);
    # None: not a statistic of the samples (memory, accuracy)
    quantile: float | None = None
    # where a record stores its single value: the attribute path of the figure, e.g. "latency_ms.p50", read
    # with ``bench.results.figure(record, spec.stored)`` (many records: ``bench.results.columns``). The one map
    # of gate metric to record figure: compare (``values.stored_value``) and bench.regression.history's checks
    # take it from here. A gate metric on a stored figure is one MetricSpec with ``stored``: compared,
    # thresholded and judged in history as a single value per run. None: read otherwise (peak memory, accuracy)
    stored: str | None = None

    @property
    def se_factor(self) -> float | None:
        """Standard error of the quantile of a normal sample in units of s/sqrt(n): sqrt(q (1 - q)) / phi(z_q)
        (sqrt(pi/2) = 1.2533 for the median, 1.7094 for p90); None where the value is not a quantile."""
        if self.quantile is None:
            return None
        normal = statistics.NormalDist()
        q = self.quantile
        return math.sqrt(q * (1 - q)) / normal.pdf(normal.inv_cdf(q))


# Defaults, and why (simulated with lognormal noise, 3% stalls; the table is in docs/regression.md):
# - latency_p50 10%: on a shared 2-core CPU an A/A median drifts by up to ~5-8% between runs; with a
#   10% margin an 8% drift fails <= 4% of the time (none at 0%), while a 25% slowdown is flagged in
#   98% of runs with 32 samples per cell at CV 10% (100% with 48; 89% with 16).
# - latency_p90 15%: a tail quantile moves with a neighbour's load far more than the median does and
#   needs ~4x the samples for the same interval width; it is a tail gate, the median is the speed gate.
# - throughput 10%: the same statistic as p50 seen from the other side, so the same margin.
# - peak_memory 10%: one reading per run; allocator and page-cache effects move RSS by a few percent.
# - accuracy -1.0 point: greedy decoding is deterministic on one machine, but a new library or kernel
#   may flip a few tokens; on a 16-image smoke set one changed caption moves CIDEr by ~0.5 point.
METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("latency_p50", "ratio", False, 0.10, "ms", quantile=0.5, stored="latency_ms.p50"),
        MetricSpec("latency_p90", "ratio", False, 0.15, "ms", quantile=0.9, stored="latency_ms.p90"),
        MetricSpec("throughput", "ratio", True, 0.10, "img/s", quantile=0.5, stored="throughput.images_per_s"),
        MetricSpec("peak_memory", "ratio", False, 0.10, "bytes"),
        MetricSpec("accuracy", "delta", True, -1.0, "pt"),
    )
}
ALIASES: dict[str, tuple[str, ...]] = {"latency": ("latency_p50", "latency_p90")}
DEFAULT_THRESHOLDS: dict[str, float] = {name: spec.default for name, spec in METRICS.items()}
ACCEPTED_NAMES = (*METRICS, *ALIASES, "accuracy.<name>")


def metric_spec(metric: str) -> MetricSpec:
    """The spec of a row's metric. ``accuracy.<name>`` takes the ``accuracy`` gate's kind and default
    threshold, and its direction and unit from the metric registry (``bench.accuracy.metrics.METRICS``); a name
    the registry does not define has no direction (``higher_is_better`` None) and gets no verdict."""
    head, _, name = metric.partition(".")
    spec = METRICS[head]
    if not name:
        return spec
    from bench.accuracy.metrics import metric_info

    info = metric_info(name)
    if info is None:
        return MetricSpec(metric, spec.kind, None, spec.default, "pt")
    return MetricSpec(metric, spec.kind, info.higher_is_better, spec.default, info.unit or "pt")


def _canonical(key: str, item: str) -> tuple[str, ...]:
    """The metric names a threshold key sets; UsageError for anything else."""
    key = key.strip()
    if key in ALIASES:
        return ALIASES[key]
    if key in METRICS:
        return (key,)
    if key.startswith("accuracy.") and len(key) > len("accuracy."):
        from bench.accuracy.metrics import METRICS as KNOWN

        if key.split(".", 1)[1] not in KNOWN:
            raise UsageError(f"unknown accuracy metric in --fail-on item {item!r}; accepted: "
                             f"{', '.join('accuracy.' + name for name in KNOWN)}")
        return (key,)
    raise UsageError(f"unknown metric in --fail-on item {item!r}; accepted: {', '.join(ACCEPTED_NAMES)}")


def _threshold_value(metric: str, text: str, item: str) -> float:
    """'5%' or '0.05' for ratio metrics, '-0.5' points for accuracy, 'off' to never fail on it."""
    spec = metric_spec(metric)
    text = text.strip().lower()
    accepted = (
        "accepted: a percentage such as 5% (ratio metrics), a drop in points such as -0.5 (accuracy), or off"
    )
    if text == "off":
        return -math.inf if spec.kind == "delta" else math.inf
    percent = text.endswith("%")
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise UsageError(f"bad threshold in --fail-on item {item!r}; {accepted}") from None
    if not math.isfinite(value):
        raise UsageError(f"bad threshold in --fail-on item {item!r}; {accepted}")
    if spec.kind == "delta":
        if percent or value > 0:
            raise UsageError(
                f"bad threshold in --fail-on item {item!r}: accuracy takes a drop in points (<= 0, no %), "
                "such as accuracy=-0.5"
            )
        return value
    if value < 0:
        raise UsageError(f"bad threshold in --fail-on item {item!r}: must be >= 0; {accepted}")
    if not percent and value >= 1:
        raise UsageError(
            f"ambiguous threshold in --fail-on item {item!r}: write {value:g}% for a percentage "
            f"(a bare number is a fraction below 1, such as 0.05)"
        )
    fraction = value / 100 if percent else value
    if spec.higher_is_better and fraction >= 1:  # a drop of 100% or more is impossible: a gate that never fails
        raise UsageError(f"bad threshold in --fail-on item {item!r}: {metric} can never drop by {fraction:.0%} or "
                         f"more, so this gate could never fail; accepted: below 100%, or off")
    return fraction


def parse_fail_on(spec: str) -> dict[str, float]:
    """Parse ``--fail-on`` such as "latency_p50=5%,accuracy=-0.5" into {"latency_p50": 0.05, ...}.

    Ratio metrics take a percentage (or a fraction below 1); accuracy takes a (negative) drop in points;
    ``off`` removes a metric from the gate; ``latency`` sets both p50 and p90; ``accuracy.<name>`` sets
    one accuracy metric. Metrics not named keep ``DEFAULT_THRESHOLDS``.
    """
    out: dict[str, float] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        key, sep, text = item.partition("=")
        if not sep:
            raise UsageError(
                f"bad --fail-on item {item!r}: expected METRIC=VALUE; accepted metrics: {', '.join(ACCEPTED_NAMES)}"
            )
        for metric in _canonical(key, item):
            out[metric] = _threshold_value(metric, text, item)
    return out


def resolve_thresholds(thresholds: dict[str, float] | None) -> dict[str, float]:
    resolved = dict(DEFAULT_THRESHOLDS)
    for key, value in (thresholds or {}).items():
        for metric in _canonical(key, f"{key}={value}"):
            resolved[metric] = float(value)
    return resolved


def threshold_for(metric: str, thresholds: dict[str, float]) -> float:
    head = metric.split(".", 1)[0]
    return thresholds.get(metric, thresholds.get(head, METRICS[head].default))


def classify(spec: MetricSpec, value: float, low: float | None, high: float | None, threshold: float) -> str:
    """Verdict from the interval (or the single value) against the threshold, in the metric's direction:
    "inconclusive" when the interval is neither wholly beyond the threshold nor wholly within it (a single
    value is never inconclusive; an ``off`` threshold, infinite, never is either)."""
    interval = low is not None and high is not None
    low = value if low is None else low
    high = value if high is None else high
    if spec.higher_is_better is None:
        return "not-comparable"
    if spec.kind == "delta" and spec.higher_is_better:  # threshold <= 0 points; a drop beyond it regresses
        worse, better = high < threshold, low > -threshold
    elif spec.kind == "delta":  # an error rate: a rise beyond -threshold points regresses
        worse, better = low > -threshold, high < threshold
    elif spec.higher_is_better:
        worse, better = high < 1 - threshold, low > 1 + threshold
    else:
        worse, better = low > 1 + threshold, high < 1 - threshold
    if worse or better:
        return "regressed" if worse else "improved"
    within = (threshold, -threshold) if spec.kind == "delta" else (1 - threshold, 1 + threshold)
    return "inconclusive" if interval and (low < within[0] or high > within[1]) else "unchanged"
