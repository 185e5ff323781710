"""The report's quality charts, per task: parameters against measured accuracy and against reported
(paper/model card) results, reported accuracy against measured cost, accuracy against speed and memory
(Pareto), and cost, throughput and request latency fronts without accuracy; measured and reported figures are
always kept apart and labelled."""

from __future__ import annotations

import math

from bench.core.numbers import finite_number, is_finite
from bench.pages.page import Chart, axis_type, figure_html
from bench.pages.page import plot_text as _t
from bench.report.chart_style import Styles, flagged, hover, ring
from bench.report.report_rows import Row, group_by, lower_is_better, metric_label, tasks_of
from bench.results import value


def _reported(r: Row) -> dict[str, float | None]:
    """The paper's or model card's figures the record carries (``extra.reported``), by benchmark key."""
    return value(r.rec, "extra.reported") or {}


def size_quality_charts(
    rows: list[Row], styles: Styles, reported_keys: dict[str, str | None], reported_label: str
) -> list[Chart]:
    """Parameters against quality: per task, the accuracy measured here; the reported accuracy against the cost
    measured here (``reported_vs_cost``); and the paper's or model card's results by variant."""
    measured = [r for r in rows if r.ok and r.acc is not None and finite_number(r.rec.params)]
    charts = [_measured_size_chart(task, [r for r in measured if r.task == task], styles)
              for task in tasks_of(measured)]
    charts += reported_vs_cost(rows, styles, reported_keys, reported_label)
    reported = _reported_size_chart(rows, reported_label)
    return charts + ([reported] if reported else [])


def _measured_size_chart(task: str, pts: list[Row], styles: Styles) -> Chart:
    """One task's parameters against the accuracy its cells measured."""
    import plotly.graph_objects as go

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
                hovertext=[hover(r, f"{r.rec.params / 1e6:.1f} M params", f"{metric} {r.acc:.4g}")
                           for r in members],
                hoverinfo="text",
            )
        )
    ring(fig, [(r.rec.params / 1e6, r.acc) for r in pts if flagged(r)], False)
    fig.update_layout(
        title=_t(f"{task}: parameters vs {metric} (measured on {pts[0].rec.dataset})"),
        xaxis_title="parameters (millions)",
        yaxis_title=_t(f"{metric_label(metric)}, measured"),
    )
    return Chart(f"{task}: measured", figure_html(fig, 400))


def _reported_size_chart(rows: list[Row], reported_label: str) -> Chart | None:
    """Parameters (as built here) against the results the records carry from the paper or model card, one
    line per benchmark (None: no record carries one)."""
    import plotly.graph_objects as go

    reported: dict[str, dict[str, tuple[float, float]]] = {}
    for r in rows:
        params = finite_number(r.rec.params)
        for key, paper in _reported(r).items():
            if params and is_finite(paper):
                reported.setdefault(str(key), {})[str(r.rec.variant)] = (params / 1e6, float(paper))
    if not reported:
        return None
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
    return Chart(reported_label, figure_html(fig, 440), "Open diamonds: numbers from the paper or model card.")


def reported_vs_cost(
    rows: list[Row], styles: Styles, reported_keys: dict[str, str | None], reported_label: str
) -> list[Chart]:
    """Per task: the variant's reported accuracy (paper/model card) against this run's measured cost (or
    throughput where no price applies): quality from the literature, speed from here, each labelled."""
    charts = []
    for task, key in reported_keys.items():
        if key is None:
            continue
        pts = [
            r for r in rows
            if r.ok and r.task == task and r.traits.closed_loop and r.ips and r.at_reported_setting
            and is_finite(_reported(r).get(key))
        ]
        if pts:
            charts.append(_reported_vs_cost_chart(task, key, pts, styles, reported_label))
    return charts


def _reported_vs_cost_chart(task: str, key: str, pts: list[Row], styles: Styles, reported_label: str) -> Chart:
    """One task's reported ``key`` against measured cost, or throughput unless every cell has a price."""
    import plotly.graph_objects as go

    priced = all(r.cost_per_million is not None for r in pts)

    def x_of(r: Row) -> float:
        return r.cost_per_million if priced else r.ips

    def y_of(r: Row) -> float:
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
                    hover(r, f"{reported_label}: {key} {y_of(r):g}",
                          f"measured {r.ips:.4g} images/s"
                          + (f", derived ${r.cost_per_million:.4g} per million images ({r.price.text})"
                             if r.cost_per_million is not None else ""))
                    for r in members
                ],
                hoverinfo="text",
            )
        )
    ring(fig, [(x_of(r), y_of(r)) for r in pts if flagged(r)], False)
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
    return Chart(f"{task}: reported vs cost", figure_html(fig, 420), note)


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


def pareto_charts(rows: list[Row], styles: Styles) -> list[Chart]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    charts = []
    # closed-loop cells: a server cell's latency includes queueing at the rate it was offered, and its
    # throughput is that rate; it is on the latency-vs-QPS chart instead
    ok = [r for r in rows if r.ok and r.acc is not None and r.traits.closed_loop]
    for task in tasks_of(ok):
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
                        hovertext=[hover(r) for r in members],
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
            ring_shown = ring(fig, [p for p, r in zip(xy, sel, strict=True) if flagged(r)], ring_shown,
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


def front_charts(rows: list[Row], styles: Styles) -> list[Chart]:
    """Per task, with or without accuracy: cost per million images against request latency p99, and
    throughput against request latency p99, the non-dominated settings joined (invalid server runs are left
    out: they are no option). A server cell stands at the rate it served (its capacity) and the p99 it had
    there; an offline cell's p99 is its batch's wall time, with no queueing."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    charts = []
    ok = [r for r in rows if r.ok and not r.invalid and r.ips and r.p99]
    for task in tasks_of(ok):
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
                        hovertext=[hover(r, f"{r.scenario}, bs{r.rec.batch_size}", f"p99 {r.p99:.4g} ms",
                                          f"{r.ips:.4g} images/s")
                                   + (f"<br>${r.cost_per_million:.4g} per million images" if r.cost_per_million else "")
                                   for r in members],
                        hoverinfo="text", name=_t(styles.series_label(members[0])), legendgroup=series, showlegend=series not in shown,
                    ),
                    row=1, col=col,
                )
                shown.add(series)
            xy = [(x_of(r), y_of(r)) for r in sel]
            ring_shown = ring(fig, [p for p, r in zip(xy, sel, strict=True) if flagged(r)], ring_shown, row=1, col=col)
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
