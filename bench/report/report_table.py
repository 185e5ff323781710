"""The report's all-cells table as a compact data block: one JSON array per cell, drawn by the page.

A 10,000-cell report used to carry 21 MB of table rows as HTML; the page now holds each cell's display
text and sort key once, in a ``<script type="application/json">`` block, and ``tables.js`` draws
``PAGE_ROWS`` rows at a time (sorting and filtering work on all of them). Every column is a ``Column``
entry: its header, its definition (the header's hover text) and how a cell's text and sort key are made.
A cell is ``[html, key]``: the text already escaped (markup only where the column adds it), and a number
(sorted as a number), a string (sorted as text) or null (no value: last in both directions); a cell shown
in short adds its full text, its title. Every cell is one line (the page's CSS clips it).
"""

from __future__ import annotations

import base64
import html as htmllib
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from bench.core.numbers import is_finite
from bench.pages.page import format_number as num
from bench.report.report_rows import Row
from bench.results import Timing, figure, value

PAGE_ROWS = 500
"""Rows drawn at once; the pager shows the others (a 43,000-cell table as 43,000 DOM rows takes minutes)."""

Cell = tuple[str, Any] | tuple[str, Any, str]
"""[html, sort key] or [html, sort key, title]: the title is the full text of a cell shown in short."""


def _mib(value: Any) -> str:
    return f"{value / 2**20:,.0f} MiB" if is_finite(value) else "–"


def _pct(value: Any) -> str:
    return f"{value * 100:.1f}%" if is_finite(value) else "–"


def _key(value: Any) -> float | None:
    return float(value) if is_finite(value) else None


def _number(value: Any) -> Cell:
    return num(value), _key(value)


@dataclass(frozen=True)
class Context:
    """What every cell of the table may read besides its row."""

    latency_bound_ms: float | None
    agreement_label: str


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Row, Context], Cell]
    title: str = ""  # the header's hover text: the column's definition
    css: str = ""  # the td's class


def _lat(r: Row, key: str) -> Cell:
    return _number(figure(r.rec, f"latency_ms.{key}"))


def _pair(field: str, first: str, second: str, between: str) -> Callable[[Row, Context], Cell]:
    """Two figures of one table of the record shown together ("a / b"), sorted by the first."""

    def cell(r: Row, _: Context) -> Cell:
        low, high = value(r.rec, f"{field}.{first}"), value(r.rec, f"{field}.{second}")
        if not is_finite(low):
            return "–", None
        return f"{num(low)}{between}{num(high)}", _key(low)

    return cell


def _status(r: Row, _: Context) -> Cell:
    status = escape(r.rec.status)
    return f'<span class="status status-{status}">{status}</span>', str(status)


def _setting(r: Row, _: Context) -> Cell:
    flags = "".join(f' <span class="status status-unstable flag">⚠ {escape(f)}</span>' for f in r.flags)
    return str(escape(r.setting)) + flags, r.setting.lower()


def _params(r: Row, _: Context) -> Cell:
    params = r.rec.params
    return (f"{num(params / 1e6)} M" if params and is_finite(params) else "–"), _key(params)


def _qps(r: Row, _: Context) -> Cell:
    if not r.server:
        return "–", None
    invalid = ' <span class="status status-error">invalid</span>' if r.invalid else ""
    return f"{num(r.server.target_qps)} / {num(r.server.achieved_qps)}{invalid}", None


def _capacity(r: Row, ctx: Context) -> Cell:
    cap = r.capacity(ctx.latency_bound_ms)
    return (num(cap[0]), _key(cap[0])) if cap else ("–", None)


def _memory(r: Row, _: Context) -> Cell:
    peak = r.peak_memory
    return (f"{_mib(peak[0])} <small>({escape(peak[1])})</small>", _key(peak[0])) if peak else ("–", None)


def _accuracy(r: Row, _: Context) -> Cell:
    acc = r.rec.accuracy
    if acc and r.weights == "pretrained":
        return "; ".join(f"{escape(k)} {num(v)}" for k, v in acc.items()), None
    why = f"not measured ({escape(r.weights)} weights)" if r.weights != "pretrained" else "–"
    return f'<span class="muted">{why}</span>', None


def _agreement(r: Row, _: Context) -> Cell:
    agree = r.agreement
    stress = ' <small class="muted">(stress test)</small>' if is_finite(agree) and r.weights == "random" else ""
    return _pct(agree) + stress, _key(agree)


def _roofline(r: Row, _: Context) -> Cell:
    if "roofline-bad-reference" in [f.code for f in r.rec.flags]:
        return ('<span class="muted" title="above 1: the matrix-product reference under-read the machine; see the '
                "record's flags\">bad reference</span>"), None
    fraction = value(r.rec, "extra.roofline.fraction")
    return _pct(fraction), _key(fraction)


def timing_text(timing: Timing | None) -> str | None:
    """How a cell was timed, in short: its warm-up and iterations as written (the rest is the cell's title)."""
    written = timing.to_dict() if timing is not None else {}
    parts = [f"{k}={written[k]}" for k in ("warmup", "iterations") if k in written]
    return ", ".join(parts) or None


def _timing(r: Row, _: Context) -> Cell:
    timing = r.rec.timing.to_dict() if r.rec.timing is not None else {}
    full = "; ".join(f"{k}={v}" for k, v in timing.items())
    return f"<small>{escape(timing_text(r.rec.timing) or '–')}</small>", None, full


def _text(value: Any) -> Cell:
    text = str(value) if value not in (None, "") else "–"
    return str(escape(text)), None if text == "–" else text.lower()


COLUMNS = (
    Column("task", lambda r, _: _text(r.rec.task)),
    Column("setting", _setting, css="setting"),
    Column("scenario", lambda r, _: _text(r.rec.scenario)),
    Column("status", _status),
    Column("params", _params),
    Column("latency p50 ms", lambda r, _: _lat(r, "p50"),
           "request latency p50: what one request waits (offline: its whole batch; server: with queueing)"),
    Column("latency p90 ms", lambda r, _: _lat(r, "p90"), "request latency p90; a bound judges it for single-stream"),
    Column("latency p99 ms", lambda r, _: _lat(r, "p99"), "request latency p99; a bound judges it for server"),
    Column("CI95 p50 ms", _pair("latency_ms", "ci95_low", "ci95_high", "–"), "95% confidence interval of the median request latency"),
    Column("n", lambda r, _: _lat(r, "n")),
    Column("time/image p50 ms", lambda r, _: _number(figure(r.rec, "time_per_image_ms.p50")),
           "amortised time per image p50: batch wall time ÷ batch size; not a latency"),
    Column("images/s", lambda r, _: _number(figure(r.rec, "throughput.images_per_s"))),
    Column("QPS target / achieved", _qps, "server: target / achieved requests per second"),
    Column("capacity req/s", _capacity),
    Column("tokens/s", lambda r, _: _number(figure(r.rec, "throughput.tokens_per_s"))),
    Column("tokens/image", lambda r, _: (num(r.rec.gen_tokens_mean), _key(r.rec.gen_tokens_mean))),
    Column("decode tok/s", lambda r, _: _number(figure(r.rec, "throughput.decode_tokens_per_s")),
           "decoding steps per second (one token per image per step)"),
    Column("per-token p50 / p99 ms", _pair("per_token_ms", "p50", "p99", " / "), "one decoding step, which each image of the batch waits"),
    Column("load s / first call ms", _pair("timing", "load_s", "first_call_ms", " / "), "model load; the cell's first, cold batch"),
    Column("peak memory", _memory),
    Column("J/image", lambda r, _: _number(r.joules)),
    Column("accuracy", _accuracy),
    Column("fp32 agreement", _agreement),
    Column("roofline fraction", _roofline),
    Column("timing", _timing, css="timing"),
    Column("cell", lambda r, _: (f"<code>{escape(str(r.rec.cell_id or '')[:10])}</code>",
                                 str(r.rec.cell_id or "") or None)),
)


COMPRESS_ROWS = 1000
"""Above this many rows the block is deflated and base64-encoded (the page inflates it with the browser's
own ``DecompressionStream``): 43,000 rows of JSON are about 30 MB, deflated about a tenth."""


_TAG = re.compile(r"<[^>]*>")


def _text_key(html: str) -> str | None:
    """A text cell's sort key as the page derives it: its text without markup, lower case; None when empty."""
    if "<" in html or "&" in html:  # markup or an entity: what the page shows is its text
        html = htmllib.unescape(_TAG.sub("", html))
    text = html.strip().lower()
    return None if text in ("", "–") else text


def _compact(cell: Cell, titles: dict[str, int]) -> Any:
    """A cell as the block stores it: its bare text where the key is the text's own (the page derives it),
    else [text, key] with a number's key to 4 significant figures, and a title as an index into ``titles``."""
    text, key = cell[0], cell[1]
    if isinstance(key, float):
        key = float(f"{key:.4g}")
        key = int(key) if key.is_integer() and abs(key) < 2**53 else key
    if len(cell) > 2:
        return [text, key, titles.setdefault(cell[2], len(titles))]  # type: ignore[misc]
    return text if key == _text_key(text) else [text, key]


def table_data(rows: list[Row], latency_bound_ms: float | None, agreement_label: str,
               columns: tuple[Column, ...] = COLUMNS) -> dict[str, Any]:
    """A table's block (the all-cells table's unless ``columns`` says another): ``rows`` is one ``[css class,
    cell, cell, ...]`` per row (``columns`` order, each cell as ``_compact`` stores it; the class marks
    flagged rows); ``titles`` the distinct titles the cells point at."""
    ctx = Context(latency_bound_ms, agreement_label)
    titles: dict[str, int] = {}
    body = [["unstable" if r.flags else "", *(_compact(c.cell(r, ctx), titles) for c in columns)] for r in rows]
    return {"page": PAGE_ROWS, "titles": list(titles), "rows": body}


@dataclass(frozen=True)
class Block:
    """The block as the page embeds it: its script type and its text."""

    type: str
    text: Markup


def script_block(data: dict[str, Any]) -> Block:
    """``data`` as compact JSON that is safe inside a ``<script>`` element (every "<" written "\\u003c", so
    nothing in it can end the element or open a comment); above ``COMPRESS_ROWS`` rows deflated and
    base64-encoded, which holds no "<" at all."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if len(data["rows"]) > COMPRESS_ROWS:
        packed = base64.b64encode(zlib.compress(text.encode(), 6)).decode()
        return Block("application/x-deflate-base64", Markup(packed))
    return Block("application/json", Markup(text.replace("<", "\\u003c")))


def headers(agreement_label: str, columns: tuple[Column, ...] = COLUMNS) -> list[dict[str, str]]:
    """The header cells: text, hover text (the fp32 agreement's is the page's label) and the td class."""
    return [{"text": c.header, "title": agreement_label if c.header == "fp32 agreement" else c.title, "css": c.css}
            for c in columns]


def _price(r: Row, _: Context) -> Cell:
    return (str(escape(r.price.text)), r.price.text.lower()) if r.price else ('<span class="muted">no price</span>', None)


def _tagged(text: str, tag: str) -> Markup:
    return Markup(f'{escape(text)} <span class="tag {tag}">{tag}</span>')


COST_COLUMNS = (
    Column("task", lambda r, _: _text(r.rec.task)),
    Column("setting", _setting, css="setting"),
    Column("device kind", lambda r, _: _text(r.kind.label)),
    Column("price used (source)", _price),
    Column("images/s", lambda r, _: _number(r.ips)),
    Column(_tagged("J/image", "measured"), lambda r, _: _number(r.joules)),
    Column("images/J", lambda r, _: _number(r.images_per_joule)),
    Column("energy source", lambda r, _: _text(value(r.rec, "energy.source") or "not measured")),
    Column(_tagged("USD per M images", "derived"), lambda r, _: _number(r.cost_per_million)),
    Column(_tagged("energy USD per M images", "derived"), lambda r, _: _number(r.energy_cost_per_million)),
)
"""The energy and cost table's columns (one row per finished cell), drawn from its own block."""
