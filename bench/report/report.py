"""The HTML report: what to buy and run, per task and device kind, and the measurements behind it.

One self-contained file (plotly.js inlined once, images as data URIs, no external URL) rendered with
jinja2 and autoescaping on, so a caption, label, variant name or error message shows as text. The page
opens with the answer (``bench.report.answer``: devices, cost and p99 for the demand), then the decision (the
best setting per goal, with the interval of its judged figure, flagged when unstable or invalid), the
environment (collapsed), the regression check when a baseline is given, and the charts.

Every figure is labelled by how it was obtained: *measured* (by this run), *derived* (computed from
measured figures and a price table whose source is printed beside each cost) or *reported* (paper /
model card). Latency is request latency, what one request waits (``latency_ms``); a bound judges the
p90 of single-stream cells and the p99 of server cells, and never an offline cell, which is judged on
throughput only. The amortised time per image (``time_per_image_ms``) is always named so.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.accuracy.metrics import TASK_BENCHMARKS
from bench.core.errors import UsageError
from bench.core.paths import Writer, distinct_dirs, write_all
from bench.pages.page import format_number, render, write_html
from bench.report import answer as answers
from bench.report import (
    answer_chart,
    capacity_options,
    chart_style,
    comparability,
    decision,
    examples,
    method,
    report_charts,
    report_table,
)
from bench.report.option import SUSPECT
from bench.report.prices import DEFAULT_PRICES, HOURS_PER_MONTH, PriceTable, load_prices
from bench.report.question import MAX_UTILISATION_DEFAULT, PERCENTILE_DEFAULT
from bench.report.report_rows import (
    Row,
    Run,
    device_name,
    load_runs,
    lower_is_better,
    metric_label,
    primary_metric,
)
from bench.report.report_rows import kinds_of as _kinds
from bench.report.report_rows import number as _num
from bench.report.report_rows import tasks_of as _tasks
from bench.report.uncertainty import ALTERNATIVE_FACTOR, STABLE_HALF_WIDTH, samples_needed
from bench.results import dig as _get
from bench.results import store, value

__all__ = [
    "DEFAULT_PRICES",
    "PriceTable",
    "build_report",
    "device_name",
    "load_prices",
    "load_runs",
    "lower_is_better",
    "primary_metric",
]

REPORTED_LABEL = "reported (paper/model card)"

# ---------------------------------------------------------------------------------------------
# regression section: compare's own Comparison, rendered as the CLI prints it


def _regression(baseline: Path | None, current: Path) -> dict[str, Any] | None:
    if baseline is None:
        return None
    if not (Path(baseline) / store.RESULTS).is_file():
        raise UsageError(
            f"no {store.RESULTS} in baseline {baseline}; accepted: a run directory written by `run`"
        )
    try:
        from bench.regression.compare import compare_dirs
    except ImportError as exc:
        return {"unavailable": f"regression compare unavailable (bench.regression.compare could not be imported: {exc})"}
    try:
        comparison = compare_dirs(Path(baseline), Path(current))
    except UsageError as exc:  # compare refuses the pair (e.g. another record schema): say why, keep the report
        return {"baseline": str(baseline), "refused": str(exc)}
    return {"baseline": str(baseline), "comparison": comparison, "columns": comparison.columns}


# ---------------------------------------------------------------------------------------------
# summary


def _weights_badge(rows: list[Row]) -> tuple[str, str]:
    """Accuracy is badged as measured only when every cell ran pretrained weights and some accuracy was
    scored (``Row.acc``); random weights, unknown weights or no score never are."""
    modes = {r.rec.weights for r in rows}
    if not rows:
        return "NO CELLS", "badge-random"
    if modes == {"random"}:
        return "RANDOM WEIGHTS — accuracy not measured", "badge-random"
    if modes == {"pretrained"}:
        if any(r.acc is not None for r in rows if r.ok):
            return "PRETRAINED WEIGHTS — accuracy measured", "badge-pretrained"
        return "PRETRAINED WEIGHTS — accuracy not measured (no cell scored)", "badge-mixed"
    if "pretrained" not in modes:
        return f"WEIGHTS {', '.join(sorted(str(m) for m in modes))} — accuracy not measured", "badge-random"
    return "MIXED WEIGHTS — only pretrained-weight cells have accuracy", "badge-mixed"


def _distinct(rows: list[Row], key: str) -> str:
    return ", ".join(str(v) for v in dict.fromkeys(getattr(r.rec, key) for r in rows)) or "–"


def _why_unstable(r: Row) -> str:
    return r.uncertainty.text if r.uncertainty else "no interval"


def _summary(runs: list[Run], rows: list[Row]) -> dict[str, Any]:
    statuses = Counter(str(r.rec.status) for r in rows)
    where = []
    for run in runs:
        kinds = ", ".join(k.label for k in _kinds(run.rows))
        host = _get(run.env, "hostname") or _get(run.env, "host") or _get(run.env, "platform", "node")
        where.append({"run": run.name, "path": str(run.path), "host": host, "devices": kinds})
    return {
        "what": [
            ("variants", _distinct(rows, "variant")),
            ("tasks", _distinct(rows, "task")),
            ("datasets", _distinct(rows, "dataset")),
            ("images per cell", _distinct(rows, "n_images")),
            ("scenarios", _distinct(rows, "scenario")),
            ("devices", ", ".join(k.label for k in _kinds(rows)) or "–"),
            ("dtypes", _distinct(rows, "dtype")),
            ("batch sizes", _distinct(rows, "batch_size")),
            ("attention", _distinct(rows, "attn")),
            ("weights", _distinct(rows, "weights")),
        ],
        "where": where,
        "statuses": sorted(statuses.items()),
        "failed": [r for r in rows if r.rec.status != "ok"],
        "unstable": [(r, _why_unstable(r)) for r in rows if r.unstable],
        "invalid": [r for r in rows if r.ok and r.invalid],
    }


def _reported_key(task: str, rows: list[Row]) -> str | None:
    """The reported benchmark a task's cells stand beside: the records' own, else the task's first."""
    for r in rows:
        key = value(r.rec, "extra.reported_benchmark.key")
        if r.task == task and isinstance(key, str):
            return key
    return next((b.key for (_, t), b in TASK_BENCHMARKS.items() if t == task), None)


# ---------------------------------------------------------------------------------------------
# entry point


def _format_number(value: Any, digits: int = 3) -> str:
    return format_number(value, digits)


def build_report(
    run_dirs: list[Path],
    out: Path,
    *,
    latency_bound_ms: float | None = None,
    accuracy_floor: float | None = None,
    prices: Path | None = None,
    baseline: Path | None = None,
    title: str | None = None,
    demand_qps: float | None = None,
    answer: Path | None = None,
    latency_percentile: float = PERCENTILE_DEFAULT,
    max_utilisation: float = MAX_UTILISATION_DEFAULT,
    quality_gate: float | None = None,
    writer: Writer = write_all,
) -> Path:
    """Render one self-contained HTML report for one or several run directories; returns ``out``.

    The question (``bench.report.answer.Question``: bound, percentile, demand, utilisation, quality gate, floor) is
    answered once and every section reads that answer; with ``answer`` it is also written there as JSON. A
    directory named twice (``RUN ./RUN/``) counts once; ``writer`` is the seam for a full disk."""
    question = answers.Question(latency_bound_ms, latency_percentile, demand_qps, max_utilisation, quality_gate,
                                accuracy_floor)
    run_dirs = distinct_dirs(run_dirs)
    price_table = load_prices(prices)
    runs = load_runs(run_dirs, price_table)
    rows = [r for run in runs for r in run.rows]
    charted, charted_note = chart_style.chart_rows(rows)
    styles = chart_style.Styles(charted)
    charts = report_charts.build_charts(charted, latency_bound_ms, {t: _reported_key(t, rows) for t in _tasks(rows)},
                                        REPORTED_LABEL, styles)
    found = answers.answer(rows, question)
    if answer is not None:
        answers.write_answer(Path(answer), found, question, writer=writer)
    context = {
        "title": title or f"Florence-2 benchmark: {', '.join(run.name for run in runs)}",
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "charts": charts,
        "chart_keys": styles.keys,
        "charted_note": charted_note,
        "max_label": chart_style.MAX_LABEL,
        "answer_charts": answer_chart.charts(found, styles),
        **_answer_context(rows, found, question),
        **_runs_context(runs, rows, price_table, baseline, run_dirs[0]),
        **_tables_context(rows, latency_bound_ms),
    }
    return write_html(Path(out), render("report.html.j2", **context), writer)


def _answer_context(rows: list[Row], found: list[answers.Answer], question: answers.Question) -> dict[str, Any]:
    """The page's sections that read the answer: Answer, Decision, Recommendation and the rules in force."""
    return {
        "decisions": decision.decide(rows, question.bound_ms, found),
        "question": question,
        "answers": found,
        "answer_tasks": list(dict.fromkeys(a.task for a in found)),
        "demand_qps": question.demand_qps,
        "hours_per_month": HOURS_PER_MONTH,
        "cost_rounding": answers.ROUNDING,
        "server_basis": capacity_options.SERVER_BASIS,
        "predicted_basis": capacity_options.PREDICTED_BASIS,
        "stability": {"half_width": STABLE_HALF_WIDTH, "factor": ALTERNATIVE_FACTOR,
                      "needed": {s: samples_needed(q) for s, q in (("median", 0.5), ("p90", 0.9), ("p99", 0.99))}},
        "recommendations": [decision.recommend(rows, t, found, question) for t in _tasks(rows)],
        "latency_bound_ms": question.bound_ms,
        "accuracy_floor": question.accuracy_floor,
        "rules": method.rules(rows, question),
        "suspect": SUSPECT,
    }


def _runs_context(runs: list[Run], rows: list[Row], price_table: PriceTable, baseline: Path | None,
                  current: Path) -> dict[str, Any]:
    """The sections about the runs themselves: what ran where, their environments and how they differ, the
    method, prices, example outputs and the regression check against ``baseline``."""
    badge, badge_class = _weights_badge(rows)
    facts = comparability.comparability(runs)
    return {
        "badge": badge,
        "badge_class": badge_class,
        "runs": runs,
        "rows": rows,
        "ok_rows": [r for r in rows if r.ok],
        "several_runs": len(runs) > 1,
        "summary": _summary(runs, rows),
        "prices": price_table,
        "unpriced": [k.label for k in _kinds([r for r in rows if r.ok and r.price is None])],
        "facts": facts,
        "differing": [f for f in facts if f.differs],
        "envs": [(run.name, comparability.env_table(run.env)) for run in runs],
        "method": method.method(rows, price_table),
        "examples": examples.examples(runs),
        "regression": _regression(baseline, current),
        "random_only": {r.rec.weights for r in rows} == {"random"},
        "any_random": any(r.weights == "random" for r in rows),
        "reported_label": REPORTED_LABEL,
        "reported": _reported_table(rows),
        "metric_label": metric_label,
    }


def _tables_context(rows: list[Row], bound: float | None) -> dict[str, Any]:
    """The all-cells and the energy and cost tables (sent as data blocks), with the fp32-agreement notes."""
    agreement = method.agreement_label(rows)
    return {
        "agreement_label": agreement,
        "agreement_differs": method.agreement_differs(rows),
        "cells_table": report_table.script_block(report_table.table_data(rows, bound, agreement)),
        "cells_table_headers": report_table.headers(agreement),
        "cost_table": report_table.script_block(report_table.table_data(
            [r for r in rows if r.ok], bound, "", report_table.COST_COLUMNS)),
        "cost_table_headers": report_table.headers("", report_table.COST_COLUMNS),
    }


def _reported_table(rows: list[Row]) -> list[dict[str, Any]]:
    """Per variant: params as built here, measured results, and reported ones, kept apart."""
    variants: dict[str, Any] = {}
    params: dict[str, float | None] = {}
    measured: dict[str, dict[str, list[float]]] = {}
    reported: dict[str, dict[str, Any]] = {}
    for r in rows:
        name = str(r.rec.variant)
        variants.setdefault(name, r.rec.variant)
        params[name] = params.get(name) or _num(r.rec.params)
        mine, theirs = measured.setdefault(name, {}), reported.setdefault(name, {})
        if r.ok and r.acc is not None:
            mine.setdefault(f"{r.rec.task} {r.metric} ({r.rec.dataset})", []).append(r.acc)
        for key, figure in (value(r.rec, "extra.reported") or {}).items():
            if _num(figure) is not None:
                theirs[str(key)] = figure
    out = []
    for name, variant in variants.items():
        summary = {
            k: (f"{_format_number(min(vals))}–{_format_number(max(vals))} over {len(vals)} settings")
            if len(vals) > 1 and min(vals) != max(vals)
            else _format_number(vals[0])
            for k, vals in measured[name].items()
        }
        if params[name] or summary or reported[name]:
            out.append({"variant": variant, "params": params[name], "measured": summary, "reported": reported[name]})
    return out
