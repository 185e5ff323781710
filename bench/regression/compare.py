"""Regression compare of two run directories: matched cells, per-metric ratios with confidence
intervals, a verdict per metric, and an exit code for CI gates.

How a verdict is reached (docs/regression.md has the long form):

- latency p50 / p90: a seeded percentile bootstrap of the ratio current/baseline of the two runs'
  medians (p90s), resampling the raw ``samples_ms`` of each run independently. The verdict is
  "regressed" only when the *whole* confidence interval lies beyond the threshold (``ci_low > 1 + t``)
  and "improved" only when it lies wholly on the good side (``ci_high < 1 - t``); "unchanged" only when it
  lies wholly within ``1 +- t``, and "inconclusive" when it reaches past the threshold without lying
  wholly beyond it (the run cannot rule out a change that size: never folded into "unchanged"). The threshold is an
  equivalence margin, not a significance level: a run-to-run drift smaller than ``t`` (another user's
  job, turbo clocks, page cache) fails the gate at most 5% of the time (a drift just under ``t``), far
  less for smaller drifts, and ever less as samples grow; a shift well beyond ``t`` is flagged once
  there are enough samples for the interval to clear it.
- throughput: images/s at the median latency (``batch size x 1000 / median ms``: in the closed-loop
  scenarios a request waits its whole batch); its interval is the latency interval inverted, so it
  agrees with latency p50 and is robust to single stalls (a mean is not). Server cells' latency
  includes queueing, so their throughput is the recorded achieved rate ("single-value").
- peak memory: one number per run, so a plain ratio against the threshold ("single-value").
- accuracy: the difference current - baseline in the metric's own points (the 0-100 scale of the
  model card), against a negative threshold such as -1.0 ("single-value", kind "delta").

Two runs with no cell in common are not compared at all (``Comparison.nothing_comparable`` says which
axes and environment facts differ; ``compare`` exits 2 with that line): a green verdict over zero cells
would say nothing. Runs from different machines or software are compared, under a warning printed first.

A cell that is ``ok`` in the baseline but ``oom``/``error`` in the current run counts as a regression
(it is listed in ``Comparison.newly_failed``); any other non-``ok`` status makes the cell's rows
"not-comparable" without failing the gate. Cells present in only one run are listed, never failed:
the sweep definition may legitimately change.

Mann-Whitney U is deliberately not used: it asks "is there any shift at all", which with many samples
flags a 1% drift, and says nothing about the size of the change that the gate must weigh.
"""

from __future__ import annotations

import math
import re
import statistics
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.core.errors import UsageError
from bench.core.numbers import finite_number
from bench.core.paths import write_output
from bench.results import store
from bench.results.schema import converted
from bench.scenarios import traits_of

CI_LEVEL = 0.90
"""Two-sided level of the percentile interval. Each verdict only looks at one side of it, so a
regression is declared at one-sided 95% confidence (the TOST convention for equivalence margins)."""

MIN_BOOTSTRAP_SAMPLES = 2
"""Below this many samples in either run there is nothing to resample: fall back to single values."""

FAILED_STATUSES = ("oom", "error")
MEMORY_KEYS = ("cuda_peak_allocated_bytes", "nvml_peak_used_bytes", "peak_rss_bytes")
"""Which peak to compare: the device's own when measured, else the process RSS (CPU runs)."""

VERDICTS = ("regressed", "improved", "unchanged", "inconclusive", "not-comparable")
JUDGED = VERDICTS[:4]  # the verdicts that judge something (an inconclusive row is judged: it says the run cannot tell)
COLUMNS = (
    "cell",
    "metric",
    "baseline",
    "current",
    "change",
    f"{CI_LEVEL:.0%} CI",
    "threshold",
    "verdict",
    "method",
    "note",
)


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
    # where a record stores its single value: (table, key), e.g. ("latency_ms", "p50"); every reader of a
    # gate metric's stored figure (POINT_VALUES, bench.regression.history's check of stored figures) takes it from here.
    # A gate metric on a stored figure is one MetricSpec with ``stored``: compared, thresholded and judged
    # in history as a single value per run. None: read otherwise (peak memory, accuracy)
    stored: tuple[str, str] | None = None

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
        MetricSpec("latency_p50", "ratio", False, 0.10, "ms", quantile=0.5, stored=("latency_ms", "p50")),
        MetricSpec("latency_p90", "ratio", False, 0.15, "ms", quantile=0.9, stored=("latency_ms", "p90")),
        MetricSpec("throughput", "ratio", True, 0.10, "img/s", quantile=0.5, stored=("throughput", "images_per_s")),
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


# --------------------------------------------------------------------------------------------------
# Rows and the comparison


@dataclass
class Row:
    """One metric of one matched cell. ``ratio`` holds current/baseline, or for kind "delta" the
    difference current - baseline in points; ``ci_low``/``ci_high`` bound it (None for single values)."""

    cell_id: str
    label: str
    metric: str
    kind: str
    baseline: float | None
    current: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    method: str
    verdict: str
    threshold: float | None = None
    note: str = ""

    def value_text(self, value: float | None) -> str:
        """A baseline/current value with its unit, as the table and the report show it."""
        return value_text(self.metric, value)

    def change_text(self) -> str:
        return format_change(self.kind, self.ratio)

    def ci_text(self) -> str:
        if self.ci_low is None or self.ci_high is None:
            return "-"
        return f"[{format_change(self.kind, self.ci_low)}, {format_change(self.kind, self.ci_high)}]"

    def threshold_text(self) -> str:
        return _threshold_text(self.kind, self.threshold)


def value_text(metric: str, value: float | None) -> str:
    """A metric's value with its unit (also used by ``bench.regression.history``)."""
    if value is None:
        return "-"
    unit = metric_spec(metric).unit
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "img/s":
        return f"{value:.3g} img/s"
    return f"{value:.2f}"


def format_change(kind: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f} pt" if kind == "delta" else f"{(value - 1) * 100:+.1f}%"


def _threshold_text(kind: str, threshold: float | None) -> str:
    if threshold is None:
        return "-"
    if math.isinf(threshold):
        return "off"
    return f"{threshold:+g} pt" if kind == "delta" else f"{threshold * 100:g}%"


@dataclass
class Comparison:
    """The result of ``compare_dirs``: rows per matched cell and metric, plus what could not be compared."""

    rows: list[Row]
    unmatched_baseline: list[str]
    unmatched_current: list[str]
    env_warnings: list[str]
    newly_failed: list[str] = field(default_factory=list)
    accuracy_skipped: list[str] = field(default_factory=list)
    """Matched cells whose accuracy was not compared, and why (random weights, or no score on one side)."""
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    n_boot: int = 2000
    seed: int = 0
    nothing_comparable: str | None = None
    """One line when no cell matched: nothing is comparable, and which axes or environment facts differ."""
    columns: ClassVar[tuple[str, ...]] = COLUMNS  # a subclass judging otherwise names its interval column

    @property
    def regressed(self) -> bool:
        """Any metric regressed beyond its threshold, or a cell that was ok now fails."""
        return bool(self.newly_failed) or any(row.verdict == "regressed" for row in self.rows)

    @property
    def judged(self) -> bool:
        """At least one verdict: a metric compared, or a cell that was ok and now fails."""
        return bool(self.newly_failed) or any(row.verdict in JUDGED for row in self.rows)

    @property
    def inconclusive(self) -> list[Row]:
        """The rows whose figures cannot rule out a change beyond the threshold (neither regressed nor unchanged)."""
        return [row for row in self.rows if row.verdict == "inconclusive"]

    @property
    def state(self) -> str:
        """What the headline says, and the colour pages give it: "not-comparable", "not-judged", "regressed",
        "inconclusive" (nothing regressed, but some row cannot tell) or "ok"."""
        if self.nothing_comparable:
            return "not-comparable"
        if not self.judged:
            return "not-judged"
        if self.regressed:
            return "regressed"
        return "inconclusive" if self.inconclusive else "ok"

    def nothing_judged(self) -> str:
        """One line saying why no verdict was reached (a verdict over nothing is exit 2, never OK)."""
        reasons = list(dict.fromkeys(f"{row.label}: {row.note}" for row in self.rows if row.note))
        shown = listed(reasons)
        return (f"nothing judged: {len(self.rows)} row(s), none with a verdict" + (f" ({shown})" if shown else "")
                + "; accepted: runs with at least one ok cell in common")

    def inconclusive_line(self) -> str:
        """One line for ``--fail-on-inconclusive`` (exit 2): the rows that could not tell, and what passes."""
        rows = [f"{row.label} {row.metric} {row.change_text()}" for row in self.inconclusive]
        return (
            f"inconclusive (--fail-on-inconclusive): {len(rows)} row(s) whose figures cannot rule out a change "
            f"beyond the threshold ({listed(rows)}); accepted: figures that settle every verdict (more samples "
            "per cell, a quieter machine), or no --fail-on-inconclusive"
        )

    def counts(self) -> dict[str, int]:
        counted = Counter(row.verdict for row in self.rows)
        return {verdict: counted.get(verdict, 0) for verdict in VERDICTS}

    def warnings(self) -> list[str]:
        """What must be read before any verdict: the runs come from different machines or software."""
        if not self.env_warnings:
            return []
        return [
            "the runs come from different machines or software, so a change may come from that alone: "
            + "; ".join(self.env_warnings)
        ]

    def summary(self) -> str:
        if self.nothing_comparable:
            return f"NOT COMPARABLE: {self.nothing_comparable}"
        if not self.judged:
            return f"NOT JUDGED: {self.nothing_judged()}"
        counts = ", ".join(f"{n} {verdict}" for verdict, n in self.counts().items())
        failed = f", {len(self.newly_failed)} newly failed cell(s)" if self.newly_failed else ""
        return f"{self.state.upper()}: {counts}{failed}"

    def method_text(self) -> str:
        return (
            f"{CI_LEVEL:.0%} percentile bootstrap of the median (p90) ratio, {self.n_boot} resamples, "
            f"seed {self.seed}; regressed only when the whole interval is beyond the threshold"
        )

    def thresholds_text(self) -> str:
        return ", ".join(
            f"{name} {_threshold_text(metric_spec(name).kind, t)}" for name, t in self.thresholds.items()
        )

    def table_rows(self) -> list[list[str]]:
        """The table's cells as the terminal prints them (one list of ``COLUMNS`` per row); the HTML
        report renders these same strings."""
        return self._cells()

    def notes(self) -> list[tuple[str, list[str]]]:
        """(title, items) printed under the table: failed, unmatched cells."""
        return [(title, items) for title, items in self._notes() if items]

    def _cells(self) -> list[list[str]]:
        return [
            [
                row.label,
                row.metric,
                row.value_text(row.baseline),
                row.value_text(row.current),
                row.change_text(),
                row.ci_text(),
                row.threshold_text(),
                row.verdict,
                row.method,
                row.note,
            ]
            for row in self.rows
        ]

    def _notes(self) -> list[tuple[str, list[str]]]:
        return [
            ("cells that were ok in the baseline and now fail (counted as regressions)", self.newly_failed),
            ("cells only in the baseline", self.unmatched_baseline),
            ("cells only in the current run", self.unmatched_current),
            ("accuracy not compared (not measured on both sides)", self.accuracy_skipped),
        ]

    def to_table(self) -> str:
        """Fixed-width text for the terminal: summary, table, then what could not be compared."""
        header = list(self.columns)
        body = self._cells()
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
        right = {2, 3, 4, 5, 6}

        def fmt(line: list[str]) -> str:
            parts = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        lines = [*(f"WARNING: {w}" for w in self.warnings()), self.summary()]
        lines += [f"method: {self.method_text()}", f"thresholds: {self.thresholds_text()}", ""]
        lines += [fmt(header), fmt(["-" * w for w in widths]), *(fmt(line) for line in body)]
        for title, items in self._notes():
            if items:
                lines += ["", f"{title}:", *(f"  {item}" for item in items)]
        return "\n".join(lines) + "\n"

    def to_markdown(self) -> str:
        """GitHub-flavoured markdown for CI summaries (task tokens such as <OD> are escaped)."""
        lines = [f"> **Warning:** {_md(w)}\n" for w in self.warnings()]
        lines += [
            f"### Regression check: {_md(self.summary())}",
            "",
            f"Method: {_md(self.method_text())}. Thresholds: {_md(self.thresholds_text())}.",
            "",
        ]
        if self.rows:
            lines += [
                "| " + " | ".join(self.columns) + " |",
                "|" + "|".join(["---", "---"] + ["---:"] * 5 + ["---"] * 3) + "|",
            ]
            for cells in self._cells():
                cells[0] = _md_code(cells[0])
                cells[1:] = [_md(c) for c in cells[1:]]
                if cells[7] == "regressed":
                    cells[7] = "**regressed**"
                lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append("No matched cells.")
        for title, items in self._notes():
            if items:
                lines += [
                    "",
                    f"**{title[0].upper()}{title[1:]}:**",
                    "",
                    *(f"- {_md(item)}" for item in items),
                ]
        return "\n".join(lines) + "\n"


def listed(items: list[str], n: int = 3) -> str:
    """The first ``n`` items joined, and how many more there are (one-line messages stay one line)."""
    return "; ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def exit_code(result: Comparison, fail_on_inconclusive: bool = False) -> int:
    """1 for a regression (it wins over anything inconclusive); 0 otherwise, except that with
    ``fail_on_inconclusive`` an inconclusive row is no pass: UsageError (exit 2), the code of a verdict
    over nothing, because 1 would claim a regression the figures do not show."""
    if result.regressed:
        return 1
    if fail_on_inconclusive and result.inconclusive:
        raise UsageError(result.inconclusive_line())
    return 0


def _md(text: str) -> str:
    """Text shown as typed in a markdown table cell: labels come from records, which are untrusted."""
    text = " ".join(str(text).split())  # a newline would end the table row
    text = re.sub(r"([\\`*_\[\]|~])", r"\\\1", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_code(text: str) -> str:
    """A code span that no backtick in the text can close early (CommonMark: a longer fence)."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# --------------------------------------------------------------------------------------------------
# Statistics


BOOT_ELEMENTS = 2_000_000
"""Resampled values drawn per call: bounds the memory of one cell's draw and of one batch of cells."""


def _draw(n_base: int, n_cur: int, rng: np.random.Generator, n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """One cell's resample indices, drawn from its own generator in chunks of ``BOOT_ELEMENTS`` (the
    stream a verdict was always drawn from: it depends on the cell alone, never on the other cells)."""
    chunk = max(1, BOOT_ELEMENTS // max(n_base, n_cur))
    b, c = [], []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        b.append(rng.integers(0, n_base, (size, n_base)))
        c.append(rng.integers(0, n_cur, (size, n_cur)))
    return np.concatenate(b), np.concatenate(c)


def sorted_quantiles(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """``np.quantile(values, quantiles, axis=-1)`` (its default linear method, bit for bit: the same order
    statistics and the same interpolation) of values already sorted along their last axis, shape
    (quantiles, ...): no partition per row, so millions of short rows cost a few array operations."""
    n = values.shape[-1]
    virtual = (n - 1) * quantiles
    below = np.floor(virtual)
    gamma = virtual - below
    below = below.astype(np.intp)
    a, b = values[..., below], values[..., np.minimum(below + 1, n - 1)]
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)  # numpy's lerp, from the nearer end
    return np.moveaxis(out, -1, 0)


def sample_values(samples: list[np.ndarray], records: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Each record's ``SAMPLE_ROWS`` values (equal to ``FROM_SAMPLES``'), one numpy call per metric and sample
    length, not one per cell. Every sample must hold at least one value."""
    out: list[dict[str, float]] = [{} for _ in samples]
    groups: dict[int, list[int]] = {}
    for i, x in enumerate(samples):
        groups.setdefault(len(x), []).append(i)
    for members in groups.values():
        rows = np.stack([samples[i] for i in members])
        batch = np.array([int(records[i].get("batch_size") or 1) for i in members])
        for metric, compute in SAMPLE_ROWS.items():
            for i, value in zip(members, compute(rows, batch).tolist(), strict=True):
                out[i][metric] = value
    return out


def bootstrap_ratios(
    pairs: list[tuple[np.ndarray, np.ndarray, np.random.Generator]],
    quantiles: tuple[float, ...],
    n_boot: int,
    level: float = CI_LEVEL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point ratio and percentile interval of quantile(current)/quantile(baseline), per cell and quantile
    (arrays of shape (cells, quantiles)), for (baseline samples, current samples, the cell's generator)
    pairs.

    Both runs are resampled independently with replacement (they are independent runs); the same
    resample serves all quantiles. Each cell draws its indices from its own generator; the resamples of
    every cell with the same sample counts are then sorted and their quantiles taken (``sorted_quantiles``)
    in a few numpy calls per batch (at most ``BOOT_ELEMENTS`` values per run), not per cell, so 100,000
    cells cost a few thousand calls; the figures equal numpy's quantiles of each resample bit for bit.
    """
    q = np.asarray(quantiles, dtype=float)
    alpha = (1 - level) / 2
    point = np.empty((len(pairs), len(q)))
    low, high = np.empty_like(point), np.empty_like(point)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (b, c, _) in enumerate(pairs):
        groups.setdefault((len(b), len(c)), []).append(i)
    for (n_base, n_cur), members in groups.items():
        per_batch = max(1, BOOT_ELEMENTS // (n_boot * max(n_base, n_cur)))
        for start in range(0, len(members), per_batch):
            batch = members[start : start + per_batch]
            drawn = [_draw(n_base, n_cur, pairs[i][2], n_boot) for i in batch]
            base = np.stack([pairs[i][0] for i in batch])
            cur = np.stack([pairs[i][1] for i in batch])
            point[batch] = (sorted_quantiles(np.sort(cur, axis=1), q) / sorted_quantiles(np.sort(base, axis=1), q)).T
            b = np.take_along_axis(base[:, None, :], np.stack([d[0] for d in drawn]), axis=2)
            c = np.take_along_axis(cur[:, None, :], np.stack([d[1] for d in drawn]), axis=2)
            b.sort(axis=2)
            c.sort(axis=2)
            ratios = sorted_quantiles(c, q) / sorted_quantiles(b, q)  # (quantiles, cells, n_boot)
            low[batch], high[batch] = (np.quantile(ratios, [alpha, 1 - alpha], axis=2)).transpose(0, 2, 1)
    return point, low, high


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


def samples_of(record: dict[str, Any]) -> np.ndarray:
    x = np.asarray(record.get("samples_ms") or [], dtype=float)
    return x[np.isfinite(x) & (x > 0)]


def _memory(record: dict[str, Any], key: str) -> float | None:
    return finite_number((record.get("memory") or {}).get(key))


def _memory_key(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first peak measured in both runs (one run may have been on a machine without NVML)."""
    return next((k for k in MEMORY_KEYS if _memory(a, k) is not None and _memory(b, k) is not None), None)


def stored_value(record: dict[str, Any], metric: str) -> float | None:
    """The single value a record stores for a gate metric with ``MetricSpec.stored`` (None: absent or not a
    finite number)."""
    table, key = METRICS[metric].stored
    return finite_number((record.get(table) or {}).get(key))


# Single values of one record that are not stored as such (every ``MetricSpec.stored`` one: ``stored_value``),
# used when there are no samples and for the side of a failed cell.
POINT_VALUES: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "peak_memory": lambda r: next((v for k in MEMORY_KEYS if (v := _memory(r, k)) is not None), None),
}
# The gate metrics read from the latency samples (``_latency_rows``); every other one with a stored figure
# is compared as one value per run, like peak memory (``stored_metrics``).
LATENCY_METRICS = ("latency_p50", "latency_p90", "throughput")


def stored_metrics() -> list[str]:
    """The gate metrics on a stored figure besides the latency ones, in ``METRICS`` order."""
    return [m for m, spec in METRICS.items() if spec.stored and m not in LATENCY_METRICS]


# The same values recomputed from the raw samples (request latencies), so that they match the
# bootstrap's ratios; throughput only where a request waits exactly its batch (closed loop, one
# sample per batch: the scenario's traits).
# SAMPLE_ROWS computes them for rows of samples at once (one record per row, rows of one length; ``batch``:
# each row's batch size), as bench.regression.history does for a run's records.
SAMPLE_ROWS: dict[str, Callable[[np.ndarray, Any], np.ndarray]] = {
    "latency_p50": lambda x, batch: np.median(x, axis=-1),
    "latency_p90": lambda x, batch: np.quantile(x, 0.9, axis=-1),
    "throughput": lambda x, batch: batch * 1000 / np.median(x, axis=-1),
}


def _of_record(rows: Callable[[np.ndarray, Any], np.ndarray]) -> Callable[[np.ndarray, dict[str, Any]], float]:
    return lambda x, r: float(rows(x, int(r.get("batch_size") or 1)))


FROM_SAMPLES: dict[str, Callable[[np.ndarray, dict[str, Any]], float]] = {
    metric: _of_record(rows) for metric, rows in SAMPLE_ROWS.items()
}


def _closed_loop(record: dict[str, Any]) -> bool:
    return traits_of(record).throughput_from_latency


def from_samples(record: dict[str, Any], metric: str) -> bool:
    """Whether the record's value of ``metric`` is recomputed from its samples (given it has some)."""
    return metric in FROM_SAMPLES and (metric != "throughput" or _closed_loop(record))


def point_value(record: dict[str, Any], metric: str, from_rows: dict[str, float] | None = None) -> float | None:
    """A record's single value of a metric; ``from_rows``: its ``SAMPLE_ROWS`` values when already computed
    (compare computes every cell's in a few calls, ``sample_values``)."""
    if metric.startswith("accuracy."):
        return finite_number((record.get("accuracy") or {}).get(metric.split(".", 1)[1]))
    if from_rows is not None and from_samples(record, metric):
        return from_rows[metric]
    samples = samples_of(record)
    if len(samples) and from_samples(record, metric):
        return FROM_SAMPLES[metric](samples, record)
    return stored_value(record, metric) if METRICS[metric].stored else POINT_VALUES[metric](record)


def _single(
    row: dict[str, Any], metric: str, base: float | None, cur: float | None, threshold: float, note: str = ""
) -> Row:
    spec = metric_spec(metric)
    change, verdict = None, "not-comparable"
    if base is None or cur is None:
        note = _join(note, f"not measured in the {'baseline' if base is None else 'current'} run")
    elif spec.kind == "ratio" and base <= 0:
        note = _join(note, "baseline value is 0")
    else:
        change = cur - base if spec.kind == "delta" else cur / base
        verdict = classify(spec, change, None, None, threshold)
        if spec.higher_is_better is None:
            note = _join(note, "direction unknown: not a metric of bench.accuracy.metrics.METRICS, so no verdict")
        elif spec.kind == "delta" and not spec.higher_is_better:
            note = _join(note, "lower is better")
    return Row(
        **row,
        metric=metric,
        kind=spec.kind,
        baseline=base,
        current=cur,
        ratio=change,
        ci_low=None,
        ci_high=None,
        method="single-value",
        verdict=verdict,
        threshold=threshold,
        note=note,
    )


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _latency_rows(
    row: dict[str, Any],
    base: dict[str, Any],
    cur: dict[str, Any],
    thresholds: dict[str, float],
    estimate: Estimate | None,
) -> list[Row]:
    """latency_p50, latency_p90 and throughput of one cell from one bootstrap of both runs' samples
    (``estimate``: this cell's; None when the samples are too few, see ``LATENCY_QUANTILES``)."""
    metrics = LATENCY_METRICS
    closed_loop = _closed_loop(base) and _closed_loop(cur)  # else queueing: throughput is not 1 / latency
    unstable = "run marked unstable (high CV)" if base.get("unstable") or cur.get("unstable") else ""
    if estimate is None:
        note = _join(f"too few samples for an interval (n={len(samples_of(base))}/{len(samples_of(cur))})", unstable)
        return [
            _single(row, m, point_value(base, m), point_value(cur, m), threshold_for(m, thresholds), note)
            for m in metrics
        ]
    point, low, high = estimate.point, estimate.low, estimate.high
    counts = f"n={estimate.n_base}/{estimate.n_cur}"
    # throughput at the median latency: the p50 ratio inverted, interval bounds swapped
    estimates = {
        "latency_p50": (point[0], low[0], high[0]),
        "latency_p90": (point[1], low[1], high[1]),
        "throughput": (1 / point[0], 1 / high[0], 1 / low[0]),
    }
    if not closed_loop:
        del estimates["throughput"]
    rows = []
    for metric, (ratio, lo, hi) in estimates.items():
        spec, threshold = METRICS[metric], threshold_for(metric, thresholds)
        verdict = classify(spec, ratio, lo, hi, threshold)
        tail_noise = ""
        if metric == "latency_p90" and unstable and verdict in ("regressed", "improved"):
            # An unstable run's tail is the machine's noise (bursts of foreign load hit a few samples,
            # which iid resampling cannot see); its p90 supports no verdict. The median still gates.
            verdict, tail_noise = "inconclusive", "p90 not gated: its tail is noise in an unstable run"
        # the interval reaches past a threshold: this run cannot rule out a change that size
        wide = verdict == "inconclusive" and not tail_noise
        rows.append(
            Row(
                **row,
                metric=metric,
                kind=spec.kind,
                baseline=point_value(base, metric, estimate.base),
                current=point_value(cur, metric, estimate.cur),
                ratio=float(ratio),
                ci_low=float(lo),
                ci_high=float(hi),
                method=f"bootstrap-{'p90' if metric == 'latency_p90' else 'median'}-ratio",
                verdict=verdict,
                threshold=threshold,
                note=_join(
                    counts, "interval reaches past the threshold: more samples needed" if wide else "",
                    unstable,
                    tail_noise,
                ),
            )
        )
    if not closed_loop:
        rows.append(_single(row, "throughput", point_value(base, "throughput"), point_value(cur, "throughput"),
                            threshold_for("throughput", thresholds), counts))
    return rows


def accuracy_metrics(*records: dict[str, Any]) -> list[str]:
    """The accuracy metrics measured on both sides: pretrained weights and a number in each record (random
    weights score noise, and 0.00 against 0.00 is no comparison)."""
    if any(r.get("weights") != "pretrained" for r in records):
        return []
    names = {name for r in records for name in (r.get("accuracy") or {})}
    return [f"accuracy.{name}" for name in sorted(names)
            if all(finite_number((r.get("accuracy") or {}).get(name)) is not None for r in records)]


def unmeasured_accuracy(base: dict[str, Any], cur: dict[str, Any]) -> str | None:
    """Why a matched cell's accuracy is not compared (None when every recorded metric is)."""
    names = sorted({name for r in (base, cur) for name in (r.get("accuracy") or {})})
    if not names or len(accuracy_metrics(base, cur)) == len(names):
        return None
    weights = {r.get("weights") for r in (base, cur)}
    if weights != {"pretrained"}:
        sides = f"{base.get('weights')} (baseline) / {cur.get('weights')} (current)"
        return f"{', '.join(names)}: weights {sides}, so accuracy was not measured"
    missing = [n for n in names if f"accuracy.{n}" not in accuracy_metrics(base, cur)]
    return f"{', '.join(missing)}: not scored on both sides"


def compare_records(
    base: dict[str, Any],
    cur: dict[str, Any],
    label: str,
    thresholds: dict[str, float],
    estimate: Estimate | None,
) -> list[Row]:
    """All rows of one matched cell (``thresholds`` already resolved and ``estimate`` bootstrapped, see
    ``compare_dirs``)."""
    row = {"cell_id": base["cell_id"], "label": label}
    statuses = base.get("status", "ok"), cur.get("status", "ok")
    metrics = [*LATENCY_METRICS, "peak_memory", *stored_metrics(), *accuracy_metrics(base, cur)]
    if statuses != ("ok", "ok"):
        error = cur.get("error") if statuses[1] != "ok" else base.get("error")
        note = _join(f"baseline {statuses[0]}, current {statuses[1]}", error or "")
        if statuses[0] == "ok" and statuses[1] in FAILED_STATUSES:
            note += " (counts as a regression)"
        return [
            Row(
                **row,
                metric=m,
                kind=metric_spec(m).kind,
                baseline=point_value(base, m) if statuses[0] == "ok" else None,
                current=point_value(cur, m) if statuses[1] == "ok" else None,
                ratio=None,
                ci_low=None,
                ci_high=None,
                method="status",
                verdict="not-comparable",
                threshold=threshold_for(m, thresholds),
                note=note,
            )
            for m in metrics
        ]
    rows = _latency_rows(row, base, cur, thresholds, estimate)
    key = _memory_key(base, cur)
    memory = [_memory(r, key) if key else None for r in (base, cur)]
    rows.append(
        _single(row, "peak_memory", *memory, thresholds["peak_memory"], f"memory.{key}" if key else "")
    )
    for metric in metrics[4:]:
        rows.append(
            _single(
                row, metric, point_value(base, metric), point_value(cur, metric), threshold_for(metric, thresholds)
            )
        )
    return rows


# --------------------------------------------------------------------------------------------------
# Run directories


def _load(run_dir: Path, role: str) -> dict[str, dict[str, Any]]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(
            f"{role} run directory {str(run_dir)!r} does not exist; accepted: a directory written by "
            "`florence2-bench run --out DIR`"
        )
    records = store.latest_by_cell(store.read_records(run_dir))
    if not records:
        raise UsageError(
            f"{role} run directory {str(run_dir)!r} has no records in {store.RESULTS}; accepted: a directory "
            "written by `florence2-bench run --out DIR`"
        )
    return records


def cell_label(record: dict[str, Any]) -> str:
    """A readable name for a cell, such as "base <CAPTION> fp32 bs1 cpu single-stream" (the scenario:
    one setting measured single-stream and offline is two cells; a record without one omits it)."""
    return " ".join(
        str(part)
        for part in (
            record.get("variant", "?"),
            record.get("task", "?"),
            record.get("dtype", "?"),
            f"bs{record.get('batch_size', '?')}",
            record.get("device", "?"),
            record.get("scenario"),
        )
        if part is not None
    )


def cell_labels(records: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Labels by cell id; cells that share one (other beams, attention...) get their id appended."""
    records = list(records)
    counted = Counter(cell_label(r) for r in records)
    return {
        r["cell_id"]: cell_label(r) + (f" [{r['cell_id'][:8]}]" if counted[cell_label(r)] > 1 else "")
        for r in records
    }


# The record fields that make up a cell's identity, in the order a reader scans them.
CELL_AXES = (
    "variant", "task", "dataset", "device", "dtype", "batch_size", "scenario", "backend", "weights", "attn",
    "compile", "num_beams", "max_new_tokens", "n_images",
)


def _values(records: Iterable[dict[str, Any]], axis: str) -> list[str]:
    return sorted({str(r.get(axis)) for r in records})


def nothing_comparable(
    base: dict[str, dict[str, Any]], cur: dict[str, dict[str, Any]], env_warnings: list[str]
) -> str:
    """One line: no cell matched, and which axes (and environment facts) differ between the runs."""
    differ = []
    for axis in CELL_AXES:
        a, b = _values(base.values(), axis), _values(cur.values(), axis)
        if a != b:
            differ.append(f"{axis} {', '.join(a)} (baseline) vs {', '.join(b)} (current)")
    settings = sorted({k for r in (*base.values(), *cur.values()) for k in (r.get("settings") or {})})
    for key in settings:
        a = sorted({str((r.get("settings") or {}).get(key)) for r in base.values()})
        b = sorted({str((r.get("settings") or {}).get(key)) for r in cur.values()})
        if a != b:
            differ.append(f"settings.{key} {', '.join(a)} (baseline) vs {', '.join(b)} (current)")
    axes = "; ".join(differ) or "no setting differs, yet no cell id matches (records of another schema?)"
    env = f"; environment: {'; '.join(env_warnings)}" if env_warnings else ""
    return (
        f"nothing is comparable: none of the baseline's {len(base)} cells matches one of the current run's "
        f"{len(cur)} (cells match by cell_id, i.e. identical settings); differing axes: {axes}{env}"
    )


def _env_warnings(baseline: Path, current: Path) -> list[str]:
    from bench.run.environment import differences  # the one implementation, owned by bench.run.environment

    return differences(store.read_env(baseline), store.read_env(current))


LATENCY_QUANTILES = (0.5, 0.9)
"""The sample quantiles one bootstrap of a cell judges: latency p50 (and throughput from it) and p90."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """One cell's bootstrap (``bootstrap_ratios``' point, low and high per ``LATENCY_QUANTILES``) and each
    run's sample count and its values from samples (``sample_values``)."""

    point: np.ndarray
    low: np.ndarray
    high: np.ndarray
    base: dict[str, float]
    cur: dict[str, float]
    n_base: int
    n_cur: int


def _estimates(matched: list[tuple[str, dict[str, Any], dict[str, Any]]], seed: int, n_boot: int) -> dict[str, Estimate]:
    """The bootstrap of every matched cell both of whose runs are ok with enough samples, in one
    ``bootstrap_ratios`` call; each cell's generator is seeded from ``seed`` and its id alone."""
    pairs, ids, records = [], [], []
    for cell_id, base, cur in matched:
        if (base.get("status", "ok"), cur.get("status", "ok")) != ("ok", "ok"):
            continue
        b, c = samples_of(base), samples_of(cur)
        if min(len(b), len(c)) >= MIN_BOOTSTRAP_SAMPLES:
            pairs.append((b, c, np.random.default_rng([seed, zlib.crc32(cell_id.encode())])))
            ids.append(cell_id)
            records.append((base, cur))
    point, low, high = bootstrap_ratios(pairs, LATENCY_QUANTILES, n_boot)
    sides = sample_values([b for b, _, _ in pairs] + [c for _, c, _ in pairs],
                          [b for b, _ in records] + [c for _, c in records])
    n = len(pairs)
    return {cell_id: Estimate(point[i], low[i], high[i], sides[i], sides[n + i], len(pairs[i][0]), len(pairs[i][1]))
            for i, cell_id in enumerate(ids)}


def compare_dirs(
    baseline: Path,
    current: Path,
    thresholds: dict[str, float] | None = None,
    *,
    seed: int = 0,
    n_boot: int = 2000,
) -> Comparison:
    """Compare two run directories cell by cell (matched by ``cell_id``).

    ``thresholds`` overrides ``DEFAULT_THRESHOLDS`` per metric (keys as ``parse_fail_on`` returns).
    The bootstrap of each cell is seeded from ``seed`` and the cell id, so a verdict does not depend on
    which other cells are in the runs. Raises UsageError for a missing or empty run directory.
    """
    base_records, cur_records = _load(baseline, "baseline"), _load(current, "current")
    old = [name for name, records in (("baseline", base_records), ("current", cur_records))
           if converted(list(records.values()))]
    if len(old) == 1:
        raise UsageError(
            f"the {old[0]} run directory holds schema-1 records (latency was the amortised per-image time and cell "
            "ids had no scenario), so no cell matches the other run's; accepted: two run directories of the same "
            "schema (regenerate the old one with this version)"
        )
    resolved = resolve_thresholds(thresholds)
    labels = cell_labels({**cur_records, **base_records}.values())
    matched = [(cell_id, base, cur_records[cell_id]) for cell_id, base in base_records.items() if cell_id in cur_records]
    estimates = _estimates(matched, seed, n_boot)
    rows: list[Row] = []
    newly_failed, accuracy_skipped = [], []
    for cell_id, base, cur in matched:
        if (why := unmeasured_accuracy(base, cur)) is not None:
            accuracy_skipped.append(f"{labels[cell_id]}: {why}")
        rows += compare_records(base, cur, labels[cell_id], resolved, estimates.get(cell_id))
        if base.get("status", "ok") == "ok" and cur.get("status") in FAILED_STATUSES:
            newly_failed.append(f"{labels[cell_id]}: {cur.get('status')}: {cur.get('error') or 'no message'}")
    env_warnings = _env_warnings(Path(baseline), Path(current))
    return Comparison(
        rows=rows,
        unmatched_baseline=[labels[c] for c in base_records if c not in cur_records],
        unmatched_current=[labels[c] for c in cur_records if c not in base_records],
        env_warnings=env_warnings,
        newly_failed=newly_failed,
        accuracy_skipped=accuracy_skipped,
        thresholds=resolved,
        n_boot=n_boot,
        seed=seed,
        nothing_comparable=None if matched else nothing_comparable(base_records, cur_records, env_warnings),
    )


def run_compare(
    baseline: Path,
    current: Path,
    fail_on: str | None = None,
    markdown: Path | None = None,
    fail_on_inconclusive: bool = False,
) -> int:
    """The ``compare`` command: print the table, write markdown if asked, return the exit code (1 = regressed).

    No matched cell is bad input, not a pass: the markdown (if asked) says so, then UsageError (exit 2);
    so is an inconclusive row under ``fail_on_inconclusive`` (``exit_code``)."""
    thresholds = parse_fail_on(fail_on) if fail_on else None
    comparison = compare_dirs(Path(baseline), Path(current), thresholds)
    if markdown is not None:
        write_output(markdown, comparison.to_markdown())
    if comparison.nothing_comparable:
        raise UsageError(comparison.nothing_comparable)
    print(comparison.to_table(), end="")
    if not comparison.judged:  # every matched cell skipped or unmeasured: the table lists why, then exit 2
        raise UsageError(comparison.nothing_judged())
    return exit_code(comparison, fail_on_inconclusive)
