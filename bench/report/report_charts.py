"""The report's charts, built from its rows (``bench.report.report.Row``) with the conventions of ``bench.pages.page``.

Every chart follows the same rules, so a reader learns them once:

- colour = device and variant (a setting's *family*), never repeated within a chart; marker symbol and
  line dash = dtype; bar hatching = dtype;
- a line joins the batch sizes of one setting (batch 1 is single-stream, larger batches offline: one line);
- a value axis is logarithmic when its values span more than 30x;
- bars are sorted, best first, one legend entry per series;
- unstable cells and invalid server runs are marked in every chart: a red ring around a point, a red
  outline and a "⚠" on a bar or box label, a red cross on a step of a latency-vs-QPS curve;
- latency is request latency (what one request waits); the amortised time per image is named so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from bench.core.numbers import finite_number, is_finite
from bench.pages.chart_keys import MAX_LABEL, Key, short_labels
from bench.pages.page import DTYPE_DASHES, DTYPE_SYMBOLS, FLAG_COLOR, Chart, Palette, axis_type, figure_html
from bench.pages.page import plot_text as _t
from bench.report.report_rows import _ALONG_A_LINE as ALONG_A_LINE
from bench.report.report_rows import (
    MEMORY_FIELDS,
    STAGES,
    Row,
    group_by,
    lower_is_better,
    metric_label,
)
from bench.results import figure, value

FLAG_NAME = "⚠ unstable or invalid (red ring)"
FLAG_MARK = " ⚠"
BATCH_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
DTYPE_PATTERNS = {"fp32": "", "fp16": "/", "bf16": ".", "int8": "+"}
CHART_CELLS = 400
"""Above this many finished cells the charts draw the cells of the ``LEADING_SERIES`` settings (a setting
without batch size and scenario, on one machine) with the highest throughput; every cell stays in the
all-cells table. Thousands of traces make a page that takes minutes to open and a chart nobody can read."""
LEADING_SERIES = 12
BAR_CELLS = 60
"""A chart of one bar, box or stack per cell draws at most this many cells, the best first."""
STAGE_COLORS = ("#9ecae9", "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1")
MEMORY_COLORS = ("#bab0ac", "#4e79a7", "#76b7b2", "#e15759", "#f28e2b")


class Styles:
    """The page's trace labels and colours, made once so a cell looks the same in every chart.

    Colour = series (a setting without batch size and scenario: one line), from a palette whose
    colours are checked apart; marker, dash and hatching = dtype. Labels are short (``chart_keys``):
    ``cell`` names one cell (a bar, a box), ``series_label`` one series (a legend entry); ``keys`` is the
    page's key table that maps each label to the full setting.
    """

    def __init__(self, rows: list[Row]) -> None:
        self.palette = Palette()
        plotted = [r for r in rows if r.ok]
        several = len(_tasks(plotted)) > 1

        def parts(r: Row) -> list[tuple[str, str]]:
            return [("task", r.task.strip("<>"))] * several + list(r.parts)

        order = sorted(plotted, key=lambda r: (r.kind.kind != "gpu", r.kind.kind != "cpu", r.kind.label, r.family))
        for r in order:
            self.palette(self._series_key(r))
        self._cells = short_labels({id(r): parts(r) for r in plotted}, MAX_LABEL - len(FLAG_MARK))
        series: dict[str, list[tuple[str, str]]] = {}
        for r in plotted:  # a series is the same setting in every task: the same label and colour
            series.setdefault(self._series_key(r), [p for p in r.parts if p[0] not in ALONG_A_LINE])
        self._series = short_labels(series, MAX_LABEL)
        self.keys = [
            Key(self._cells[id(r)], f"{r.task} · {r.setting}", self.color(r), self._series[self._series_key(r)])
            for r in plotted
        ]

    @staticmethod
    def _series_key(r: Row) -> str:
        return r.series

    def color(self, r: Row) -> str:
        return self.palette(self._series_key(r))

    def cell(self, r: Row) -> str:
        """A cell's trace label (at most MAX_LABEL characters with its flag mark)."""
        label = self._cells.get(id(r)) or r.setting[: MAX_LABEL - len(FLAG_MARK)]
        return label + (FLAG_MARK if r.flags else "")

    def series_label(self, r: Row) -> str:
        return self._series.get(self._series_key(r)) or r.series[:MAX_LABEL]

    @staticmethod
    def symbol(r: Row) -> str:
        return DTYPE_SYMBOLS.get(str(r.rec.dtype), "star")

    @staticmethod
    def dash(r: Row) -> str:
        return DTYPE_DASHES.get(str(r.rec.dtype), "longdash")

    @staticmethod
    def pattern(r: Row) -> str:
        return DTYPE_PATTERNS.get(str(r.rec.dtype), "x")


def chart_rows(rows: list[Row]) -> tuple[list[Row], str]:
    """The rows the charts draw (``CHART_CELLS``) and, where not all, a sentence that says which."""
    ok = [r for r in rows if r.ok]
    if len(ok) <= CHART_CELLS:
        return rows, ""
    best: dict[str, float] = {}
    for r in ok:
        best[r.series] = max(best.get(r.series, 0.0), r.ips or 0.0)
    leading = set(sorted(best, key=lambda s: -best[s])[:LEADING_SERIES])
    chosen = [r for r in ok if r.series in leading]
    return chosen, (
        f"{len(ok):,} cells finished, more than the {CHART_CELLS:,} a page can chart legibly: the charts draw the "
        f"{len(chosen):,} cells of the {len(leading)} settings (without batch size and scenario) with the highest "
        f"throughput, and charts of one bar or box per cell the best {BAR_CELLS} of them. Every cell is in the "
        "all-cells table."
    )


def _leading(items: list, what: str) -> tuple[list, str]:
    """The first ``BAR_CELLS`` of items sorted best first, and a note when some were left out."""
    if len(items) <= BAR_CELLS:
        return items, ""
    return items[:BAR_CELLS], f"The best {BAR_CELLS} of {len(items):,} {what} are drawn; the all-cells table has every one."


def _flagged(r: Row) -> bool:
    return bool(r.flags)


def _flag_suffix(r: Row) -> str:
    return f" ⚠ {', '.join(r.flags)}" if r.flags else ""


def _hover(r: Row, *lines: str) -> str:
    return "<br>".join([_t(r.label), *(_t(line) for line in lines if line), _t(_flag_suffix(r).strip())])


def _tasks(rows: Iterable[Row]) -> list[str]:
    return list(dict.fromkeys(r.task for r in rows))


def _ring(fig: Any, points: list[tuple[float, float]], shown: bool, **where: Any) -> bool:
    """Red rings around flagged points; one legend entry per chart. Returns whether it was shown."""
    import plotly.graph_objects as go

    if not points:
        return shown
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in points],
            y=[p[1] for p in points],
            mode="markers",
            marker={"symbol": "circle-open", "size": 20, "color": FLAG_COLOR, "line": {"width": 2}},
            name=FLAG_NAME,
            legendgroup="flag",
            showlegend=not shown,
            hoverinfo="skip",
        ),
        **where,
    )
    return True


def _bound_line(fig: Any, bound: float, span: list[float], vertical: bool, **where: Any) -> None:
    """The latency bound as a dashed line (a trace, so it works on log axes and has a legend entry)."""
    import plotly.graph_objects as go

    lo, hi = min(span), max(span)
    xy = {"x": [bound, bound], "y": [lo, hi]} if vertical else {"x": [lo, hi], "y": [bound, bound]}
    fig.add_trace(
        go.Scatter(
            **xy,
            mode="lines",
            line={"color": FLAG_COLOR, "dash": "dash", "width": 2},
            name=_t(f"latency bound {bound:g} ms"),
            hoverinfo="skip",
        ),
        **where,
    )


# ---------------------------------------------------------------------------------------------
# scatter and line charts


def _tradeoff_charts(rows: list[Row], styles: Styles, bound: float | None) -> list[Chart]:
    """Per task: throughput against the request latency a bound judges (p99 server, else p90)."""
    import plotly.graph_objects as go

    charts = []
    pts = [r for r in rows if r.ok and r.ips and r.latency(r.traits.statistic)]
    for task in _tasks(pts):
        mine = [r for r in pts if r.task == task]
        fig = go.Figure()

        def x_of(r: Row) -> float:
            return r.latency(r.traits.statistic)

        for members in group_by(mine, lambda r: r.series).values():
            members.sort(key=lambda r: (r.rec.batch_size or 0, r.scenario))
            fig.add_trace(
                go.Scatter(
                    x=[x_of(r) for r in members],
                    y=[r.ips for r in members],
                    mode="markers+text",
                    marker={"size": 11, "color": styles.color(members[0]), "symbol": styles.symbol(members[0])},
                    text=[_t(f"bs{r.rec.batch_size} {r.scenario}") for r in members],
                    textposition="top center",
                    textfont={"size": 9},
                    name=_t(styles.series_label(members[0])),
                    hovertext=[
                        _hover(r, f"request latency {r.traits.statistic} {x_of(r):.4g} ms",
                               f"{r.ips:.4g} images/s")
                        for r in members
                    ],
                    hoverinfo="text",
                )
            )
        _ring(fig, [(x_of(r), r.ips) for r in mine if _flagged(r)], False)
        xs, ys = [x_of(r) for r in mine], [r.ips for r in mine]
        if bound is not None:
            _bound_line(fig, bound, ys, vertical=True)
            xs = [*xs, bound]
        fig.update_layout(
            title=_t(f"{task}: throughput vs request latency (measured)"),
            xaxis={"title": "request latency, ms (p90; p99 for server cells)", "type": axis_type(xs)},
            yaxis={"title": "images per second (measured)", "type": axis_type(ys)},
        )
        note = (
            "Request latency is what one request waits: a single-stream request alone, each request of an "
            "offline batch the whole batch, a server request its queueing too. "
            + (f"The dashed line is the bound ({bound:g} ms): single-stream cells are judged by p90, server "
               "cells by p99; offline cells are judged on throughput only and never meet a bound."
               if bound is not None else "Give --latency-bound-ms to draw a bound.")
        )
        charts.append(Chart(f"{task}: throughput vs request latency", figure_html(fig, 460), note))
    return charts


class _Step(NamedTuple):
    """One point of a server cell's latency-vs-rate line."""

    target: float
    achieved: float | None
    p50: float | None
    judged: float  # the latency its scenario judges (its statistic, else the step's own percentile)
    valid: bool | None
    why: str | None


def _curve(r: Row, stat: str) -> list[_Step]:
    """A server cell's points by offered rate: its capacity curve's steps, else its own run as one point."""
    if r.server is not None and r.server.curve:
        raw = [(s.target_qps, s.achieved_qps, s.p50, getattr(s, stat, None), s.percentile_ms, s.valid,
                s.invalid_reason) for s in r.server.curve]
    elif r.p99 is not None:
        raw = [(value(r.server, "target_qps"), value(r.server, "achieved_qps"), r.p50, r.latency(stat), None,
                not r.invalid, value(r.server, "invalid_reason"))]
    else:
        raw = []
    steps = [_Step(target, achieved, p50, judged if is_finite(judged) else own, ok, why)
             for target, achieved, p50, judged, own, ok, why in raw]
    return sorted((s for s in steps if is_finite(s.judged) and finite_number(s.target)), key=lambda s: s.target)


def _reported(r: Row) -> dict[str, float | None]:
    """The paper's or model card's figures the record carries (``extra.reported``), by benchmark key."""
    return value(r.rec, "extra.reported") or {}


def _server_charts(rows: list[Row], styles: Styles, bound: float | None) -> list[Chart]:
    """Per task: request latency at the percentile each server setting's search judged (p99 unless its record
    says otherwise) against offered load (the capacity curve), so its capacity (★) sits within the bound."""
    import plotly.graph_objects as go

    charts = []
    servers = [r for r in rows if r.ok and not r.traits.closed_loop]
    for task in _tasks(servers):
        fig = go.Figure()
        xs: list[float] = []
        ys: list[float] = []
        invalid: list[tuple[float, float]] = []
        capacity_points: list[tuple[float, float, str]] = []
        # a line per cell: its series' colour (as in every chart), its dtype's marker, and a dash per
        # batch size, since cells of one series differ by batch size here
        mine = [r for r in servers if r.task == task]
        sizes = sorted({r.rec.batch_size or 0 for r in mine})
        stats = sorted({r.traits.statistic for r in mine})
        for r in mine:
            stat = r.traits.statistic
            steps = _curve(r, stat)
            if not steps:
                continue
            x = [s.target for s in steps]
            y = [s.judged for s in steps]
            xs += x
            ys += y
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    line={"color": styles.color(r),
                          "dash": BATCH_DASHES[sizes.index(r.rec.batch_size or 0) % len(BATCH_DASHES)]},
                    marker={"symbol": styles.symbol(r), "size": 8, "color": styles.color(r)},
                    name=_t(styles.cell(r)),
                    hovertext=[
                        _hover(r, f"offered {xx:.4g} requests/s, achieved "
                               f"{finite_number(s.achieved) or float('nan'):.4g}",
                               f"request latency p50 {finite_number(s.p50) or float('nan'):.4g} ms, "
                               f"{stat} {s.judged:.4g} ms",
                               "valid" if s.valid is not False else f"invalid: {s.why or 'no reason recorded'}")
                        for s, xx in zip(steps, x, strict=True)
                    ],
                    hoverinfo="text",
                )
            )
            invalid += [(xx, s.judged) for s, xx in zip(steps, x, strict=True) if s.valid is False]
            cap = r.capacity(bound)
            if cap:
                near = min(zip(steps, x, strict=True), key=lambda sx: abs(sx[0].target - cap[0]))
                capacity_points.append((near[1], near[0].judged, f"{r.setting}: capacity {cap[0]:.4g} requests/s"))
        if not xs:
            continue
        if invalid:
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in invalid],
                    y=[p[1] for p in invalid],
                    mode="markers",
                    marker={"symbol": "x-thin", "size": 14, "color": FLAG_COLOR, "line": {"width": 2}},
                    name="✕ invalid step",
                    hoverinfo="skip",
                )
            )
        if capacity_points:
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in capacity_points],
                    y=[p[1] for p in capacity_points],
                    mode="markers",
                    marker={"symbol": "star", "size": 16, "color": "#222", "line": {"width": 1, "color": "#fff"}},
                    name="★ capacity",
                    hovertext=[_t(p[2]) for p in capacity_points],
                    hoverinfo="text",
                )
            )
        if bound is not None:
            _bound_line(fig, bound, xs, vertical=False)
            ys = [*ys, bound]
        fig.update_layout(
            title=_t(f"{task}: request latency {'/'.join(stats)} vs offered load (server scenario, measured)"),
            xaxis={"title": "offered load: target requests per second (Poisson arrivals)", "type": axis_type(xs)},
            yaxis={"title": f"request latency {'/'.join(stats)}, ms (queueing included; each setting at the "
                            "percentile its search judged)", "type": axis_type(ys)},
        )
        note = ("Each point is one run at a fixed arrival rate (a step of the capacity search; the achieved rate "
                f"is in its hover); a setting's capacity (★) is its highest valid rate whose {' / '.join(stats)} (the "
                "percentile its capacity search judged, plotted here) is within the bound; ✕ marks an invalid step "
                "(too short, or early stopping not met for its percentile). Colour: the "
                "setting's, as in every chart; dash: its batch size.")
        charts.append(Chart(f"{task}: latency vs QPS", figure_html(fig, 460), note))
    return charts


def _throughput_charts(rows: list[Row], styles: Styles) -> list[Chart]:
    import plotly.graph_objects as go

    charts = []
    ok = [r for r in rows if r.ok and r.ips is not None and r.traits.closed_loop]
    for task in _tasks(ok):
        mine = [r for r in ok if r.task == task]
        fig = go.Figure()
        shown: set[str] = set()
        # a line joins the batch sizes of one series within one scenario: a single-stream point (open
        # marker) is a request alone, an offline point a batch of requests; they are never joined
        for (series, _scenario), members in group_by(mine, lambda r: (r.series, r.scenario)).items():
            members.sort(key=lambda r: r.rec.batch_size or 0)
            single = members[0].traits.reads == "latency"
            fig.add_trace(
                go.Scatter(
                    x=[r.rec.batch_size for r in members],
                    y=[r.ips for r in members],
                    mode="markers" if single else "lines+markers",
                    line={"color": styles.color(members[0]), "dash": styles.dash(members[0])},
                    marker={"size": 10, "symbol": styles.symbol(members[0]) + ("-open" if single else ""),
                            "color": styles.color(members[0]), "line": {"width": 2}},
                    name=_t(styles.series_label(members[0])),
                    legendgroup=series,
                    showlegend=series not in shown,
                    hovertext=[_hover(r, f"{r.ips:.4g} images/s ({r.scenario})") for r in members],
                    hoverinfo="text",
                )
            )
            shown.add(series)
        _ring(fig, [(r.rec.batch_size, r.ips) for r in mine if _flagged(r)], False)
        sizes = sorted({r.rec.batch_size for r in mine if finite_number(r.rec.batch_size)})
        if len(sizes) > 1:  # powers of two, evenly spaced
            xaxis = {"type": "log", "tickvals": sizes, "ticktext": [str(b) for b in sizes]}
        else:  # one batch size: a linear axis around it, not a log axis spanning decades
            xaxis = {"type": "linear", "tickvals": sizes, "range": [sizes[0] - 1, sizes[0] + 1] if sizes else None}
        fig.update_layout(
            title=_t(f"{task}: throughput vs batch size"),
            yaxis={"title": "images per second (measured)", "type": axis_type(r.ips for r in mine)},
            xaxis={"title": "batch size (open marker: single-stream; filled, joined: offline)", **xaxis},
        )
        charts.append(Chart(task, figure_html(fig, 420), "A line joins one setting's offline batch sizes; "
                            "a single-stream point stands alone (one request at a time is another scenario)."))
    return charts


def _size_quality_charts(
    rows: list[Row], styles: Styles, reported_keys: dict[str, str | None], reported_label: str
) -> list[Chart]:
    import plotly.graph_objects as go

    charts = []
    measured = [r for r in rows if r.ok and r.acc is not None and finite_number(r.rec.params)]
    for task in _tasks(measured):
        pts = [r for r in measured if r.task == task]
        metric = pts[0].metric
        fig = go.Figure()
        for members in group_by(pts, lambda r: r.series).values():
            fig.add_trace(
                go.Scatter(
                    x=[r.rec.params / 1e6 for r in members],
                    y=[r.acc for r in members],
                    mode="markers",
                    marker={"size": 11, "color": styles.color(members[0]), "symbol": styles.symbol(members[0])},
                    name=_t(styles.series_label(members[0])),
                    hovertext=[_hover(r, f"{r.rec.params / 1e6:.1f} M params", f"{metric} {r.acc:.4g}")
                               for r in members],
                    hoverinfo="text",
                )
            )
        _ring(fig, [(r.rec.params / 1e6, r.acc) for r in pts if _flagged(r)], False)
        fig.update_layout(
            title=_t(f"{task}: parameters vs {metric} (measured on {pts[0].rec.dataset})"),
            xaxis_title="parameters (millions)",
            yaxis_title=_t(f"{metric_label(metric)}, measured"),
        )
        charts.append(Chart(f"{task}: measured", figure_html(fig, 400)))
    charts += _reported_vs_cost(rows, styles, reported_keys, reported_label)
    reported: dict[str, dict[str, tuple[float, float]]] = {}
    for r in rows:
        params = finite_number(r.rec.params)
        for key, paper in _reported(r).items():
            if params and is_finite(paper):
                reported.setdefault(str(key), {})[str(r.rec.variant)] = (params / 1e6, float(paper))
    if reported:
        fig = go.Figure()
        for key, by_variant in sorted(reported.items()):
            variants = sorted(by_variant)
            fig.add_trace(
                go.Scatter(
                    x=[by_variant[v][0] for v in variants],
                    y=[by_variant[v][1] for v in variants],
                    mode="markers+lines+text",
                    textposition="top center",
                    marker={"symbol": "diamond-open", "size": 11},
                    line={"dash": "dot"},
                    name=_t(f"reported: {key}"),
                    text=[_t(v) for v in variants],
                    hovertemplate="%{text}<br>%{x:.1f} M params<br>%{y}<extra>reported</extra>",
                )
            )
        fig.update_layout(
            title=_t(f"parameters vs {reported_label} results (not measured here)"),
            xaxis_title="parameters (millions, as built here)",
            yaxis_title="reported value (each benchmark's own scale)",
        )
        charts.append(
            Chart(reported_label, figure_html(fig, 440), "Open diamonds: numbers from the paper or model card.")
        )
    return charts


def _reported_vs_cost(
    rows: list[Row], styles: Styles, reported_keys: dict[str, str | None], reported_label: str
) -> list[Chart]:
    """Per task: the variant's reported accuracy (paper/model card) against this run's measured cost (or
    throughput where no price applies): quality from the literature, speed from here, each labelled."""
    import plotly.graph_objects as go

    charts = []
    for task, key in reported_keys.items():
        if key is None:
            continue
        pts = [
            r for r in rows
            if r.ok and r.task == task and r.traits.closed_loop and r.ips and r.at_reported_setting
            and is_finite(_reported(r).get(key))
        ]
        if not pts:
            continue
        priced = all(r.cost_per_million is not None for r in pts)

        def x_of(r: Row, priced: bool = priced) -> float:
            return r.cost_per_million if priced else r.ips

        def y_of(r: Row, key: str = key) -> float:
            return float(_reported(r)[key])

        fig = go.Figure()
        for members in group_by(pts, lambda r: r.series).values():
            fig.add_trace(
                go.Scatter(
                    x=[x_of(r) for r in members],
                    y=[y_of(r) for r in members],
                    mode="markers",
                    marker={"size": 11, "color": styles.color(members[0]), "symbol": styles.symbol(members[0])},
                    name=_t(styles.series_label(members[0])),
                    hovertext=[
                        _hover(r, f"{reported_label}: {key} {y_of(r):g}",
                               f"measured {r.ips:.4g} images/s"
                               + (f", derived ${r.cost_per_million:.4g} per million images ({r.price.text})"
                                  if r.cost_per_million is not None else ""))
                        for r in members
                    ],
                    hoverinfo="text",
                )
            )
        _ring(fig, [(x_of(r), y_of(r)) for r in pts if _flagged(r)], False)
        xs = [x_of(r) for r in pts]
        fig.update_layout(
            title=_t(f"{task}: {reported_label} {key} vs measured {'cost' if priced else 'throughput'}"),
            xaxis={
                "title": "USD per million images (derived from measured throughput and prices)"
                if priced else "images per second (measured)",
                "type": axis_type(xs),
            },
            yaxis_title=_t(f"{key} ({reported_label})"),
        )
        note = (f"Quality is the variant's {reported_label} number, drawn only at the setting it was reported for "
                "(fp32, not quantised, the card's pretrained checkpoint); "
                "only the horizontal axis was measured here. Cheaper is further left." if priced else
                f"Quality is the variant's {reported_label} number; throughput was measured here.")
        charts.append(Chart(f"{task}: reported vs cost", figure_html(fig, 420), note))
    return charts


def pareto_front(
    points: list[tuple[float, float]], *, x_lower: bool = True, y_higher: bool = True
) -> list[int]:
    """Indices of the non-dominated points, ordered along x (best x first)."""
    sx = 1.0 if x_lower else -1.0
    sy = -1.0 if y_higher else 1.0
    order = sorted(range(len(points)), key=lambda i: (sx * points[i][0], sy * points[i][1]))
    front: list[int] = []
    best_y = math.inf
    for i in order:
        y = sy * points[i][1]
        if y < best_y:
            front.append(i)
            best_y = y
    return front


_PARETO_AXES = (
    ("request latency p50 (ms)", lambda r: r.p50, True),
    ("request latency p90 (ms)", lambda r: r.p90, True),
    ("throughput (images/s)", lambda r: r.ips, False),
    ("peak memory (MiB)", lambda r: r.peak_memory[0] / 2**20 if r.peak_memory else None, True),
)


def _pareto_charts(rows: list[Row], styles: Styles) -> list[Chart]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    charts = []
    # closed-loop cells: a server cell's latency includes queueing at the rate it was offered, and its
    # throughput is that rate; it is on the latency-vs-QPS chart instead
    ok = [r for r in rows if r.ok and r.acc is not None and r.traits.closed_loop]
    for task in _tasks(ok):
        pts = [r for r in ok if r.task == task]
        metric = pts[0].metric
        y_higher = not lower_is_better(metric)
        fig = make_subplots(rows=2, cols=2, subplot_titles=[_t(a[0]) for a in _PARETO_AXES])
        shown_series: set[str] = set()
        ring_shown = False
        for n, (axis, getter, x_lower) in enumerate(_PARETO_AXES):
            row, col = n // 2 + 1, n % 2 + 1
            sel = [r for r in pts if getter(r) is not None]
            for series, members in group_by(sel, lambda r: r.series).items():
                fig.add_trace(
                    go.Scatter(
                        x=[getter(r) for r in members],
                        y=[r.acc for r in members],
                        mode="markers",
                        marker={"size": 9, "color": styles.color(members[0]), "symbol": styles.symbol(members[0])},
                        hovertext=[_hover(r) for r in members],
                        hoverinfo="text",
                        name=_t(styles.series_label(members[0])),
                        legendgroup=series,
                        showlegend=series not in shown_series,
                    ),
                    row=row,
                    col=col,
                )
                shown_series.add(series)
            xy = [(getter(r), r.acc) for r in sel]
            ring_shown = _ring(fig, [p for p, r in zip(xy, sel, strict=True) if _flagged(r)], ring_shown,
                               row=row, col=col)
            front = pareto_front(xy, x_lower=x_lower, y_higher=y_higher)
            fig.add_trace(
                go.Scatter(
                    x=[xy[i][0] for i in front],
                    y=[xy[i][1] for i in front],
                    mode="lines",
                    line={"shape": "hv", "color": "#222", "width": 1.5},
                    name="Pareto frontier",
                    legendgroup="frontier",
                    showlegend=n == 0,
                    hoverinfo="skip",
                ),
                row=row,
                col=col,
            )
            fig.update_xaxes(title_text=_t(axis), type=axis_type(p[0] for p in xy), row=row, col=col)
            fig.update_yaxes(title_text=_t(metric), row=row, col=col)
        fig.update_layout(title=_t(f"{task}: {metric_label(metric)} against speed and memory"))
        charts.append(Chart(f"{task}", figure_html(fig, 780, top=90)))
    return charts


_FRONT_AXES = (
    # (subplot title, x, y, x lower is better, y higher is better)
    ("USD per million images (derived) vs request latency p99", lambda r: r.cost_per_million, lambda r: r.p99,
     True, False),
    ("request latency p99 vs throughput", lambda r: r.p99, lambda r: r.ips, True, True),
)


def _front_charts(rows: list[Row], styles: Styles) -> list[Chart]:
    """Per task, with or without accuracy: cost per million images against request latency p99, and
    throughput against request latency p99, the non-dominated settings joined (invalid server runs are left
    out: they are no option). A server cell stands at the rate it served (its capacity) and the p99 it had
    there; an offline cell's p99 is its batch's wall time, with no queueing."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    charts = []
    ok = [r for r in rows if r.ok and not r.invalid and r.ips and r.p99]
    for task in _tasks(ok):
        pts = [r for r in ok if r.task == task]
        if len(pts) < 2:
            continue
        fig = make_subplots(rows=1, cols=2, subplot_titles=[_t(a[0]) for a in _FRONT_AXES])
        shown: set[str] = set()
        ring_shown = False
        for col, (_, x_of, y_of, x_lower, y_higher) in enumerate(_FRONT_AXES, start=1):
            sel = [r for r in pts if x_of(r) is not None and y_of(r) is not None]
            for series, members in group_by(sel, lambda r: r.series).items():
                fig.add_trace(
                    go.Scatter(
                        x=[x_of(r) for r in members], y=[y_of(r) for r in members], mode="markers",
                        marker={"size": 9, "color": styles.color(members[0]), "symbol": styles.symbol(members[0])},
                        hovertext=[_hover(r, f"{r.scenario}, bs{r.rec.batch_size}", f"p99 {r.p99:.4g} ms",
                                          f"{r.ips:.4g} images/s")
                                   + (f"<br>${r.cost_per_million:.4g} per million images" if r.cost_per_million else "")
                                   for r in members],
                        hoverinfo="text", name=_t(styles.series_label(members[0])), legendgroup=series, showlegend=series not in shown,
                    ),
                    row=1, col=col,
                )
                shown.add(series)
            xy = [(x_of(r), y_of(r)) for r in sel]
            ring_shown = _ring(fig, [p for p, r in zip(xy, sel, strict=True) if _flagged(r)], ring_shown, row=1, col=col)
            front = pareto_front(xy, x_lower=x_lower, y_higher=y_higher)
            if xy:
                fig.add_trace(
                    go.Scatter(
                        x=[xy[i][0] for i in front], y=[xy[i][1] for i in front], mode="lines",
                        line={"shape": "hv", "color": "#222", "width": 1.5}, name="non-dominated settings",
                        legendgroup="front", showlegend=col == 1, hoverinfo="skip",
                    ),
                    row=1, col=col,
                )
            fig.update_xaxes(type=axis_type(p[0] for p in xy), row=1, col=col,
                             title_text="USD per million images (derived)" if col == 1 else "request latency p99 (ms)")
            fig.update_yaxes(type=axis_type(p[1] for p in xy), row=1, col=col,
                             title_text="request latency p99 (ms)" if col == 1 else "images per second (measured)")
        fig.update_layout(title=_t(f"{task}: cost, throughput and request latency (no accuracy needed)"))
        charts.append(Chart(f"{task}: fronts", figure_html(fig, 460, top=90),
                            "The black line joins the settings no other beats on both axes at once (left: cheaper and "
                            "faster; right: faster and more throughput). Offline p99 is a batch's wall time, without "
                            "queueing; a server point is at the rate it served."))
    return charts


# ---------------------------------------------------------------------------------------------
# bars and boxes


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
    items, cut = _leading(items, "cells")
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


def _stage_charts(rows: list[Row], styles: Styles) -> list[Chart]:
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

    sel, cut = _leading(sorted(sel, key=lambda r: sum(r.stages.values())), "cells (by total)")
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


def _memory_chart(rows: list[Row], styles: Styles) -> Chart | None:
    import plotly.graph_objects as go

    def peak(r: Row) -> float:
        return r.peak_memory[0] if r.peak_memory else 0.0

    sel = [r for r in rows if r.ok and any(figure(r.rec, f"memory.{k}") for k, _ in MEMORY_FIELDS)]
    if not sel:
        return None
    sel.sort(key=peak)
    sel, cut = _leading(sel, "cells (smallest peak first)")
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


def _distribution_chart(rows: list[Row], styles: Styles) -> Chart | None:
    import plotly.graph_objects as go

    def samples(r: Row) -> list[float]:
        return [s for s in r.rec.samples_ms if not math.isnan(s)]

    sel = [r for r in rows if r.ok and samples(r)]
    if not sel:
        return None
    sel.sort(key=lambda r: sorted(samples(r))[len(samples(r)) // 2])
    sel, cut = _leading(sel, "cells (by median)")
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


def _energy_charts(rows: list[Row], styles: Styles) -> list[Chart]:
    ok = [r for r in rows if r.ok]

    def source(r: Row) -> str:
        return str(value(r.rec, "energy.source") or "")

    charts = [
        _bars(ok, styles, lambda r: r.joules, title="energy per image (measured)", axis="joules per image",
              higher_is_better=False,
              hover=lambda r, v: _hover(r, f"{v:.4g} J per image", f"source: {source(r)}")),
        _bars(ok, styles, lambda r: r.images_per_joule, title="images per joule (measured; higher is better)",
              axis="images per joule", higher_is_better=True,
              hover=lambda r, v: _hover(r, f"{v:.4g} images per joule", f"source: {source(r)}")),
    ]
    return [c for c in charts if c]


def _cost_charts(rows: list[Row], styles: Styles) -> list[Chart]:
    ok = [r for r in rows if r.ok and r.traits.closed_loop]
    chart = _bars(
        ok, styles, lambda r: r.cost_per_million,
        title="cost per million images (derived: price per hour ÷ measured throughput)",
        axis="USD per million images (derived)", higher_is_better=False,
        hover=lambda r, v: _hover(r, f"${v:.4g} per million images", f"{r.ips:.4g} images/s measured",
                                  f"price: {r.price.text}"),
        note="Batch work with the device kept busy (offline and single-stream cells). Prices used: "
             + "; ".join(dict.fromkeys(f"{r.kind.label}: {r.price.text}" for r in ok if r.price)) + ".",
    )
    return [chart] if chart else []


def build_charts(
    rows: list[Row],
    bound: float | None,
    reported_keys: dict[str, str | None],
    reported_label: str,
    styles: Styles | None = None,
) -> dict[str, list[Chart]]:
    """Every chart of the report, by section; ``styles``: the page's (its key table shown beside)."""
    styles = styles or Styles(rows)
    return {
        "tradeoff": _tradeoff_charts(rows, styles, bound),
        "server": _server_charts(rows, styles, bound),
        "size": _size_quality_charts(rows, styles, reported_keys, reported_label),
        "pareto": _pareto_charts(rows, styles),
        "fronts": _front_charts(rows, styles),
        "throughput": _throughput_charts(rows, styles),
        "stages": _stage_charts(rows, styles),
        "memory": [c for c in [_memory_chart(rows, styles)] if c],
        "distributions": [c for c in [_distribution_chart(rows, styles)] if c],
        "energy": _energy_charts(rows, styles),
        "cost": _cost_charts(rows, styles),
    }
