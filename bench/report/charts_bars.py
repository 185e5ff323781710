"""The report's charts of one bar, box or stack per cell, best first: time per stage, memory, request
latency distributions, energy and cost, with the conventions of ``bench.report.chart_style``."""

from __future__ import annotations

import math
from collections.abc import Callable

from bench.pages.page import FLAG_COLOR, Chart, axis_type, figure_html
from bench.pages.page import plot_text as _t
from bench.report.chart_style import Styles, hover, leading
from bench.report.report_rows import MEMORY_FIELDS, STAGES, Row, group_by
from bench.results import figure, value

STAGE_COLORS = ("#9ecae9", "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1")
MEMORY_COLORS = ("#bab0ac", "#4e79a7", "#76b7b2", "#e15759", "#f28e2b")


def _bars(
    rows: list[Row],
    styles: Styles,
    value: Callable[[Row], float | None],
    *,
    title: str,
    axis: str,
    higher_is_better: bool,
    hover: Callable[[Row, float], str],
    note: str = "",
) -> Chart | None:
    """One bar per cell, sorted best first (top), one legend entry per series, flagged bars outlined red."""
    import plotly.graph_objects as go

    items = [(v, r) for r in rows if (v := value(r)) is not None]
    if not items:
        return None
    items.sort(key=lambda vr: -vr[0] if higher_is_better else vr[0])
    items, cut = leading(items, "cells")
    note = f"{note} {cut}".strip()
    labels = {id(r): _t(styles.cell(r)) for _, r in items}
    fig = go.Figure()
    for members in group_by(items, lambda vr: (vr[1].task, vr[1].series)).values():
        first = members[0][1]
        fig.add_trace(
            go.Bar(
                y=[labels[id(r)] for _, r in members],
                x=[v for v, _ in members],
                orientation="h",
                name=_t(styles.series_label(first)),
                marker={
                    "color": styles.color(first),
                    "pattern": {"shape": styles.pattern(first)},
                    "line": {"color": [FLAG_COLOR if r.flags else "rgba(0,0,0,0)" for _, r in members],
                             "width": [3 if r.flags else 0 for _, r in members]},
                },
                hovertext=[hover(r, v) for v, r in members],
                hoverinfo="text",
            )
        )
    fig.update_layout(
        title=_t(title),
        barmode="overlay",
        xaxis={"title": _t(axis), "type": axis_type(v for v, _ in items)},
        yaxis={"categoryorder": "array", "categoryarray": [labels[id(r)] for _, r in items], "autorange": "reversed"},
    )
    flag = " Bars outlined in red and labels with ⚠ are unstable or invalid cells." if any(r.flags for _, r in items) else ""
    return Chart(title, figure_html(fig, max(280, 120 + 26 * len(items))), (note + flag).strip())


def stage_charts(rows: list[Row], styles: Styles) -> list[Chart]:
    """One stacked chart per device kind: a stack on a log axis would misdraw the stages' shares, and
    one device kind's times rarely span 30x (where they do, the axis is still made logarithmic)."""
    sel = [r for r in rows if r.ok and r.stages is not None]
    kinds = list(dict.fromkeys(r.kind for r in sel))
    return [
        _stage_chart([r for r in sel if r.kind == kind], styles, kind.label if len(kinds) > 1 else "")
        for kind in kinds
    ]


def _stage_chart(sel: list[Row], styles: Styles, kind: str) -> Chart:
    import plotly.graph_objects as go

    sel, cut = leading(sorted(sel, key=lambda r: sum(r.stages.values())), "cells (by total)")
    labels = [_t(styles.cell(r)) for r in sel]
    fig = go.Figure()
    for (key, name), color in zip(STAGES, STAGE_COLORS, strict=True):
        fig.add_trace(
            go.Bar(y=labels, x=[r.stages[key] for r in sel], name=_t(name), orientation="h", marker={"color": color})
        )
    # a batch of one image waits exactly its time per image
    alone = [r.traits.latency_per == "batch" and r.rec.batch_size == 1 for r in sel]
    ticks = [(label, r.time_per_image_p50 or (r.p50 if one else None))
             for label, r, one in zip(labels, sel, alone, strict=True)]
    ticks = [(label, v) for label, v in ticks if v]
    if ticks:
        fig.add_trace(
            go.Scatter(
                y=[t[0] for t in ticks],
                x=[t[1] for t in ticks],
                mode="markers",
                marker={"symbol": "line-ns-open", "size": 18, "color": "black"},
                name="amortised time per image, p50",
            )
        )
    totals = [sum(r.stages.values()) for r in sel]
    title = "median time per stage, per image (amortised over the batch)" + (f": {kind}" if kind else "")
    fig.update_layout(
        barmode="stack",
        title=_t(title),
        xaxis={"title": "milliseconds per image (medians of each stage, measured)", "type": axis_type(totals)},
        yaxis={"autorange": "reversed"},
    )
    bases = sorted({str(value(r.rec, "timing.stages_basis")) for r in sel if value(r.rec, "timing.stages_basis")})
    note = (
        "Stage times are per image, amortised over the batch"
        + (f" (the records say: {'; '.join(bases)})" if bases else "")
        + "; they are not request latencies. The vision encoder runs inside time-to-first-token, so the "
        "stack shows vision and ttft − vision separately; preprocess + ttft + decode + postprocess ≈ the "
        "amortised time per image (black tick). Each stage is its own median, so the stack need not equal it. "
        + cut
    ).strip()
    return Chart(title, figure_html(fig, max(280, 120 + 26 * len(sel))), note)


def memory_chart(rows: list[Row], styles: Styles) -> Chart | None:
    import plotly.graph_objects as go

    def peak(r: Row) -> float:
        return r.peak_memory[0] if r.peak_memory else 0.0

    sel = [r for r in rows if r.ok and any(figure(r.rec, f"memory.{k}") for k, _ in MEMORY_FIELDS)]
    if not sel:
        return None
    sel.sort(key=peak)
    sel, cut = leading(sel, "cells (smallest peak first)")
    labels = [_t(styles.cell(r)) for r in sel]
    fig = go.Figure()
    values_all: list[float] = []
    for (key, name), color in zip(MEMORY_FIELDS, MEMORY_COLORS, strict=True):
        values = [(figure(r.rec, f"memory.{key}") or 0) / 2**20 or None for r in sel]
        if any(values):
            values_all += [v for v in values if v]
            fig.add_trace(go.Bar(y=labels, x=values, name=_t(name), orientation="h", marker={"color": color}))
    fig.update_layout(
        barmode="group",
        title="memory per setting (sorted by the peak that limits it: GPU allocation on GPUs, host RSS on CPUs)",
        xaxis={"title": "MiB (measured peaks)", "type": axis_type(values_all)},
        yaxis={"autorange": "reversed"},
    )
    return Chart("memory", figure_html(fig, max(280, 120 + 40 * len(sel))), cut)


def distribution_chart(rows: list[Row], styles: Styles) -> Chart | None:
    import plotly.graph_objects as go

    def samples(r: Row) -> list[float]:
        return [s for s in r.rec.samples_ms if not math.isnan(s)]

    sel = [r for r in rows if r.ok and samples(r)]
    if not sel:
        return None
    sel.sort(key=lambda r: sorted(samples(r))[len(samples(r)) // 2])
    sel, cut = leading(sel, "cells (by median)")
    fig = go.Figure()
    for r in sel:
        fig.add_trace(
            go.Box(
                x=samples(r),
                name=_t(styles.cell(r)),
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                marker={"size": 4, "color": styles.color(r)},
                line={"color": FLAG_COLOR if r.flags else styles.color(r)},
                showlegend=False,
            )
        )
    fig.update_layout(
        title="request latency: every raw sample (what one request waited)",
        xaxis={"title": "milliseconds (measured request latency)",
               "type": axis_type(s for r in sel for s in samples(r))},
        yaxis={"autorange": "reversed"},
    )
    note = ("Sorted by median. A box drawn in red (label ⚠) is an unstable or invalid cell. An offline request "
            f"waits for its whole batch; a server request's wait includes queueing. {cut}").strip()
    return Chart("request latency distributions", figure_html(fig, max(280, 120 + 26 * len(sel))), note)


def energy_charts(rows: list[Row], styles: Styles) -> list[Chart]:
    ok = [r for r in rows if r.ok]

    def source(r: Row) -> str:
        return str(value(r.rec, "energy.source") or "")

    charts = [
        _bars(ok, styles, lambda r: r.joules, title="energy per image (measured)", axis="joules per image",
              higher_is_better=False,
              hover=lambda r, v: hover(r, f"{v:.4g} J per image", f"source: {source(r)}")),
        _bars(ok, styles, lambda r: r.images_per_joule, title="images per joule (measured; higher is better)",
              axis="images per joule", higher_is_better=True,
              hover=lambda r, v: hover(r, f"{v:.4g} images per joule", f"source: {source(r)}")),
    ]
    return [c for c in charts if c]


def cost_charts(rows: list[Row], styles: Styles) -> list[Chart]:
    ok = [r for r in rows if r.ok and r.traits.closed_loop]
    chart = _bars(
        ok, styles, lambda r: r.cost_per_million,
        title="cost per million images (derived: price per hour ÷ measured throughput)",
        axis="USD per million images (derived)", higher_is_better=False,
        hover=lambda r, v: hover(r, f"${v:.4g} per million images", f"{r.ips:.4g} images/s measured",
                                  f"price: {r.price.text}"),
        note="Batch work with the device kept busy (offline and single-stream cells). Prices used: "
             + "; ".join(dict.fromkeys(f"{r.kind.label}: {r.price.text}" for r in ok if r.price)) + ".",
    )
    return [chart] if chart else []
