"""Judging a history: the CI gate on its newest run (``check``) and the look-back step finder (``steps``).

Both work per machine class, cell and metric on the series of per-run values, computed exactly as
``compare`` computes a run's value (the median, p90 and throughput recomputed from the raw samples,
the peak memory, each accuracy metric), with compare's metric directions and thresholds. Ratio metrics
are judged on the log scale (a 25% slowdown and its undoing are the same size), accuracy in points.

Noise, as these statistics see it (docs/history.md has the long form and the measured rates):

- a run's *sample noise* ``se``: the standard error of its value from its own raw samples (normal
  approximation on log samples: 1.2533 s/sqrt(n) for the median, 1.7094 s/sqrt(n) for the p90: the
  metric spec's ``se_factor``);
- the *run-to-run spread*: a robust standard deviation of the per-run values (for ``check``'s
  baseline runs, Tukey's biweight midvariance; for ``steps``, 1.4826 x the median absolute successive
  difference / sqrt(2), which a step or a lone outlier barely moves);
- the noise ``sigma`` is the larger of the two (the spread of a few runs can be near zero by chance,
  and a run can never be more precise than its own samples).

check: the newest run against the median of the previous ``K`` (10) runs of its class that measured
the cell: a regression when the change is beyond compare's threshold *and* beyond the noise band
``z_check * sigma * sqrt(1 + pi / (2 K))`` (the new run's noise plus that of the baseline median). A change
beyond the threshold but within the band is "inconclusive" (the history cannot tell it from noise),
never "unchanged".
Where a step is found among the previous runs in any metric of a cell, the latest such step starts the
baseline of all the cell's metrics (``cell_level_start``, ``CELL_LEVEL_RULE``).

steps: the whole series is partitioned into segments of constant level, each at least ``MIN_SEGMENT``
(3) runs long so that a lone outlier cannot form one (``segment``: the optimal partition of the
outlier-clipped series with a penalty per segment, as asv fits a piecewise-constant model); a boundary
is kept when the medians on either side differ by more than ``z_step`` standard errors
``sigma * sqrt(pi/2 * (1/n1 + 1/n2))``, and a step is listed when the change between adjacent segments
is also beyond compare's threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np

from bench.core.inputs import BOUNDS
from bench.regression import compare, comparison, gates, values
from bench.regression.history.entries import Entry, MachineClass
from bench.regression.history.levels import (
    CELL_LEVEL_RULE,
    K_BASELINE,
    Z_CHECK,
    Z_STEP,
    Point,
    cell_level_starts,
    noise_band,
    segments,
    series_sigma,
    step_z,
)
from bench.results import Record, dig, figure

MIN_BASELINE = int(BOUNDS["baseline_runs"].low)

BENCHMARK_METRICS = ("latency_p50", "latency_p90")
"""A pytest-benchmark cell's values are round times: no images, memory or accuracy to judge."""


def source_of(record: Record) -> str:
    return "pytest-benchmark" if record.extra.pytest_benchmark else "run"


def metrics_of(record: Record) -> list[str]:
    if source_of(record) == "pytest-benchmark":
        return list(BENCHMARK_METRICS)
    return [*(m for m in gates.METRICS if m != "accuracy"), *compare.accuracy_metrics(record)]


def labels(records: list[Record]) -> dict[str, str]:
    """Readable names by cell id; run cells as compare names them, benchmarks by their test name."""
    out = compare.cell_labels([r for r in records if source_of(r) == "run"])
    for r in records:
        if source_of(r) == "pytest-benchmark":
            bench = r.extra.pytest_benchmark  # pytest-benchmark's own JSON (entries._benchmark_record)
            out[r.cell_id] = str(dig(bench, "name") or dig(bench, "fullname"))
    return out


# ------------------------------------------------------------------------------------------ series




def scale(kind: str, value: float) -> float:
    return math.log(value) if kind == "ratio" else value


def unscale(kind: str, x: float) -> float:
    """A value on the judged scale back on the metric's; applied to a difference, the change as compare
    states it: a ratio, or a delta in points."""
    return math.exp(x) if kind == "ratio" else x


def sample_se(record: Record, metric: str) -> float:
    return _Figures(record).se(metric)


class _Figures:
    """One record's judged values, each figure computed once: its samples and their log spread are shared by
    its metrics (a 1,000-run history of 100 cells holds 100,000 records, each read by check and steps)."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.points: dict[str, tuple[float, float] | None] = {}
        self._samples: np.ndarray | None = None
        self._log_sd: float | None = None

    def samples(self) -> np.ndarray:
        if self._samples is None:
            self._samples = values.samples_of(self.record)
        return self._samples

    def se(self, metric: str, factor: float | None = None) -> float:
        """``factor``: the metric's ``se_factor`` where the caller has it (it is computed on each access)."""
        samples = self.samples()
        factor = gates.metric_spec(metric).se_factor if factor is None else factor
        if factor is None or len(samples) < 2:
            return 0.0
        if metric == "throughput" and not values.closed_loop(self.record):
            return 0.0  # an open-loop (server) cell's throughput is its achieved rate, not 1 / its latency
        if self._log_sd is None:
            self._log_sd = float(np.std(np.log(samples), ddof=1))
        return factor * self._log_sd / math.sqrt(len(samples))

    def point(self, metric: str) -> tuple[float, float] | None:
        """(x, se) on the judged scale, or None where the cell did not run ok or the metric was not measured."""
        if metric not in self.points:
            self.points[metric] = self._point(metric)
        return self.points[metric]

    def _point(self, metric: str) -> tuple[float, float] | None:
        if self.record.status != "ok":
            return None
        value = values.point_value(self.record, metric)
        kind = gates.metric_spec(metric).kind
        if value is None or (kind == "ratio" and value <= 0):
            return None
        return scale(kind, value), self.se(metric)


def figures(entry: Entry) -> dict[str, _Figures]:
    """Each record's figures by cell id, computed once per entry and kept with it (``Entry.derived``): the
    trend page's check and steps read the same values."""
    if "figures" not in entry.derived:
        found = {r.cell_id: _Figures(r) for r in entry.records}
        _from_sample_rows([f for f in found.values() if f.record.status == "ok"])
        entry.derived["figures"] = found
    return entry.derived["figures"]


def _from_sample_rows(figs: list[_Figures]) -> None:
    """The values recomputed from samples (``values.SAMPLE_ROWS``) and their sample noise for a run's records
    at once: one numpy call per metric and sample count, not per record (equal to ``values.point_value``)."""
    groups: dict[int, list[_Figures]] = {}
    for f in figs:
        if len(f.samples()):
            groups.setdefault(len(f.samples()), []).append(f)
    for n, group in groups.items():
        rows = np.stack([f.samples() for f in group])
        log_sd = np.std(np.log(rows), axis=1, ddof=1) if n > 1 else None
        for metric, compute in values.SAMPLE_ROWS.items():
            mine = [i for i, f in enumerate(group) if values.from_samples(f.record, metric)]
            if not mine:
                continue
            batch = np.array([values.batch_of(group[i].record) for i in mine])
            computed = compute(rows[mine], batch)
            spec = gates.metric_spec(metric)
            factor = spec.se_factor
            for i, value in zip(mine, computed.tolist(), strict=True):
                f = group[i]
                if log_sd is not None:
                    f._log_sd = float(log_sd[i])
                ok = not (spec.kind == "ratio" and value <= 0)
                f.points[metric] = (scale(spec.kind, value), f.se(metric, factor)) if ok else None


def invalid_values(record: Record) -> list[str]:
    """Why an ok record's stored figures cannot be judged: a stored figure at or below zero, or round times that
    are not positive finite numbers; [] when every present value is judgeable. (A figure that is not a finite
    number is None once typed, as if not measured: ``bench.results.Record.from_dict``.)"""
    if record.status != "ok":
        return []
    out = []
    for metric, spec in gates.METRICS.items():  # where each is stored: MetricSpec.stored, stated once
        value = None if spec.stored is None else figure(record, spec.stored)
        if value is not None and not value > 0:
            out.append(f"{metric} is {value!r}: not a positive finite number")
    taken, good = len(record.samples_ms), len(values.samples_of(record))
    if taken and good < taken:
        out.append(f"samples_ms: {taken - good} of {taken} value(s): not a positive finite number")
    return out


def point(index: int, record: Record | None, metric: str) -> Point | None:
    """The run's value, or None where the cell did not run ok or the metric was not measured."""
    found = None if record is None else _Figures(record).point(metric)
    return None if found is None else Point(index, *found)




# ------------------------------------------------------------------------------------------ check


@dataclass
class HistoryCheck(comparison.Comparison):
    """The newest run judged against its class's history; same rows, table and markdown as compare."""

    columns: ClassVar[tuple[str, ...]] = (*comparison.COLUMNS[:5], "noise band", *comparison.COLUMNS[6:])

    run: Entry | None = None
    k: int = K_BASELINE
    z: float = Z_CHECK

    unjudgeable: list[str] = field(default_factory=list)
    """Cells or metrics of the newest run whose values cannot be judged (NaN, zero, negative, infinite)."""

    def summary(self) -> str:
        if not self.judged:
            return f"NOT JUDGED: {self.nothing_judged()}"
        short, bad = len(self.unmatched_current), len(self.unjudgeable)
        return (super().summary() + (f", {short} not judged (too few earlier runs)" if short else "")
                + (f", {bad} not judged (invalid values)" if bad else ""))

    @property
    def building(self) -> bool:
        """Nothing judged only because the class has too few earlier runs: the baseline is still growing."""
        return not self.judged and bool(self.unmatched_current) and not self.unjudgeable

    def nothing_judged(self) -> str:
        reasons = self.unjudgeable or self.unmatched_current or ["the newest run has no ok cell"]
        return f"nothing judged in the newest run ({comparison.listed(reasons)})"

    def _notes(self) -> list[tuple[str, list[str]]]:
        return [
            (
                "cells that were ok in the previous run of this class and now fail (counted as regressions)",
                self.newly_failed,
            ),
            ("not judged: values that are not positive finite numbers", self.unjudgeable),
            ("not judged: too few earlier runs of this machine class", self.unmatched_current),
            ("cells of the class's previous run that the newest run does not have", self.unmatched_baseline),
            ("other machine classes in this history (never compared with this one)", self.env_warnings),
        ]

    def method_text(self) -> str:
        run = (
            f"run {self.run.short} of {self.run.date[:19]} on {self.run.machine.label}; " if self.run else ""
        )
        return (
            f"{run}each metric against the median of the previous {self.k} runs of this machine class; "
            f"regressed when the change is beyond the threshold and the noise band "
            f"(±{self.z:g} sigma: the larger of the runs' robust spread and their sample noise); "
            "inconclusive when it is beyond the threshold but within the band; "
            f"{CELL_LEVEL_RULE}"
        )


def check(
    entries: list[Entry],
    thresholds: dict[str, float] | None = None,
    *,
    k: int = K_BASELINE,
    z: float = Z_CHECK,
) -> HistoryCheck:
    """Judge the newest run of ``entries`` (oldest first) against the previous ``k`` runs of its class."""
    resolved = gates.resolve_thresholds(thresholds)
    newest = entries[-1]
    same = [(i, e) for i, e in enumerate(entries[:-1]) if e.machine == newest.machine]
    current = {r.cell_id: r for r in newest.records}
    names = labels(newest.records)
    newly_failed, unjudgeable = [], []
    previous = same[-1][1].records if same else []
    gone = [r for r in previous if r.cell_id not in current]
    earlier = [(i, figures(e)) for i, e in same]
    mine = figures(newest)
    judged: list[tuple[str, list[str], dict[str, Point], dict[str, list[Point]]]] = []
    for cell_id, record in current.items():
        history = [(i, cells[cell_id]) for i, cells in earlier if cell_id in cells]
        was_ok = bool(history) and history[-1][1].record.status == "ok"
        if record.status in comparison.FAILED_STATUSES and was_ok:
            newly_failed.append(f"{names[cell_id]}: {record.status}: {record.error or 'no message'}")
        invalid = invalid_values(record)
        unjudgeable += [f"{names[cell_id]}: {why}" for why in invalid]
        earlier_ok = sum(f.record.status == "ok" for _, f in history)
        own: list[str] = []  # the cell's "too few" lines, kept in cell order
        if record.status == "ok" and earlier_ok < MIN_BASELINE:
            own.append(f"{names[cell_id]}: {earlier_ok} earlier ok run(s) of this class, {MIN_BASELINE} needed")
            judged.append((cell_id, own, {}, {}))
            continue
        news, priors = _cell_points(names[cell_id], mine[cell_id], history, len(entries) - 1, own)
        judged.append((cell_id, own, news, priors))
    rows, short = _level_rows(judged, entries, names, resolved, k, z)
    return HistoryCheck(
        rows=rows,
        unmatched_baseline=sorted(labels(gone).values()),
        unmatched_current=short,
        unjudgeable=unjudgeable,
        env_warnings=sorted({e.machine.label for e in entries if e.machine != newest.machine}),
        newly_failed=newly_failed,
        thresholds=resolved,
        run=newest,
        k=k,
        z=z,
    )


def _level_rows(judged: list[tuple[str, list[str], dict[str, Point], dict[str, list[Point]]]], entries: list[Entry],
                names: dict[str, str], resolved: dict[str, float], k: int, z: float,
                ) -> tuple[list[comparison.Row], list[str]]:
    """Each cell's metrics judged on its level, the values since its step (every cell's series segmented at
    once): the rows, and the cells and metrics with too few values, in cell order."""
    rows: list[comparison.Row] = []
    short: list[str] = []
    starts = cell_level_starts([priors for *_, priors in judged])
    for (cell_id, own, news, priors), (start, found_in) in zip(judged, starts, strict=True):
        short += own
        for metric, prior in priors.items():
            level = prior if start is None else [p for p in prior if p.index >= start]
            since = None
            if start is not None:
                since = entries[start].commit[:12] + ("" if found_in == metric else f", found in {found_in}")
            if len(level) < MIN_BASELINE:
                short.append(
                    f"{names[cell_id]} {metric}: {len(level)} value(s) since the step at {since}, "
                    f"{MIN_BASELINE} needed"
                )
                continue
            rows.append(_row(cell_id, names[cell_id], metric, level, news[metric], resolved, k, z, since))
    return rows, short


def _cell_points(
    label: str, figs: _Figures, history: list[tuple[int, _Figures]], index: int, short: list[str]
) -> tuple[dict[str, Point], dict[str, list[Point]]]:
    """One cell's newest point (run ``index``) and its earlier points, by metric; a metric with fewer than
    ``MIN_BASELINE`` earlier values is listed in ``short`` instead."""
    news, priors = {}, {}
    for metric in metrics_of(figs.record):
        found = figs.point(metric)
        if found is None:
            continue
        prior = [Point(i, *v) for i, f in history if (v := f.point(metric)) is not None]
        if len(prior) < MIN_BASELINE:
            short.append(f"{label} {metric}: {len(prior)} earlier value(s), {MIN_BASELINE} needed")
            continue
        news[metric], priors[metric] = Point(index, *found), prior
    return news, priors


def _row(
    cell_id: str,
    label: str,
    metric: str,
    level: list[Point],
    new: Point,
    thresholds: dict[str, float],
    k: int,
    z: float,
    since: str | None,
) -> comparison.Row:
    spec, threshold = gates.metric_spec(metric), gates.threshold_for(metric, thresholds)
    center, sigma, band = noise_band(level, new, k, z)
    dx = new.x - center
    change = unscale(spec.kind, dx)
    verdict = gates.classify(spec, change, None, None, threshold)
    note = f"median of {min(k, len(level))} runs" + (f" since the step at {since}" if since else "")
    if verdict in ("regressed", "improved") and abs(dx) <= band:
        # beyond the threshold, yet no larger than the runs' own noise: the history cannot tell
        verdict, note = "inconclusive", f"{note}; beyond the threshold but within the noise band"
    elif spec.higher_is_better is None:
        note = f"{note}; direction unknown: not a metric of bench.accuracy.metrics.METRICS, so no verdict"
    return comparison.Row(
        cell_id=cell_id,
        label=label,
        metric=metric,
        kind=spec.kind,
        baseline=unscale(spec.kind, center),
        current=unscale(spec.kind, new.x),
        ratio=change,
        ci_low=unscale(spec.kind, -band),
        ci_high=unscale(spec.kind, band),
        method="history-median",
        verdict=verdict,
        threshold=threshold,
        note=note,
    )


# ------------------------------------------------------------------------------------------ steps


@dataclass
class SeriesKey:
    """What names a series: one cell and metric over the runs of one machine class."""

    machine: MachineClass
    cell_id: str
    label: str
    task: str
    metric: str
    kind: str


@dataclass
class Step(SeriesKey):
    """A level shift that persists: ``index`` is the first run after it."""

    index: int
    commit: str
    date: str
    before: float
    after: float
    change: float  # ratio after/before, or a delta in points
    z: float  # the shift in standard errors of the difference of the two medians
    verdict: str  # "regressed" or "improved", in the metric's direction

    def change_text(self) -> str:
        return comparison.format_change(self.kind, self.change)


@dataclass
class Series(SeriesKey):
    """The values of one cell and metric over the runs of one class."""

    source: str  # "run" or "pytest-benchmark": a benchmark round is not a request, so never one chart
    points: list[Point] = field(default_factory=list)


def all_series(entries: list[Entry]) -> list[Series]:
    """Every (class, cell, metric) series with at least one value, in a stable order."""
    out: dict[tuple[str, str, str], Series] = {}
    names: dict[str, str] = {}
    for entry in entries:
        names.update(labels(entry.records))
    for index, entry in enumerate(entries):
        machine = entry.machine.id  # a hash of the class: once per run, not per value
        for cell_id, figs in figures(entry).items():
            record = figs.record
            for metric in metrics_of(record):
                found = figs.point(metric)
                if found is None:
                    continue
                p = Point(index, *found)
                key = (machine, cell_id, metric)
                if key not in out:
                    out[key] = Series(
                        entry.machine,
                        record.cell_id,
                        names[record.cell_id],
                        str(record.task),
                        metric,
                        gates.metric_spec(metric).kind,
                        source_of(record),
                    )
                out[key].points.append(p)
    return list(out.values())


def steps(
    entries: list[Entry],
    thresholds: dict[str, float] | None = None,
    *,
    z: float = Z_STEP,
    series: list[Series] | None = None,
) -> list[Step]:
    """Every step of every series beyond both the noise (``z``) and compare's threshold, oldest first.

    ``series``: ``all_series(entries)`` where the caller has already computed it.
    """
    resolved = gates.resolve_thresholds(thresholds)
    found = []
    series = all_series(entries) if series is None else series
    xs = [(np.array([p.x for p in s.points]), series_sigma(s.points)) for s in series]
    for s, (x, sigma), breaks in zip(series, xs, segments(xs, z), strict=True):  # every series segmented at once
        found += series_steps(s, entries, resolved, breaks, x, sigma)
    return sorted(found, key=lambda st: (st.index, st.label, st.metric))


def series_steps(
    s: Series, entries: list[Entry], thresholds: dict[str, float], breaks: list[int], x: np.ndarray, sigma: float
) -> list[Step]:
    """The steps of one series, given where ``segments`` cut it (``x``: its values, ``sigma``: its noise)."""
    bounds = [0, *breaks, len(x)]
    spec, threshold = gates.metric_spec(s.metric), gates.threshold_for(s.metric, thresholds)
    out = []
    for n, j in enumerate(breaks):
        left, right = x[bounds[n] : j], x[j : bounds[n + 2]]
        before, after = float(np.median(left)), float(np.median(right))
        change = unscale(s.kind, after - before)
        verdict = gates.classify(spec, change, None, None, threshold)
        if verdict not in ("regressed", "improved"):
            continue
        first = entries[s.points[j].index]
        out.append(
            Step(
                *(getattr(s, f.name) for f in fields(SeriesKey)),
                s.points[j].index,
                first.commit,
                first.date,
                unscale(s.kind, before),
                unscale(s.kind, after),
                change,
                step_z(left, right, sigma),
                verdict,
            )
        )
    return out
