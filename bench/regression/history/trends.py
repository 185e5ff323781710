"""The trend report: one chart per task and metric over the history's runs in commit order.

One line per cell and machine class (classes never share a line), the commit id, date and class in
each point's hover, and every step that ``steps`` lists marked on its line (a triangle at the first
run after it, pointing the way the metric moved). Self-contained like the run report: plotly.js
inlined once, the run report's stylesheet and chart settings (``bench.pages.page``), no external URL.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.paths import write_output
from bench.pages.chart_keys import short_labels
from bench.regression import comparison, gates
from bench.regression.history.detect import HistoryCheck, Series, Step, all_series, check, steps, unscale
from bench.regression.history.entries import Entry, load
from bench.regression.history.levels import CELL_LEVEL_RULE, MIN_SEGMENT, steps_method_text

STEP_COLOURS = {"regressed": "#b3261e", "improved": "#1b6e3a"}
MAX_TICKS = 30
TOP_LINES = 5


def _series_key(s: Series) -> tuple[str, str]:
    return (s.machine.id, s.cell_id)


def _labels(series: list[Series]) -> dict[tuple[str, str], str]:
    """A short label per (class, cell), the same in every chart: the words of compare's cell label that
    tell the page's cells apart, with the class id where there are several classes (``chart_keys``)."""
    parts = {}
    for s in series:
        words = [(f"word{n}", word) for n, word in enumerate(s.label.split())]
        parts.setdefault(_series_key(s), [("machine", s.machine.id), *words])
    return short_labels(parts)


def _verdict(result: HistoryCheck) -> dict[str, Any]:
    """The newest run's `history check` verdict for the top of the page: its summary line, its state (which
    the badge's colour shows: NOT JUDGED and INCONCLUSIVE are never drawn as OK) and its regressed, then
    improved, then inconclusive rows, biggest change first, as the CLI words them."""
    def size(r: comparison.Row) -> float:
        return abs((r.ratio or 1.0) - 1.0) if r.kind == "ratio" else abs(r.ratio or 0.0)

    order = ("regressed", "improved", "inconclusive")
    flagged = sorted((r for r in result.rows if r.verdict in order), key=lambda r: (order.index(r.verdict), -size(r)))
    lines = [
        f"{r.verdict}: {r.label} {r.metric} {comparison.format_change(r.kind, r.ratio)} "
        f"({comparison.value_text(r.metric, r.baseline)} -> {comparison.value_text(r.metric, r.current)}; {r.note})"
        for r in flagged[:TOP_LINES]
    ]
    lines += [f"newly failed: {item}" for item in result.newly_failed]
    return {
        "summary": result.summary(),
        "state": result.state,
        "lines": lines,
        "more": max(0, len(flagged) - TOP_LINES),
        "method": result.method_text(),
        "table": result.to_table(),
    }


def _display(metric: str, value: float) -> float:
    """A value in the unit the chart's axis states (bytes as MiB)."""
    return value / _divisor(metric)


def _divisor(metric: str) -> int:
    return 2**20 if gates.metric_spec(metric).unit == "bytes" else 1


HOVER_FORMATS = {"bytes": "%{y:.1f} MiB", "ms": "%{y:.1f} ms", "img/s": "%{y:.3g} img/s"}
"""A point's value in its hover, in the digits ``comparison.value_text`` gives it (bytes shown as MiB)."""


def _hover_value(metric: str) -> str:
    return HOVER_FORMATS.get(gates.metric_spec(metric).unit or "", "%{y:.2f}")


def _axis_title(metric: str) -> str:
    unit = gates.metric_spec(metric).unit
    return f"{metric} ({'MiB' if unit == 'bytes' else unit})" if unit else metric


def tick_labels(entries: list[Entry]) -> list[str]:
    """One x label per run, never two alike: the commit and the day; the time too where a label would
    repeat (a commit measured twice that day), and the run's position where even that repeats."""
    from bench.pages.page import plot_text as _t

    def label(entry: Entry, width: int) -> str:
        commit = entry.commit[:7] + ("+dirty" if entry.dirty else "")
        return f"{_t(commit)}<br>{_t(entry.date[:width].replace('T', ' '))}"

    day, minute = [label(e, 10) for e in entries], [label(e, 16) for e in entries]
    days, minutes = Counter(day), Counter(minute)
    return [d if days[d] == 1 else m if minutes[m] == 1 else f"{m} #{i}"
            for i, (d, m) in enumerate(zip(day, minute, strict=True))]


def _ticks(entries: list[Entry]) -> dict[str, Any]:
    every = max(1, -(-len(entries) // MAX_TICKS))
    shown = list(range(0, len(entries), every))
    labels = tick_labels(entries)
    return {"tickvals": shown, "ticktext": [labels[i] for i in shown], "tickangle": -45}


def _step_trace(s: Series, metric: str, mine: list[Step]) -> Any:
    """The markers of a series' steps: up or down triangles coloured by verdict, with the step's figures."""
    import plotly.graph_objects as go

    from bench.pages.page import plot_text as _t

    return go.Scatter(
        x=[st.index for st in mine],
        y=[_display(metric, st.after) for st in mine],
        mode="markers",
        name="step",
        legendgroup=f"{s.machine.id}{s.cell_id}",
        showlegend=False,
        marker={
            "size": 16,
            "symbol": [
                "triangle-up" if st.change > (1 if st.kind == "ratio" else 0) else "triangle-down"
                for st in mine
            ],
            "color": [STEP_COLOURS[st.verdict] for st in mine],
            "line": {"width": 1, "color": "#1d2330"},
        },
        text=[
            f"step ({st.verdict}): {_t(st.change_text())}, {st.z:.1f} se<br>{_t(s.label)}<br>"
            f"first commit after: {_t(st.commit[:12])}<br>{_t(st.date[:19])}"
            for st in mine
        ],
        hovertemplate="%{text}<extra></extra>",
    )


def _chart(
    title: str,
    metric: str,
    series: list[Series],
    found: dict[tuple[str, str, str], list[Step]],
    entries: list[Entry],
    colors: Any,
    labels: dict[tuple[str, str], str],
) -> Any:
    import plotly.graph_objects as go

    from bench.pages.page import Chart, axis_type
    from bench.pages.page import figure_html as _fig_html
    from bench.pages.page import plot_text as _t

    fig = go.Figure()
    values = []
    commits, divisor = np.array([_t(e.short) for e in entries]), _divisor(metric)
    for s in series:
        xs = np.array([p.index for p in s.points], dtype=np.int32)
        ys = np.array([unscale(s.kind, p.x) for p in s.points]) / divisor
        values.append(ys)
        fig.add_trace(
            go.Scatter(
                x=xs,  # numpy arrays: written as binary (base64), a tenth of the bytes of decimal text
                y=ys,
                mode="lines+markers",
                line={"color": colors(_series_key(s))},
                marker={"color": colors(_series_key(s))},
                name=_t(labels[_series_key(s)]),
                customdata=commits[xs],  # an array: plotly validates a list of strings item by item
                hovertemplate=f"{_t(s.label)}<br>{_t(metric)} {_hover_value(metric)}<br>run %{{x}}, commit "
                f"%{{customdata}} (the runs table below gives its date)<br>{_t(s.machine.label)}<extra></extra>",
                legendgroup=f"{s.machine.id}{s.cell_id}",
            )
        )
        mine = found.get((s.machine.id, s.cell_id, metric), [])
        if mine:
            fig.add_trace(_step_trace(s, metric, mine))
    fig.update_layout(
        title={"text": _t(title), "font": {"size": 14}},
        xaxis={"title": {"text": "run (commit order)"}, **_ticks(entries)},
        yaxis={"title": {"text": _t(_axis_title(metric))}, "type": axis_type(np.concatenate([[], *values]))},
        hovermode="closest",
    )
    height = 380 + 18 * max(0, len(series) - 6)
    return Chart(title, _fig_html(fig, height), "")


def _classes(entries: list[Entry]) -> list[dict[str, Any]]:
    """Each machine class of the history, in order of first run: its run count and first and last dates."""
    out = []
    for machine in dict.fromkeys(e.machine for e in entries):
        runs = [e for e in entries if e.machine == machine]
        out.append({"machine": machine, "runs": len(runs), "first": runs[0].date[:19], "last": runs[-1].date[:19]})
    return out


def build_trends(
    history: Path, out: Path, thresholds: dict[str, float] | None = None, *, title: str | None = None
) -> Path:
    """Render the trend report of a history directory to ``out``; returns ``out``."""
    import plotly.offline
    from markupsafe import Markup

    from bench.pages.page import LOG_SPAN, Palette
    from bench.pages.page import environment as _environment

    entries = load(Path(history))
    series = all_series(entries)
    found = steps(entries, thresholds, series=series)
    by_series: dict[tuple[str, str, str], list[Step]] = {}
    for st in found:
        by_series.setdefault((st.machine.id, st.cell_id, st.metric), []).append(st)
    colors = Palette()  # one colour per class and cell, the same in every chart of the page
    for s in series:
        colors(_series_key(s))
    labels = _labels(series)
    tasks = list(dict.fromkeys(s.task for s in series))
    charts = []
    for task in tasks:
        for source in ("run", "pytest-benchmark"):
            mine = [s for s in series if s.task == task and s.source == source]
            for metric in dict.fromkeys(s.metric for s in mine):
                heading = f"{task} · {metric}" + (
                    " · pytest-benchmark (ms per round)" if source != "run" else ""
                )
                charts.append(
                    _chart(heading, metric, [s for s in mine if s.metric == metric], by_series, entries, colors, labels)
                )
    context = {
        "title": title or f"Florence-2 benchmark history: {Path(history).name}",
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "history": str(history),
        "entries": entries,
        "classes": _classes(entries),
        "steps": [
            {
                "step": st,
                "before": comparison.value_text(st.metric, st.before),
                "after": comparison.value_text(st.metric, st.after),
            }
            for st in sorted(found, key=lambda st: (st.machine.id, st.label, st.metric, st.index))
        ],
        "charts": charts,
        "min_segment": MIN_SEGMENT,
        "log_span": LOG_SPAN,
        "verdict": _verdict(check(entries, thresholds)),
        "steps_method": steps_method_text(),
        "cell_level_rule": CELL_LEVEL_RULE,
        "keys": [{"label": labels[k], "cell": f"{s.label} · class {s.machine.id}", "color": colors(k)}
                 for k, s in {_series_key(s): s for s in series}.items()],
        "plotlyjs": Markup(plotly.offline.get_plotlyjs()),
    }
    text = _environment().get_template("history.html.j2").render(**context)
    return write_output(out, text)
