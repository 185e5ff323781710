"""The self-contained HTML page every report-like view shares: the page shell, one inlined plotly.js,
figures embedded as divs, and the chart conventions (a palette with no repeated colour, dtype marks,
log axes when values span more than 30x).

Public helpers (``report`` and ``history`` use them):

- ``render(template, **context)``: render a template of ``bench/templates`` with autoescaping on; a
  page template ``{% extends "page.html.j2" %}`` and fills ``title``, ``header`` and ``content``; the
  shell inlines the CSS and plotly.js once (no network request, ever); plotly.js runs only when the first
  chart is drawn, after the first screen.
- ``figure_html(fig, height)``: a plotly figure as a placeholder div and an inert JSON block, drawn by the
  shell's charts.js once it comes near the screen (no plotly.js, no MathJax in it).
- ``write_html(path, text)``: write atomically (a reader never sees half a page).
- ``Chart``, ``plot_text``, ``axis_type``, ``Palette``, ``DTYPE_SYMBOLS``, ``DTYPE_DASHES``.
"""

from __future__ import annotations

import colorsys
import html
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.numbers import is_finite
from bench.core.paths import Writer, write_all, write_output

TEMPLATES = Path(__file__).parent.parent / "templates"
LOG_SPAN = 30.0
"""A chart's value axis is logarithmic when its largest positive value is more than this many times
its smallest: a 14 ms GPU bar next to a 20,000 ms CPU bar is invisible on a linear axis."""

# Qualitative colours, each at least MIN_COLOR_DISTANCE (CIE76 delta E) from every other: Tableau 10, then
# the colours of a 6-level RGB grid (lightness 25-80, away from FLAG_COLOR) picked one at a time as the
# farthest from those already chosen. Beyond these, ``Palette`` spreads hues by the golden angle.
BASE_COLORS = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#0000ff", "#ff00cc", "#0066ff", "#00cc00", "#ff0000", "#990066",
    "#660099", "#ff99ff", "#cc00ff", "#666600",
)
MIN_COLOR_DISTANCE = 25.0
DTYPE_SYMBOLS = {"fp32": "circle", "fp16": "square", "bf16": "diamond", "int8": "triangle-up"}
DTYPE_DASHES = {"fp32": "solid", "fp16": "dash", "bf16": "dot", "int8": "dashdot"}
FLAG_COLOR = "#d62728"


@dataclass
class Chart:
    """One embedded figure: ``html`` is the div from ``figure_html``; ``note`` is shown under it."""

    title: str
    html: Any
    note: str = ""


def plot_text(text: Any) -> str:
    """Text for plotly, which renders a subset of HTML in labels: escape it so it shows as typed."""
    return html.escape(str(text), quote=False)


def axis_type(values: Iterable[Any]) -> str:
    """"log" when the positive values span more than LOG_SPAN (max / min), else "linear"."""
    positive = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]
    if len(positive) < 2:
        return "linear"
    return "log" if max(positive) / min(positive) > LOG_SPAN else "linear"


class Palette:
    """A colour per key, in order of first use, never the same colour for two keys."""

    def __init__(self) -> None:
        self._colors: dict[Any, str] = {}

    def __call__(self, key: Any) -> str:
        if key not in self._colors:
            n = len(self._colors)
            self._colors[key] = BASE_COLORS[n] if n < len(BASE_COLORS) else _golden(n - len(BASE_COLORS))
        return self._colors[key]


def color_distance(a: str, b: str) -> float:
    """CIE76 delta E between two "#rrggbb" colours (sRGB, D65): about 2.3 is just noticeable."""
    return math.dist(_lab(a), _lab(b))


def _lab(color: str) -> tuple[float, float, float]:
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(int(color[i : i + 2], 16) / 255) for i in (1, 3, 5))
    xyz = ((0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b,
           (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883)
    fx, fy, fz = (t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in xyz)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def _golden(n: int) -> str:
    hue = (0.11 + n * 0.618033988749895) % 1.0
    lightness = (0.38, 0.52, 0.45)[n % 3]
    r, g, b = colorsys.hls_to_rgb(hue, lightness, 0.65)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


LEGEND_ROW = 22
LEGEND_WIDTH = 1100
"""The legend sits below the plot: the figure grows by a row of LEGEND_ROW px per row of entries, as
many entries to a row as fit in LEGEND_WIDTH px (the plot area of a 1400 px page)."""


def legend_rows(fig: Any) -> int:
    """Rows the horizontal legend below ``fig`` takes: its entries at ~6.5 px a character plus the symbol."""
    names, groups = [], set()
    for trace in fig.data:
        if trace.showlegend is False or not trace.name:
            continue
        if trace.legendgroup and trace.legendgroup in groups:
            continue
        groups.add(trace.legendgroup)
        names.append(str(trace.name))
    if not names:
        return 0
    per_row = max(1, LEGEND_WIDTH // (50 + round(6.5 * max(len(n) for n in names))))
    return -(-len(names) // per_row)


def figure_html(fig: Any, height: int, top: int = 50) -> Any:
    """A plotly figure as an embeddable div (plotly.js comes once from the page shell); ``height`` is
    the plot's, the legend's rows below it are added."""
    from markupsafe import Markup

    height += LEGEND_ROW * legend_rows(fig)
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": top, "b": 50},
        # below the plot, never beside it: a legend beside a plot takes its width
        legend={"font": {"size": 11}, "traceorder": "normal", "orientation": "h", "yref": "container",
                "y": 0, "yanchor": "bottom", "x": 0, "xanchor": "left"},
        showlegend=True,
    )
    return Markup(_lazy_figure(fig, height, {"displaylogo": False, "responsive": True}))


def _lazy_figure(fig: Any, height: int, config: dict[str, Any]) -> str:
    """A placeholder div of the chart's height and its figure as an inert JSON block: the page's
    charts.js parses and draws it when it comes near the screen, so no chart delays the first screen."""
    from plotly.io.json import to_json_plotly

    div_id = f"chart-{uuid.uuid4().hex}"
    # plotly's JSON escapes <, > and / as \u003c, \u003e, \u002f: no "</script>" can end the block early
    block = to_json_plotly({**fig.to_dict(), "config": config})
    return (f'<div id="{div_id}" class="plotly-graph-div" data-figure="{div_id}-figure" aria-busy="true" '
            f'style="height:{height}px; width:100%;"></div>\n'
            f'<script type="application/json" id="{div_id}-figure">{block}</script>')


def format_number(value: Any, digits: int = 3) -> str:
    """A number for a table: integers with separators, others to ``digits`` significant figures."""
    if not is_finite(value):
        return "–"
    value = float(value)
    if value.is_integer() and abs(value) < 1e7:
        return f"{int(value):,}"
    if abs(value) >= 10 ** (digits + 2) or abs(value) < 10 ** -(digits + 1):
        return f"{value:.{digits}g}"
    return f"{value:,.{max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))}f}"


def environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    env.filters["mib"] = lambda v: f"{v / 2**20:,.0f} MiB" if is_finite(v) else "–"
    env.filters["pct"] = lambda v: f"{v * 100:.1f}%" if is_finite(v) else "–"
    return env


def render(template: str, **context: Any) -> str:
    """Render a page template; the shell gets plotly.js (inlined, once) unless the context supplies it."""
    import plotly.offline
    from markupsafe import Markup

    context.setdefault("plotlyjs", Markup(plotly.offline.get_plotlyjs()))
    return environment().get_template(template).render(**context)


def write_html(path: Path, text: str, writer: Writer = write_all) -> Path:
    """Write a page atomically (temp file, then rename; a full disk leaves no temporary); returns the path."""
    return write_output(path, text, writer=writer)
