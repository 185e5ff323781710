"""The self-contained HTML page every report-like view shares: the page shell, one inlined plotly.js,
figures embedded as divs, and the chart conventions (a palette with no repeated colour, dtype marks,
log axes when values span more than 30x).

Public helpers (``report`` and ``history`` use them):

- ``render(template, **context)``: render a template of ``bench/templates`` with autoescaping on; a
  page template ``{% extends "page.html.j2" %}`` and fills ``title``, ``header`` and ``content``; the
  shell inlines the CSS and plotly.js once (no network request, ever).
- ``figure_html(fig, height)``: a plotly figure as an embeddable div (no plotly.js, no MathJax).
- ``write_html(path, text)``: write atomically (a reader never sees half a page).
- ``Chart``, ``plot_text``, ``axis_type``, ``Palette``, ``DTYPE_SYMBOLS``, ``DTYPE_DASHES``.
"""

from __future__ import annotations

import colorsys
import html
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.paths import Writer, write_all, write_atomic

TEMPLATES = Path(__file__).parent / "templates"
LOG_SPAN = 30.0
"""A chart's value axis is logarithmic when its largest positive value is more than this many times
its smallest: a 14 ms GPU bar next to a 20,000 ms CPU bar is invisible on a linear axis."""

# Well-separated qualitative colours (Tableau 10, then the darker/lighter halves of Tableau 20 and a few
# more); beyond these, ``Palette`` spreads hues by the golden angle, so no two series share a colour.
BASE_COLORS = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f3b73", "#a0522d", "#2ca02c", "#8c564b", "#17becf", "#bcbd22",
    "#7f3c8d", "#e7298a", "#666666", "#006d5b",
)
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


def _golden(n: int) -> str:
    hue = (0.11 + n * 0.618033988749895) % 1.0
    lightness = (0.38, 0.52, 0.45)[n % 3]
    r, g, b = colorsys.hls_to_rgb(hue, lightness, 0.65)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def figure_html(fig: Any, height: int, top: int = 50) -> Any:
    """A plotly figure as an embeddable div (plotly.js comes once from the page shell)."""
    from markupsafe import Markup

    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": top, "b": 50},
        legend={"font": {"size": 11}, "traceorder": "normal"},
        showlegend=True,
    )
    div = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        config={"displaylogo": False, "responsive": True},
        default_height=f"{height}px",
    )
    return Markup(div)


def format_number(value: Any, digits: int = 3) -> str:
    """A number for a table: integers with separators, others to ``digits`` significant figures."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    value = float(value)
    if value.is_integer() and abs(value) < 1e7:
        return f"{int(value):,}"
    if abs(value) >= 10 ** (digits + 2) or abs(value) < 10 ** -(digits + 1):
        return f"{value:.{digits}g}"
    return f"{value:,.{max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))}f}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    env.filters["mib"] = lambda v: f"{v / 2**20:,.0f} MiB" if _finite(v) else "–"
    env.filters["pct"] = lambda v: f"{v * 100:.1f}%" if _finite(v) else "–"
    return env


def render(template: str, **context: Any) -> str:
    """Render a page template; the shell gets plotly.js (inlined, once) unless the context supplies it."""
    import plotly.offline
    from markupsafe import Markup

    context.setdefault("plotlyjs", Markup(plotly.offline.get_plotlyjs()))
    return environment().get_template(template).render(**context)


def write_html(path: Path, text: str, writer: Writer = write_all) -> Path:
    """Write a page atomically (temp file, then rename; a full disk leaves no temporary); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, text, writer=writer)
