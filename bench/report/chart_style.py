"""The report's chart conventions, shared by every chart module (``charts_speed``, ``charts_quality``,
``charts_bars``, ``answer_chart``) so a reader learns them once:

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

from typing import Any

from bench.pages.chart_keys import MAX_LABEL, Key, short_labels
from bench.pages.page import DTYPE_DASHES, DTYPE_SYMBOLS, FLAG_COLOR, Palette
from bench.pages.page import plot_text as _t
from bench.report.report_rows import _ALONG_A_LINE as ALONG_A_LINE
from bench.report.report_rows import Row, tasks_of

FLAG_NAME = "⚠ unstable or invalid (red ring)"
FLAG_MARK = " ⚠"
DTYPE_PATTERNS = {"fp32": "", "fp16": "/", "bf16": ".", "int8": "+"}
CHART_CELLS = 400
"""Above this many finished cells the charts draw the cells of the ``LEADING_SERIES`` settings (a setting
without batch size and scenario, on one machine) with the highest throughput; every cell stays in the
all-cells table. Thousands of traces make a page that takes minutes to open and a chart nobody can read."""
LEADING_SERIES = 12
BAR_CELLS = 60
"""A chart of one bar, box or stack per cell draws at most this many cells, the best first."""


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
        several = len(tasks_of(plotted)) > 1

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


def leading(items: list, what: str) -> tuple[list, str]:
    """The first ``BAR_CELLS`` of items sorted best first, and a note when some were left out."""
    if len(items) <= BAR_CELLS:
        return items, ""
    return items[:BAR_CELLS], f"The best {BAR_CELLS} of {len(items):,} {what} are drawn; the all-cells table has every one."


def flagged(r: Row) -> bool:
    return bool(r.flags)


def _flag_suffix(r: Row) -> str:
    return f" ⚠ {', '.join(r.flags)}" if r.flags else ""


def hover(r: Row, *lines: str) -> str:
    return "<br>".join([_t(r.label), *(_t(line) for line in lines if line), _t(_flag_suffix(r).strip())])


def ring(fig: Any, points: list[tuple[float, float]], shown: bool, **where: Any) -> bool:
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


def bound_line(fig: Any, bound: float, span: list[float], vertical: bool, **where: Any) -> None:
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
