"""The answer's chart: per task, request latency at the question's percentile against the capacity one device
sustains, for the top options of every device kind (Triton model-analyzer's top-N view) and the options that
cannot headline, so a buyer sees what each cheaper or faster setting costs in latency."""

from __future__ import annotations

from bench.core.numbers import is_finite
from bench.pages.chart_keys import MAX_LABEL
from bench.pages.page import Chart, axis_type, figure_html
from bench.pages.page import plot_text as _t
from bench.report.answer import Answer, Ranked
from bench.report.capacity_options import PREDICTED_BASIS
from bench.report.chart_style import Styles

TITLE = "{task}: top options"


def charts(answers: list[Answer], styles: Styles) -> list[Chart]:
    """One chart per task with at least one option that has a latency figure."""
    import plotly.graph_objects as go

    out = []
    for task in dict.fromkeys(a.task for a in answers):
        mine = [a for a in answers if a.task == task]
        question = mine[0].question
        fig = go.Figure()
        xs: list[float] = []
        ys: list[float] = []
        for a in mine:
            for group, ranked in (("top", a.top), ("other", a.others)):
                pts = [x for x in ranked if is_finite(x.option.latency.estimate)]
                if not pts:
                    continue
                xs += [x.option.capacity for x in pts]
                ys += [x.option.latency.estimate for x in pts]
                fig.add_trace(go.Scatter(
                    x=[x.option.capacity for x in pts], y=[x.option.latency.estimate for x in pts],
                    mode="markers+text" if group == "top" else "markers",
                    text=[str(i + 1) if group == "top" else "" for i in range(len(pts))], textposition="top center",
                    marker={"size": 12, "color": [styles.color(x.option.row) for x in pts],
                            "symbol": [_symbol(x, group) for x in pts], "line": {"width": 1, "color": "#333"}},
                    name=_t(_legend(a, group)),
                    hovertext=[_t(_hover(x)) for x in pts], hoverinfo="text"))
        if not xs:
            continue
        if question.bound_ms is not None:
            fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[question.bound_ms] * 2, mode="lines",
                                     line={"dash": "dash", "color": "#c0392b"},
                                     name=_t(f"bound: {question.statistic} ≤ {question.bound_ms:g} ms")))
            ys.append(question.bound_ms)
        fig.update_layout(
            title=_t(f"{task}: request latency {question.statistic} vs capacity per device, top options"),
            xaxis={"title": "capacity: requests per second one device sustains", "type": axis_type(xs)},
            yaxis={"title": f"request latency {question.statistic}, ms", "type": axis_type(ys)})
        out.append(Chart(TITLE.format(task=task), figure_html(fig, 380),
                         "Numbers: rank among the device kind's qualifying options (1 is the cheapest). Filled "
                         "markers are measured server capacities, open ones predicted (queueing model from measured "
                         "batch times); ✕: an option that cannot headline (its hover says why)."))
    return out


def _legend(a: Answer, group: str) -> str:
    """A legend entry within the page's label limit: the device kind (its name, shortened), then the group."""
    suffix = ": top" if group == "top" else ": ✕ cannot headline"
    kind = a.kind.name if a.kind.kind == "gpu" else f"CPU, {a.kind.cores or '?'} cores"
    return kind[: MAX_LABEL - len(suffix)] + suffix


def _symbol(x: Ranked, group: str) -> str:
    if group == "other":
        return "x"
    return "circle-open" if x.option.basis == PREDICTED_BASIS else "circle"


def _hover(x: Ranked) -> str:
    o = x.option
    why = f"<br>cannot headline: {'; '.join(x.why_not)}" if x.why_not else ""
    return (f"{o.name}<br>{o.capacity:.4g} requests/s per device ({o.basis}); {x.devices} devices<br>"
            f"{o.latency.text}<br>{o.validity.stamp}; {o.quality.text}{why}")
