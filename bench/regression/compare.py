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

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.core.paths import write_output
from bench.regression.bootstrap import Estimate, cell_estimates
from bench.regression.comparison import FAILED_STATUSES, Comparison, Row, exit_code
from bench.regression.gates import (
    METRICS,
    classify,
    metric_spec,
    parse_fail_on,
    resolve_thresholds,
    threshold_for,
)
from bench.regression.values import (
    LATENCY_METRICS,
    accuracy_value,
    batch_of,
    closed_loop,
    memory_key,
    memory_value,
    point_value,
    samples_of,
    stored_metrics,
)
from bench.results import CellAxes, Record, store


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
    base: Record,
    cur: Record,
    thresholds: dict[str, float],
    estimate: Estimate | None,
) -> list[Row]:
    """latency_p50, latency_p90 and throughput of one cell from one bootstrap of both runs' samples
    (``estimate``: this cell's; None when the samples are too few, see ``LATENCY_QUANTILES``)."""
    metrics = LATENCY_METRICS
    closed = closed_loop(base) and closed_loop(cur)  # else queueing: throughput is not 1 / latency
    unstable = "run marked unstable (high CV)" if base.unstable or cur.unstable else ""
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
    if not closed:
        del estimates["throughput"]
    rows = [_bootstrap_row(row, metric, interval, base, cur, estimate, threshold_for(metric, thresholds), unstable)
            for metric, interval in estimates.items()]
    if not closed:
        rows.append(_single(row, "throughput", point_value(base, "throughput"), point_value(cur, "throughput"),
                            threshold_for("throughput", thresholds), counts))
    return rows


def _bootstrap_row(
    row: dict[str, Any],
    metric: str,
    interval: tuple[float, float, float],
    base: Record,
    cur: Record,
    estimate: Estimate,
    threshold: float,
    unstable: str,
) -> Row:
    """One latency metric's row from its bootstrap (point ratio, low, high) against its threshold."""
    ratio, lo, hi = interval
    spec = METRICS[metric]
    verdict = classify(spec, ratio, lo, hi, threshold)
    tail_noise = ""
    if metric == "latency_p90" and unstable and verdict in ("regressed", "improved"):
        # An unstable run's tail is the machine's noise (bursts of foreign load hit a few samples,
        # which iid resampling cannot see); its p90 supports no verdict. The median still gates.
        verdict, tail_noise = "inconclusive", "p90 not gated: its tail is noise in an unstable run"
    # the interval reaches past a threshold: this run cannot rule out a change that size
    wide = verdict == "inconclusive" and not tail_noise
    return Row(
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
            f"n={estimate.n_base}/{estimate.n_cur}",
            "interval reaches past the threshold: more samples needed" if wide else "",
            unstable,
            tail_noise,
        ),
    )


def accuracy_metrics(*records: Record) -> list[str]:
    """The accuracy metrics measured on both sides: pretrained weights and a number in each record (random
    weights score noise, and 0.00 against 0.00 is no comparison)."""
    if any(r.weights != "pretrained" for r in records):
        return []
    names = {name for r in records for name in (r.accuracy or {})}
    return [f"accuracy.{name}" for name in sorted(names) if all(accuracy_value(r, name) is not None for r in records)]


def unmeasured_accuracy(base: Record, cur: Record) -> str | None:
    """Why a matched cell's accuracy is not compared (None when every recorded metric is)."""
    names = sorted({name for r in (base, cur) for name in (r.accuracy or {})})
    if not names or len(accuracy_metrics(base, cur)) == len(names):
        return None
    weights = {r.weights for r in (base, cur)}
    if weights != {"pretrained"}:
        sides = f"{base.weights} (baseline) / {cur.weights} (current)"
        return f"{', '.join(names)}: weights {sides}, so accuracy was not measured"
    missing = [n for n in names if f"accuracy.{n}" not in accuracy_metrics(base, cur)]
    return f"{', '.join(missing)}: not scored on both sides"


def compare_records(
    base: Record,
    cur: Record,
    label: str,
    thresholds: dict[str, float],
    estimate: Estimate | None,
) -> list[Row]:
    """All rows of one matched cell (``thresholds`` already resolved and ``estimate`` bootstrapped, see
    ``compare_dirs``)."""
    row = {"cell_id": base.cell_id, "label": label}
    statuses = base.status, cur.status
    metrics = [*LATENCY_METRICS, "peak_memory", *stored_metrics(), *accuracy_metrics(base, cur)]
    if statuses != ("ok", "ok"):
        error = cur.error if statuses[1] != "ok" else base.error
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
    key = memory_key(base, cur)
    memory = [memory_value(r, key) if key else None for r in (base, cur)]
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


# The record fields compare reads (``store.records`` types these alone: 100,000 cells a run).
READ = (*CellAxes.__dataclass_fields__, "cell_id", "checkpoint", "weights", "max_new_tokens", "status", "error",
        "scenario", "backend", "samples_ms", "latency_ms", "throughput", "memory", "accuracy", "settings",
        "unstable")


def _load(run_dir: Path, role: str) -> dict[str, Record]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(
            f"{role} run directory {str(run_dir)!r} does not exist; accepted: a directory written by "
            "`florence2-bench run --out DIR`"
        )
    records = store.latest_by_cell(store.records(run_dir, only=READ))
    if not records:
        raise UsageError(
            f"{role} run directory {str(run_dir)!r} has no records in {store.RESULTS}; accepted: a directory "
            "written by `florence2-bench run --out DIR`"
        )
    return records


def cell_label(r: Record) -> str:
    """A readable name for a cell, such as "base <CAPTION> fp32 bs1 cpu single-stream" (the scenario:
    one setting measured single-stream and offline is two cells)."""
    known = ["?" if part is None else part for part in (r.variant, r.task, r.dtype, r.batch_size, r.device)]
    return " ".join(map(str, (*known[:3], f"bs{known[3]}", known[4], *([r.scenario] if r.scenario else []))))


def cell_labels(records: Iterable[Record]) -> dict[str, str]:
    """Labels by cell id; cells that share one (other beams, attention...) get their id appended."""
    named = [(r.cell_id, cell_label(r)) for r in records]
    counted = Counter(label for _, label in named)
    return {cell_id: label + (f" [{cell_id[:8]}]" if counted[label] > 1 else "") for cell_id, label in named}


# The record fields that make up a cell's identity, in the order a reader scans them.
CELL_AXES = (
    "variant", "task", "dataset", "device", "dtype", "batch_size", "scenario", "backend", "weights", "attn",
    "compile", "num_beams", "max_new_tokens", "n_images",
)


def _values(records: Iterable[Record], axis: str) -> list[str]:
    return sorted({str(getattr(r, axis)) for r in records})


def nothing_comparable(base: dict[str, Record], cur: dict[str, Record], env_warnings: list[str]) -> str:
    """One line: no cell matched, and which axes (and environment facts) differ between the runs."""
    differ = []
    for axis in CELL_AXES:
        a, b = _values(base.values(), axis), _values(cur.values(), axis)
        if a != b:
            differ.append(f"{axis} {', '.join(a)} (baseline) vs {', '.join(b)} (current)")
    settings = {side: [r.settings.to_dict() for r in records.values()] for side, records in (("a", base), ("b", cur))}
    for key in sorted({k for side in settings.values() for s in side for k in s}):
        a, b = (sorted({str(s.get(key)) for s in settings[side]}) for side in ("a", "b"))
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
    The bootstrap of each cell is seeded from ``seed`` and its sample counts (``bootstrap_ratios``), so a
    verdict does not depend on which other cells are in the runs. Raises UsageError for a missing or empty
    run directory.
    """
    base_records, cur_records = _load(baseline, "baseline"), _load(current, "current")
    old = [name for name, records in (("baseline", base_records), ("current", cur_records))
           if any(r.extra.converted_from_schema for r in records.values())]
    if len(old) == 1:
        raise UsageError(
            f"the {old[0]} run directory holds schema-1 records (latency was the amortised per-image time and cell "
            "ids had no scenario), so no cell matches the other run's; accepted: two run directories of the same "
            "schema (regenerate the old one with this version)"
        )
    resolved = resolve_thresholds(thresholds)
    labels = cell_labels({**cur_records, **base_records}.values())
    matched = [(cell_id, base, cur_records[cell_id]) for cell_id, base in base_records.items() if cell_id in cur_records]
    estimates = cell_estimates(
        [(cell_id, samples_of(b), samples_of(c), batch_of(b), batch_of(c)) for cell_id, b, c in matched
         if (b.status, c.status) == ("ok", "ok")], seed, n_boot)
    rows: list[Row] = []
    newly_failed, accuracy_skipped = [], []
    for cell_id, base, cur in matched:
        if (why := unmeasured_accuracy(base, cur)) is not None:
            accuracy_skipped.append(f"{labels[cell_id]}: {why}")
        rows += compare_records(base, cur, labels[cell_id], resolved, estimates.get(cell_id))
        if base.status == "ok" and cur.status in FAILED_STATUSES:
            newly_failed.append(f"{labels[cell_id]}: {cur.status}: {cur.error or 'no message'}")
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
