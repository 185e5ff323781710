"""The report's speed charts: throughput against request latency, request latency against offered load
(the server cells' capacity curves, each capacity a ★) and throughput against batch size, per task, with the
conventions of ``bench.report.chart_style``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bench.core.numbers import finite_number, is_finite
from bench.pages.page import FLAG_COLOR, Chart, axis_type, figure_html
from bench.pages.page import plot_text as _t
from bench.report.chart_style import Styles, bound_line, flagged, hover, ring
from bench.report.report_rows import Row, group_by, tasks_of
from bench.results import value

BATCH_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def tradeoff_charts(rows: list[Row], styles: Styles, bound: float | None) -> list[Chart]:
    """Per task: throughput against the request latency a bound judges (p99 server, else p90)."""
    import plotly.graph_objects as go

    charts = []
    pts = [r for r in rows if r.ok and r.ips and r.latency(r.traits.statistic)]
    for task in tasks_of(pts):
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
                        hover(r, f"request latency {r.traits.statistic} {x_of(r):.4g} ms",
                               f"{r.ips:.4g} images/s")
                        for r in members
                    ],
                    hoverinfo="text",
                )
            )
        ring(fig, [(x_of(r), r.ips) for r in mine if flagged(r)], False)
        xs, ys = [x_of(r) for r in mine], [r.ips for r in mine]
        if bound is not None:
            bound_line(fig, bound, ys, vertical=True)
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


def server_charts(rows: list[Row], styles: Styles, bound: float | None) -> list[Chart]:
    """Per task: request latency at the percentile each server setting's search judged (p99 unless its record
    says otherwise) against offered load (the capacity curve), so its capacity (★) sits within the bound."""
    servers = [r for r in rows if r.ok and not r.traits.closed_loop]
    charts = [_server_chart(task, [r for r in servers if r.task == task], styles, bound) for task in tasks_of(servers)]
    return [c for c in charts if c]


@dataclass
class _Marks:
    """What a latency-vs-QPS chart collects from its cells' lines: every point (for its axes), the invalid
    steps (✕) and each capacity (★, with its hover text)."""

    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    invalid: list[tuple[float, float]] = field(default_factory=list)
    capacities: list[tuple[float, float, str]] = field(default_factory=list)


def _server_chart(task: str, mine: list[Row], styles: Styles, bound: float | None) -> Chart | None:
    """One task's latency-vs-QPS chart (None: no server cell has a point to draw)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    marks = _Marks()
    # a line per cell: its series' colour (as in every chart), its dtype's marker, and a dash per
    # batch size, since cells of one series differ by batch size here
    sizes = sorted({r.rec.batch_size or 0 for r in mine})
    stats = sorted({r.traits.statistic for r in mine})
    for r in mine:
        _server_line(fig, r, styles, BATCH_DASHES[sizes.index(r.rec.batch_size or 0) % len(BATCH_DASHES)], bound,
                     marks)
    if not marks.xs:
        return None
    _server_marks(fig, marks)
    xs, ys = marks.xs, marks.ys
    if bound is not None:
        bound_line(fig, bound, xs, vertical=False)
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
    return Chart(f"{task}: latency vs QPS", figure_html(fig, 460), note)


def _server_line(fig: Any, r: Row, styles: Styles, dash: str, bound: float | None, marks: _Marks) -> None:
    """One server cell's line at the percentile its search judged; its points, invalid steps and capacity
    under ``bound`` go to ``marks``."""
    import plotly.graph_objects as go

    stat = r.traits.statistic
    steps = _curve(r, stat)
    if not steps:
        return
    x = [s.target for s in steps]
    y = [s.judged for s in steps]
    marks.xs += x
    marks.ys += y
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="lines+markers",
            line={"color": styles.color(r), "dash": dash},
            marker={"symbol": styles.symbol(r), "size": 8, "color": styles.color(r)},
            name=_t(styles.cell(r)),
            hovertext=[
                hover(r, f"offered {s.target:.4g} requests/s, achieved "
                      f"{finite_number(s.achieved) or float('nan'):.4g}",
                      f"request latency p50 {finite_number(s.p50) or float('nan'):.4g} ms, "
                      f"{stat} {s.judged:.4g} ms",
                      "valid" if s.valid is not False else f"invalid: {s.why or 'no reason recorded'}")
                for s in steps
            ],
            hoverinfo="text",
        )
    )
    marks.invalid += [(s.target, s.judged) for s in steps if s.valid is False]
    cap = r.capacity(bound)
    if cap:
        near = min(steps, key=lambda s: abs(s.target - cap[0]))
        marks.capacities.append((near.target, near.judged, f"{r.setting}: capacity {cap[0]:.4g} requests/s"))


def _server_marks(fig: Any, marks: _Marks) -> None:
    """The invalid steps (✕) and capacities (★) of a latency-vs-QPS chart, one legend entry each."""
    import plotly.graph_objects as go

    if marks.invalid:
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in marks.invalid],
                y=[p[1] for p in marks.invalid],
                mode="markers",
                marker={"symbol": "x-thin", "size": 14, "color": FLAG_COLOR, "line": {"width": 2}},
                name="✕ invalid step",
                hoverinfo="skip",
            )
        )
    if marks.capacities:
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in marks.capacities],
                y=[p[1] for p in marks.capacities],
                mode="markers",
                marker={"symbol": "star", "size": 16, "color": "#222", "line": {"width": 1, "color": "#fff"}},
                name="★ capacity",
                hovertext=[_t(p[2]) for p in marks.capacities],
                hoverinfo="text",
            )
        )


def throughput_charts(rows: list[Row], styles: Styles) -> list[Chart]:
    import plotly.graph_objects as go

    charts = []
    ok = [r for r in rows if r.ok and r.ips is not None and r.traits.closed_loop]
    for task in tasks_of(ok):
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
                    hovertext=[hover(r, f"{r.ips:.4g} images/s ({r.scenario})") for r in members],
                    hoverinfo="text",
                )
            )
            shown.add(series)
        ring(fig, [(r.rec.batch_size, r.ips) for r in mine if flagged(r)], False)
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
