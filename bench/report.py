"""The HTML report: size, speed, cost and quality side by side, for deciding what to run on what.

One self-contained file (plotly.js inlined once, images as data URIs, no external URL) rendered
with jinja2 and autoescaping on, so a caption, label, variant name or error message shows as text.
Every figure is labelled by how it was obtained: *measured* (by this run), *derived* (computed
from measured figures and a user-supplied price table) or *reported* (paper / model card).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import store
from bench.errors import UsageError
from bench.inputs import read_text
from bench.metrics import METRICS, headline_metric, metric_info
from bench.optimize import agreement_with_fp32

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

TEMPLATES = Path(__file__).parent / "templates"
DEFAULT_PRICES = Path(__file__).parent / "data" / "prices.toml"
REPORTED_LABEL = "reported (paper/model card)"
NONE_MEETS = "none meets it"
MAX_EXAMPLE_CELLS = 6
MAX_EXAMPLES_PER_CELL = 3
THUMB_WIDTH = 480
# Records are untrusted: a declared image side beyond this is ignored, a canvas is never taller than
# MAX_THUMB_HEIGHT, and at most MAX_SHAPES shapes are drawn per example.
MAX_DECLARED_SIDE = 1_000_000
MAX_THUMB_HEIGHT = 4 * THUMB_WIDTH
MAX_SHAPES = 200

# Per-stage latency: vision is part of ttft, so the stack is preprocess, vision, ttft - vision,
# decode, postprocess, which sums to about the end-to-end time.
STAGES = (
    ("preprocess", "preprocess"),
    ("vision", "vision encoder"),
    ("text_prefill", "text encoder + first token (ttft - vision)"),
    ("decode", "decode (remaining tokens)"),
    ("postprocess", "postprocess"),
)
MEMORY_FIELDS = (
    ("weights_bytes", "weights"),
    ("cuda_peak_allocated_bytes", "CUDA peak allocated"),
    ("cuda_peak_reserved_bytes", "CUDA peak reserved"),
    ("nvml_peak_used_bytes", "NVML peak used (whole GPU)"),
    ("peak_rss_bytes", "peak RSS (host)"),
)
# Axes that can tell two settings apart, in label order; the label shows the ones that vary.
_ALWAYS = ("variant", "device", "dtype", "batch_size")
_IF_VARYING = ("weights", "dataset", "attn", "compile", "num_beams", "max_new_tokens", "scenario")


# ---------------------------------------------------------------------------------------------
# prices


@dataclass
class PriceTable:
    """Device name -> USD per hour, from a TOML file the user supplies (see bench/data/prices.toml)."""

    prices: dict[str, float]
    source: str
    usd_per_kwh: float | None = None

    def lookup(self, device_name: str) -> tuple[str, float] | None:
        """Exact name first, then the longest key contained in the name, case-insensitively."""
        name = device_name.lower()
        for key, price in self.prices.items():
            if key.lower() == name:
                return key, price
        hits = [(key, price) for key, price in self.prices.items() if key.lower() in name]
        return max(hits, key=lambda kv: len(kv[0])) if hits else None


def load_prices(path: Path | None = None) -> PriceTable:
    """Read a price table; a missing or malformed file is a UsageError naming it."""
    path = Path(path) if path is not None else DEFAULT_PRICES
    try:
        data = tomllib.loads(read_text(path, "price table"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"price table {path} is not valid TOML: {exc}") from None
    prices = data.get("prices")
    if not isinstance(prices, dict) or not prices:
        raise UsageError(
            f"price table {path} has no [prices] table; accepted: [prices] device = USD per hour"
        )
    for key, value in prices.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise UsageError(
                f"price table {path}: price for {key!r} is {value!r}; accepted: a number >= 0 (USD per hour)"
            )
    energy = data.get("energy", {})
    kwh = energy.get("usd_per_kwh") if isinstance(energy, dict) else energy
    if kwh is not None and (_num(kwh) is None or kwh < 0):
        raise UsageError(f"price table {path}: [energy] usd_per_kwh is {kwh!r}; accepted: a number >= 0")
    label = "the default example table (bench/data/prices.toml)" if path == DEFAULT_PRICES else str(path)
    return PriceTable({str(k): float(v) for k, v in prices.items()}, label, kwh)


# ---------------------------------------------------------------------------------------------
# one row per cell, with the derived figures


def _get(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _table(d: Any, *keys: str) -> dict[str, Any]:
    """A nested table of an untrusted record; {} when it is missing or not a table."""
    value = _get(d, *keys)
    return value if isinstance(value, dict) else {}


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def lower_is_better(metric: str | None) -> bool:
    """From the metric registry (bench.metrics.METRICS): CER and WER are lower-is-better."""
    info = metric_info(metric) if metric else None
    return info is not None and not info.higher_is_better


def primary_metric(accuracy: dict[str, Any] | None, task: str | None = None) -> str | None:
    """The metric a cell is judged by: its task's headline metric, else the first registered metric it
    carries (in registry order); names the registry does not define are never chosen."""
    names = {k for k, v in (accuracy or {}).items() if _num(v) is not None}
    headline = headline_metric(task) if task else None
    if headline in names:
        return headline
    return next((name for name in METRICS if name in names), None)


def _gpu_names(env: dict[str, Any]) -> list[str]:
    """GPU names anywhere under an env key that mentions gpu/cuda (the fingerprint's layout may vary)."""
    names: list[str] = []

    def walk(node: Any, in_gpu: bool) -> None:
        if isinstance(node, dict):
            if in_gpu and isinstance(node.get("name"), str):
                names.append(node["name"])
            for key, value in node.items():
                walk(value, in_gpu or any(s in str(key).lower() for s in ("gpu", "cuda", "nvml")))
        elif isinstance(node, list):
            for item in node:
                if in_gpu and isinstance(item, str):
                    names.append(item)
                else:
                    walk(item, in_gpu)

    walk(env, False)
    return list(dict.fromkeys(names))


def _cpu_name(env: dict[str, Any]) -> str | None:
    for keys in (("cpu", "model"), ("cpu", "brand"), ("cpu", "name"), ("cpu_model",), ("processor",)):
        value = _get(env, *keys)
        if isinstance(value, str) and value:
            return value
    return None


def device_name(record: dict[str, Any], env: dict[str, Any]) -> str:
    """The hardware a cell ran on, by name: the GPU's name for cuda devices, "cpu" for the CPU."""
    explicit = _get(record, "extra", "device_name")
    if isinstance(explicit, str) and explicit:
        return explicit
    device = str(record.get("device") or "")
    if device.startswith("cuda"):
        gpus = _gpu_names(env)
        index = int(device.split(":")[1]) if re.fullmatch(r"cuda:\d+", device) else 0
        if gpus:
            return gpus[index] if index < len(gpus) else gpus[0]
    return device or "unknown"


@dataclass
class Row:
    """One cell prepared for display: the record plus labels and derived figures."""

    rec: dict[str, Any]
    run: str
    device_name: str
    setting: str = ""
    metric: str | None = None
    price: tuple[str, float] | None = None
    usd_per_kwh: float | None = None

    @property
    def ok(self) -> bool:
        return self.rec.get("status") == "ok"

    @property
    def label(self) -> str:
        return f"{self.rec.get('task')} · {self.setting}"

    @property
    def acc(self) -> float | None:
        return _num(_get(self.rec, "accuracy", self.metric)) if self.metric else None

    @property
    def p50(self) -> float | None:
        return _num(_get(self.rec, "latency_ms", "p50"))

    @property
    def p90(self) -> float | None:
        return _num(_get(self.rec, "latency_ms", "p90"))

    @property
    def ips(self) -> float | None:
        value = _num(_get(self.rec, "throughput", "images_per_s"))
        return value if value and value > 0 else None

    @property
    def peak_memory(self) -> tuple[float, str] | None:
        """The memory that limits how many copies fit: GPU allocation on cuda, host RSS on cpu."""
        order = ("cuda_peak_allocated_bytes", "nvml_peak_used_bytes", "cuda_peak_reserved_bytes")
        if not str(self.rec.get("device") or "").startswith("cuda"):
            order = ("peak_rss_bytes",)
        for key in order:
            value = _num(_get(self.rec, "memory", key))
            if value:
                return value, dict(MEMORY_FIELDS)[key]
        return None

    @property
    def joules(self) -> float | None:
        return _num(_get(self.rec, "energy", "joules_per_image"))

    @property
    def cost_per_million(self) -> float | None:
        """Derived: price per hour / 3600 / images per second * 1e6."""
        if self.price is None or self.ips is None:
            return None
        return self.price[1] / 3600.0 / self.ips * 1e6

    @property
    def energy_cost_per_million(self) -> float | None:
        if self.joules is None or self.usd_per_kwh is None:
            return None
        return self.joules * 1e6 / 3.6e6 * self.usd_per_kwh

    @property
    def stages(self) -> dict[str, float] | None:
        s = self.rec.get("stages_ms") or {}
        pre, vision, ttft = _num(s.get("preprocess")), _num(s.get("vision")), _num(s.get("ttft"))
        decode, post = _num(s.get("decode")), _num(s.get("postprocess"))
        if all(v is None for v in (pre, vision, ttft, decode, post)):
            return None
        prefill = max(ttft - (vision or 0.0), 0.0) if ttft is not None else None
        values = (pre, vision, prefill, decode, post)
        return {key: (v or 0.0) for (key, _), v in zip(STAGES, values, strict=True)}


def _fmt_axis(axis: str, value: Any) -> str:
    if axis == "batch_size":
        return f"bs{value}"
    if axis == "compile":
        return "compiled" if value else "eager"
    if axis in ("variant", "device", "dtype", "dataset", "run", "scenario"):
        return str(value)
    short = {"num_beams": "beams", "max_new_tokens": "max_new", "weights": "weights"}.get(axis, axis)
    return f"{short}={value}"


def _label_rows(rows: list[Row]) -> None:
    """Give each row a short setting label naming the axes that vary, unique within its task."""
    varying = [a for a in _IF_VARYING if len({json.dumps(r.rec.get(a)) for r in rows}) > 1]
    settings_keys = sorted({k for r in rows for k in (r.rec.get("settings") or {})})
    varying_settings = [
        k for k in settings_keys if len({json.dumps((r.rec.get("settings") or {}).get(k)) for r in rows}) > 1
    ]
    several_runs = len({r.run for r in rows}) > 1
    for r in rows:
        parts = [r.run] if several_runs else []
        parts += [_fmt_axis(a, r.rec.get(a)) for a in (*_ALWAYS, *varying)]
        own = r.rec.get("settings") or {}
        parts += [f"{k}={own[k]}" for k in varying_settings if own.get(k) is not None]
        r.setting = " ".join(parts)
    seen = Counter((r.rec.get("task"), r.setting) for r in rows)
    for r in rows:
        if seen[(r.rec.get("task"), r.setting)] > 1:
            r.setting += f" #{str(r.rec.get('cell_id'))[:6]}"


def _task_metrics(rows: list[Row]) -> dict[str, str | None]:
    """One metric per task (the most common primary metric), so settings compare like with like."""
    out: dict[str, str | None] = {}
    for task in dict.fromkeys(r.rec.get("task") for r in rows):
        names = [primary_metric(r.rec.get("accuracy"), task) for r in rows if r.rec.get("task") == task]
        names = [n for n in names if n]
        out[task] = Counter(names).most_common(1)[0][0] if names else None
    return out


@dataclass
class Run:
    name: str
    path: Path
    env: dict[str, Any]
    rows: list[Row]


def load_runs(run_dirs: list[Path], prices: PriceTable) -> list[Run]:
    """Read every run directory (latest record per cell) into labelled rows with derived figures."""
    if not run_dirs:
        raise UsageError("no run directory given; accepted: one or more directories written by `run`")
    runs: list[Run] = []
    names = Counter(Path(d).resolve().name for d in run_dirs)
    for d in run_dirs:
        path = Path(d)
        if not (path / store.RESULTS).is_file():
            raise UsageError(
                f"no {store.RESULTS} in {path}; accepted: a run directory written by florence2-bench run"
            )
        name = path.resolve().name if names[path.resolve().name] == 1 else str(path)
        env = store.read_env(path)
        rows = []
        by_cell = store.latest_by_cell(store.read_records(path))
        for cell_id, rate in agreement_with_fp32(list(by_cell.values())).items():
            by_cell[cell_id].setdefault("extra", {})["agreement_fp32"] = rate
        for rec in by_cell.values():
            dev = device_name(rec, env)
            rows.append(Row(rec, name, dev, price=prices.lookup(dev), usd_per_kwh=prices.usd_per_kwh))
        runs.append(Run(name, path, env, rows))
    all_rows = [r for run in runs for r in run.rows]
    _label_rows(all_rows)
    metrics = _task_metrics(all_rows)
    for r in all_rows:
        r.metric = metrics.get(r.rec.get("task"))
    return runs


# ---------------------------------------------------------------------------------------------
# decisions: Pareto frontier and the recommendation


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


@dataclass
class Recommendation:
    task: str
    metric: str | None
    constraint: str
    best: Row | None
    met: int
    total: int
    verdict: str
    notes: list[str] = field(default_factory=list)


def _meets_floor(value: float, floor: float, metric: str | None) -> bool:
    return value <= floor if lower_is_better(metric) else value >= floor


def recommend(
    rows: list[Row], task: str, latency_bound_ms: float | None, accuracy_floor: float | None
) -> Recommendation:
    """The cheapest ok setting for a task within the p90 bound and above the accuracy floor."""
    ok = [r for r in rows if r.rec.get("task") == task and r.ok]
    metric = next((r.metric for r in ok if r.metric), None)
    parts = []
    if latency_bound_ms is not None:
        parts.append(f"p90 ≤ {latency_bound_ms:g} ms")
    if accuracy_floor is not None:
        parts.append(f"{metric or 'accuracy'} {'≤' if lower_is_better(metric) else '≥'} {accuracy_floor:g}")
    rec = Recommendation(task, metric, " and ".join(parts) or "no bound or floor given", None, 0, len(ok), "")
    if not ok:
        rec.verdict = f"{NONE_MEETS}: no cell of this task finished"
        return rec
    candidates = ok
    if latency_bound_ms is not None:
        candidates = [r for r in candidates if r.p90 is not None and r.p90 <= latency_bound_ms]
    measured = [r for r in ok if r.acc is not None]
    if accuracy_floor is not None:
        if not measured:
            random_only = all(r.rec.get("weights") == "random" for r in ok)
            why = "accuracy not measured (random weights)" if random_only else "accuracy not measured"
            rec.verdict = f"{NONE_MEETS}: {why}, so the accuracy floor cannot be checked"
            return rec
        within = len(candidates)
        candidates = [
            r for r in candidates if r.acc is not None and _meets_floor(r.acc, accuracy_floor, metric)
        ]
        if not candidates:
            rec.verdict = f"{NONE_MEETS}: {within} of {len(ok)} settings meet the latency bound, none the accuracy floor"
            return rec
    elif not measured:
        random_only = all(r.rec.get("weights") == "random" for r in ok)
        rec.notes.append(
            "accuracy not measured (random weights): only speed and cost were compared"
            if random_only
            else "accuracy not measured: only speed and cost were compared"
        )
    if not candidates:
        rec.verdict = f"{NONE_MEETS}: no setting has p90 ≤ {latency_bound_ms:g} ms"
        return rec
    rec.met = len(candidates)
    priced = [r for r in candidates if r.cost_per_million is not None]
    if priced:
        rec.best = min(priced, key=lambda r: r.cost_per_million)
        rec.verdict = "cheapest setting that meets it"
        unpriced = sorted({r.device_name for r in candidates if r.cost_per_million is None})
        if unpriced:
            rec.notes.append(f"not costed (no price in the table): {', '.join(unpriced)}")
    else:
        fast = [r for r in candidates if r.ips is not None] or candidates
        rec.best = max(fast, key=lambda r: r.ips or 0.0)
        devices = ", ".join(sorted({r.device_name for r in candidates}))
        rec.verdict = f"fastest setting that meets it; cost unknown (no price for {devices})"
    if latency_bound_ms is None and accuracy_floor is None:
        rec.notes.append("give --latency-bound-ms and --accuracy-floor to constrain the choice")
    return rec


# ---------------------------------------------------------------------------------------------
# charts


@dataclass
class Chart:
    title: str
    html: Any
    note: str = ""


def _t(text: Any) -> str:
    """Text for plotly, which renders a subset of HTML in labels: escape it so it shows as typed."""
    return html.escape(str(text), quote=False)


def _fig_html(fig: Any, height: int, top: int = 50) -> Any:
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


def _bar_height(n: int) -> int:
    return max(260, 110 + 26 * n)


def _tasks(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(str(r.rec.get("task")) for r in rows))


def _size_quality_charts(rows: list[Row]) -> list[Chart]:
    import plotly.graph_objects as go

    charts = []
    measured = [r for r in rows if r.ok and r.acc is not None and _num(r.rec.get("params"))]
    for task in _tasks(measured):
        pts = [r for r in measured if r.rec.get("task") == task]
        metric = pts[0].metric
        fig = go.Figure(
            go.Scatter(
                x=[r.rec["params"] / 1e6 for r in pts],
                y=[r.acc for r in pts],
                mode="markers",
                marker={"size": 11},
                name=_t(f"measured: {metric} ({len(pts)} settings)"),
                text=[_t(r.setting) for r in pts],
                hovertemplate="%{text}<br>%{x:.1f} M params<br>%{y:.4g}<extra>measured</extra>",
            )
        )
        fig.update_layout(
            title=_t(f"{task}: parameters vs {metric} (measured on {pts[0].rec.get('dataset')})"),
            xaxis_title="parameters (millions)",
            yaxis_title=_t(f"{metric} (measured)"),
        )
        charts.append(Chart(f"{task}: measured", _fig_html(fig, 380)))
    reported: dict[str, dict[str, tuple[float, float]]] = {}
    for r in rows:
        params = _num(r.rec.get("params"))
        for key, value in _table(r.rec, "extra", "reported").items():
            if params and _num(value) is not None:
                reported.setdefault(str(key), {})[str(r.rec.get("variant"))] = (params / 1e6, float(value))
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
                    name=_t(f"{REPORTED_LABEL}: {key}"),
                    text=[_t(v) for v in variants],
                    hovertemplate="%{text}<br>%{x:.1f} M params<br>%{y}<extra>reported</extra>",
                )
            )
        fig.update_layout(
            title=_t(f"parameters vs {REPORTED_LABEL} results (not measured here)"),
            xaxis_title="parameters (millions, as built here)",
            yaxis_title="reported value (each benchmark's own scale)",
        )
        charts.append(
            Chart(REPORTED_LABEL, _fig_html(fig, 420), "Open diamonds: numbers from the paper or model card.")
        )
    return charts


_PARETO_AXES = (
    ("latency p50 (ms)", lambda r: r.p50, True),
    ("latency p90 (ms)", lambda r: r.p90, True),
    ("throughput (images/s)", lambda r: r.ips, False),
    ("peak memory (MiB)", lambda r: r.peak_memory[0] / 2**20 if r.peak_memory else None, True),
)


def _pareto_charts(rows: list[Row]) -> list[Chart]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    charts = []
    ok = [r for r in rows if r.ok and r.acc is not None]
    for task in _tasks(ok):
        pts = [r for r in ok if r.rec.get("task") == task]
        metric = pts[0].metric
        y_higher = not lower_is_better(metric)
        fig = make_subplots(rows=2, cols=2, subplot_titles=[_t(a[0]) for a in _PARETO_AXES])
        for n, (axis, getter, x_lower) in enumerate(_PARETO_AXES):
            row, col = n // 2 + 1, n % 2 + 1
            sel = [r for r in pts if getter(r) is not None]
            xy = [(getter(r), r.acc) for r in sel]
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in xy],
                    y=[p[1] for p in xy],
                    mode="markers",
                    marker={"size": 9, "color": "#4c78a8"},
                    text=[_t(r.setting) for r in sel],
                    hovertemplate="%{text}<br>%{x:.4g}, %{y:.4g}<extra></extra>",
                    name="setting",
                    showlegend=n == 0,
                ),
                row=row,
                col=col,
            )
            front = pareto_front(xy, x_lower=x_lower, y_higher=y_higher)
            fig.add_trace(
                go.Scatter(
                    x=[xy[i][0] for i in front],
                    y=[xy[i][1] for i in front],
                    mode="lines+markers",
                    line={"shape": "hv", "color": "#e45756"},
                    marker={"size": 11, "symbol": "circle-open", "color": "#e45756"},
                    name="Pareto frontier",
                    showlegend=n == 0,
                    hoverinfo="skip",
                ),
                row=row,
                col=col,
            )
            fig.update_xaxes(title_text=_t(axis), row=row, col=col)
            fig.update_yaxes(title_text=_t(metric), row=row, col=col)
        fig.update_layout(title=_t(f"{task}: {metric} against speed and memory"))
        charts.append(Chart(f"{task}", _fig_html(fig, 760, top=90)))
    return charts


def _throughput_charts(rows: list[Row]) -> list[Chart]:
    import plotly.graph_objects as go

    charts = []
    ok = [r for r in rows if r.ok and r.ips is not None]
    for task in _tasks(ok):
        groups: dict[str, list[Row]] = {}
        for r in (r for r in ok if r.rec.get("task") == task):
            key = re.sub(r"\s?bs\d+", "", r.setting).strip()
            groups.setdefault(key, []).append(r)
        fig = go.Figure()
        for key, members in groups.items():
            members.sort(key=lambda r: r.rec.get("batch_size") or 0)
            fig.add_trace(
                go.Scatter(
                    x=[r.rec.get("batch_size") for r in members],
                    y=[r.ips for r in members],
                    mode="lines+markers",
                    name=_t(key),
                )
            )
        fig.update_layout(
            title=_t(f"{task}: throughput vs batch size"),
            xaxis_title="batch size",
            yaxis_title="images per second (measured)",
            xaxis={"type": "log", "dtick": math.log10(2)},
        )
        charts.append(Chart(task, _fig_html(fig, 400)))
    return charts


def _stage_chart(rows: list[Row], several_tasks: bool) -> Chart | None:
    import plotly.graph_objects as go

    sel = [r for r in rows if r.ok and r.stages is not None]
    if not sel:
        return None
    labels = [_t(r.label if several_tasks else r.setting) for r in sel]
    fig = go.Figure()
    for key, name in STAGES:
        fig.add_trace(go.Bar(y=labels, x=[r.stages[key] for r in sel], name=_t(name), orientation="h"))
    fig.add_trace(
        go.Scatter(
            y=labels,
            x=[_num(_get(r.rec, "time_per_image_ms", "p50")) for r in sel],
            mode="markers",
            marker={"symbol": "line-ns-open", "size": 18, "color": "black"},
            name="time per image p50",
        )
    )
    fig.update_layout(
        barmode="stack",
        title="median per-stage latency per image",
        xaxis_title="milliseconds (medians of each stage, measured)",
        yaxis={"autorange": "reversed"},
    )
    note = (
        "The vision encoder runs inside time-to-first-token, so the stack shows vision and "
        "ttft − vision separately; preprocess + ttft + decode + postprocess ≈ end to end. Stages are per "
        "image, amortised over the batch; each is its own median, so the stack need not equal the time per "
        "image p50 (black tick) exactly."
    )
    return Chart("per-stage latency", _fig_html(fig, _bar_height(len(sel))), note)


def _memory_chart(rows: list[Row], several_tasks: bool) -> Chart | None:
    import plotly.graph_objects as go

    sel = [r for r in rows if r.ok and any(_num(_get(r.rec, "memory", k)) for k, _ in MEMORY_FIELDS)]
    if not sel:
        return None
    labels = [_t(r.label if several_tasks else r.setting) for r in sel]
    fig = go.Figure()
    for key, name in MEMORY_FIELDS:
        values = [(_num(_get(r.rec, "memory", key)) or 0) / 2**20 or None for r in sel]
        if any(values):
            fig.add_trace(go.Bar(y=labels, x=values, name=_t(name), orientation="h"))
    fig.update_layout(
        barmode="group",
        title="memory per setting",
        xaxis_title="MiB (measured peaks)",
        yaxis={"autorange": "reversed"},
    )
    return Chart("memory", _fig_html(fig, _bar_height(len(sel) * 2)))


def _distribution_chart(rows: list[Row], several_tasks: bool) -> Chart | None:
    import plotly.graph_objects as go

    sel = [r for r in rows if r.ok and [s for s in (r.rec.get("samples_ms") or []) if _num(s) is not None]]
    if not sel:
        return None
    fig = go.Figure()
    for r in sel:
        fig.add_trace(
            go.Box(
                x=[s for s in r.rec["samples_ms"] if _num(s) is not None],
                name=_t(r.label if several_tasks else r.setting),
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                marker={"size": 4},
                showlegend=False,
            )
        )
    fig.update_layout(
        title="request latency (what one request waits): raw samples",
        xaxis_title="milliseconds (measured)",
        yaxis={"autorange": "reversed"},
    )
    return Chart("latency distributions", _fig_html(fig, _bar_height(len(sel))))


def _cost_charts(rows: list[Row], several_tasks: bool) -> list[Chart]:
    import plotly.graph_objects as go

    charts = []
    energy = [r for r in rows if r.ok and r.joules is not None]
    if energy:
        fig = go.Figure(
            go.Bar(
                y=[_t(r.label if several_tasks else r.setting) for r in energy],
                x=[r.joules for r in energy],
                orientation="h",
                text=[_t(_get(r.rec, "energy", "source") or "") for r in energy],
                textposition="none",
                hovertemplate="%{y}<br>%{x:.4g} J/image<br>source: %{text}<extra></extra>",
            )
        )
        fig.update_layout(
            title="energy per image (measured)",
            xaxis_title="joules per image",
            yaxis={"autorange": "reversed"},
        )
        charts.append(Chart("energy", _fig_html(fig, _bar_height(len(energy)))))
    costed = [r for r in rows if r.ok and r.cost_per_million is not None]
    if costed:
        fig = go.Figure(
            go.Bar(
                y=[_t(r.label if several_tasks else r.setting) for r in costed],
                x=[r.cost_per_million for r in costed],
                orientation="h",
                marker={"color": "#72b7b2"},
                text=[_t(f"{r.price[0]} at ${r.price[1]:g}/h") for r in costed],
                textposition="none",
                hovertemplate="%{y}<br>$%{x:.4g} per million images<br>%{text}<extra>derived</extra>",
            )
        )
        fig.update_layout(
            title="cost per million images (derived: price per hour / throughput)",
            xaxis_title="USD per million images (derived)",
            yaxis={"autorange": "reversed"},
        )
        charts.append(Chart("cost", _fig_html(fig, _bar_height(len(costed)))))
    return charts


# ---------------------------------------------------------------------------------------------
# example outputs


def _shapes(answer: Any) -> list[tuple[str, list[float], str]]:
    """(kind, coordinates, label) for every box, quad or polygon in a parsed answer."""
    if not isinstance(answer, dict):
        return []
    out: list[tuple[str, list[float], str]] = []

    def listed(key: str) -> list[Any]:  # answers in records are untrusted: a non-list is no shapes
        value = answer.get(key)
        return value if isinstance(value, list) else []

    def labels(key: str, n: int) -> list[str]:
        values = listed(key)
        return [str(values[i]) if i < len(values) else "" for i in range(n)]

    def flat_polys(node: Any) -> list[list[float]]:
        if isinstance(node, list) and node and all(_num(v) is not None for v in node):
            return [[float(v) for v in node]]
        if isinstance(node, list):
            return [p for item in node for p in flat_polys(item)]
        return []

    for key, label_key in (("bboxes", "bboxes_labels"), ("bboxes", "labels")):
        boxes = listed(key)
        if boxes and (label_key in answer or label_key == "labels"):
            for box, label in zip(boxes, labels(label_key, len(boxes)), strict=True):
                if isinstance(box, list) and len(box) == 4 and all(_num(v) is not None for v in box):
                    out.append(("box", [float(v) for v in box], label))
            break
    for key, label_key in (("quad_boxes", "labels"), ("polygons", "polygons_labels"), ("polygons", "labels")):
        items = listed(key)
        if not items:
            continue
        for item, label in zip(items, labels(label_key, len(items)), strict=True):
            out += [("poly", p, label) for p in flat_polys(item) if len(p) >= 6]
        if key == "polygons":
            break
    return out


def _inside(run_dir: Path, relative: Any) -> Path | None:
    """The example image, only if it lies inside the run directory (records are untrusted input)."""
    if not isinstance(relative, str) or not relative:
        return None
    path = (run_dir / relative).resolve()
    return path if path.is_file() and path.is_relative_to(run_dir.resolve()) else None


def _draw_example(run_dir: Path, example: dict[str, Any]) -> tuple[str | None, str]:
    """A PNG data URI of the example image with the predicted shapes drawn, and a note."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = (_num(example.get(k)) for k in ("width", "height"))
    if not (width and height and 1 <= width <= MAX_DECLARED_SIDE and 1 <= height <= MAX_DECLARED_SIDE):
        width = height = None  # an absurd declared size is not trusted (nor allocated)
    path = _inside(run_dir, example.get("image_file"))
    note = ""
    try:
        if path is not None:
            with Image.open(path) as img:
                img = img.convert("RGB")
        elif width and height:
            fit = min(1.0, THUMB_WIDTH / width)  # the canvas is made at thumbnail size, never at the declared one
            size = (max(1, round(width * fit)), min(MAX_THUMB_HEIGHT, max(1, round(height * fit))))
            img = Image.new("RGB", size, (235, 235, 235))
            note = "image file not saved: shapes drawn on a blank canvas of the image's size"
        else:
            return None, "image file not saved"
    except (OSError, Image.DecompressionBombError) as exc:
        return None, f"image unreadable: {exc}"
    sx = img.width / width if width else 1.0
    sy = img.height / height if height else 1.0
    scale = min(1.0, THUMB_WIDTH / img.width)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    sx, sy = sx * scale, sy * scale
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    colors = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6")
    bound = 4.0 * max(img.width, img.height)  # shapes far outside the image are clipped, not overflowed

    def clip(v: float) -> float:
        return max(-bound, min(bound, v))

    for n, (kind, coords, label) in enumerate(_shapes(example.get("answer"))[:MAX_SHAPES]):
        color = colors[n % len(colors)]
        xy = [(clip(coords[i] * sx), clip(coords[i + 1] * sy)) for i in range(0, len(coords) - 1, 2)]
        if kind == "box":
            (x1, y1), (x2, y2) = xy
            draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=color, width=2)
        else:
            draw.polygon(xy, outline=color, width=2)
        if label:
            try:
                draw.text((xy[0][0] + 2, xy[0][1] + 1), label[:40], fill=color, font=font)
            except UnicodeEncodeError:
                draw.text(
                    (xy[0][0] + 2, xy[0][1] + 1), label[:40].encode("ascii", "replace").decode(), fill=color
                )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), note


def _examples(runs: list[Run]) -> list[dict[str, Any]]:
    """A few cells' example outputs, one cell per (task, variant), pretrained weights first."""
    cells = [(run, r) for run in runs for r in run.rows if r.ok and r.rec.get("examples")]
    cells.sort(key=lambda c: c[1].rec.get("weights") != "pretrained")
    picked, seen = [], set()
    for run, r in cells:
        key = (r.rec.get("task"), r.rec.get("variant"))
        if key in seen or len(picked) >= MAX_EXAMPLE_CELLS:
            continue
        seen.add(key)
        items = []
        for ex in r.rec["examples"][:MAX_EXAMPLES_PER_CELL]:
            if not isinstance(ex, dict):
                continue
            uri, note = _draw_example(run.path, ex)
            answer = ex.get("answer")
            items.append(
                {
                    "image_id": ex.get("image_id"),
                    "uri": uri,
                    "note": note,
                    "text": str(ex.get("text") if ex.get("text") is not None else ""),
                    "answer": answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False),
                }
            )
        picked.append({"row": r, "examples": items})
    return picked


# ---------------------------------------------------------------------------------------------
# regression section (bench.compare is optional here)


def _regression(baseline: Path | None, current: Path) -> dict[str, Any] | None:
    if baseline is None:
        return None
    if not (Path(baseline) / store.RESULTS).is_file():
        raise UsageError(
            f"no {store.RESULTS} in baseline {baseline}; accepted: a run directory written by `run`"
        )
    try:
        from bench.compare import compare_dirs
    except ImportError as exc:
        return {"unavailable": f"regression compare unavailable (bench.compare could not be imported: {exc})"}
    result = compare_dirs(Path(baseline), Path(current))
    return {
        "baseline": str(baseline),
        "rows": list(result.rows),
        "unmatched_baseline": list(result.unmatched_baseline),
        "unmatched_current": list(result.unmatched_current),
        "env_warnings": list(result.env_warnings),
        "regressed": bool(result.regressed),
    }


# ---------------------------------------------------------------------------------------------
# summary, environment, method


def _weights_badge(rows: list[Row]) -> tuple[str, str]:
    modes = {r.rec.get("weights") for r in rows}
    if modes == {"random"}:
        return "RANDOM WEIGHTS — accuracy not measured", "badge-random"
    if modes == {"pretrained"}:
        return "PRETRAINED WEIGHTS — accuracy measured", "badge-pretrained"
    if not rows:
        return "NO CELLS", "badge-random"
    return "MIXED WEIGHTS — random-weight cells have no accuracy", "badge-mixed"


def _distinct(rows: list[Row], key: str) -> str:
    return ", ".join(str(v) for v in dict.fromkeys(r.rec.get(key) for r in rows)) or "–"


def _why_unstable(r: Row) -> str:
    lat = r.rec.get("latency_ms") or {}
    parts = []
    if _num(lat.get("cv")) is not None:
        parts.append(f"coefficient of variation {lat['cv'] * 100:.0f}%")
    if _num(lat.get("ci95_low")) is not None and _num(lat.get("ci95_high")) is not None:
        parts.append(f"95% CI of the median {lat['ci95_low']:.1f}–{lat['ci95_high']:.1f} ms")
    if _num(lat.get("n")) is not None:
        parts.append(f"n = {lat['n']}")
    return "; ".join(parts) or "flagged unstable by the run (no spread recorded)"


def _summary(runs: list[Run], rows: list[Row]) -> dict[str, Any]:
    statuses = Counter(str(r.rec.get("status")) for r in rows)
    where = []
    for run in runs:
        devices = sorted({r.device_name for r in run.rows})
        host = _get(run.env, "hostname") or _get(run.env, "host") or _get(run.env, "platform", "node")
        where.append(
            {
                "run": run.name,
                "path": str(run.path),
                "host": host,
                "cpu": _cpu_name(run.env),
                "devices": ", ".join(devices),
            }
        )
    return {
        "what": [
            ("variants", _distinct(rows, "variant")),
            ("tasks", _distinct(rows, "task")),
            ("datasets", _distinct(rows, "dataset")),
            ("images per cell", _distinct(rows, "n_images")),
            ("devices", _distinct(rows, "device")),
            ("dtypes", _distinct(rows, "dtype")),
            ("batch sizes", _distinct(rows, "batch_size")),
            ("attention", _distinct(rows, "attn")),
            ("scenario", _distinct(rows, "scenario")),
            ("weights", _distinct(rows, "weights")),
        ],
        "where": where,
        "statuses": sorted(statuses.items()),
        "failed": [r for r in rows if r.rec.get("status") != "ok"],
        "unstable": [(r, _why_unstable(r)) for r in rows if r.rec.get("unstable")],
    }


def _env_table(env: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, value in sorted(store.flatten(env).items()):
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        out.append((key, text if len(text) <= 400 else text[:400] + " …"))
    return out


def _method(rows: list[Row], prices: PriceTable) -> list[tuple[str, str]]:
    def collect(getter) -> str:
        values = Counter(v for v in (getter(r) for r in rows if r.ok) if v not in (None, "", {}))
        return "; ".join(f"{v} ({n} cells)" for v, n in values.most_common()) or "not recorded"

    return [
        ("latency clock", collect(lambda r: _get(r.rec, "timing", "clock"))),
        ("warm-up / iterations", collect(lambda r: _timing_text(r.rec.get("timing")))),
        ("scenario", collect(lambda r: r.rec.get("scenario"))),
        ("energy source", collect(lambda r: _get(r.rec, "energy", "source"))),
        ("peak memory used in frontiers", collect(lambda r: r.peak_memory[1] if r.peak_memory else None)),
        ("prices", prices.source),
    ]


def _timing_text(timing: Any) -> str | None:
    if not isinstance(timing, dict):
        return None
    parts = [f"{k}={timing[k]}" for k in ("warmup", "iterations") if k in timing]
    return ", ".join(parts) or None


# ---------------------------------------------------------------------------------------------
# entry point


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _format_number
    env.filters["mib"] = lambda v: "–" if _num(v) is None else f"{v / 2**20:,.0f} MiB"
    env.filters["pct"] = lambda v: "–" if _num(v) is None else f"{v * 100:.1f}%"
    return env


def _format_number(value: Any, digits: int = 3) -> str:
    value = _num(value)
    if value is None:
        return "–"
    if value.is_integer() and abs(value) < 1e7:
        return f"{int(value):,}"
    if abs(value) >= 10 ** (digits + 2) or abs(value) < 10 ** -(digits + 1):
        return f"{value:.{digits}g}"
    return f"{value:,.{max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))}f}"


def build_report(
    run_dirs: list[Path],
    out: Path,
    *,
    latency_bound_ms: float | None = None,
    accuracy_floor: float | None = None,
    prices: Path | None = None,
    baseline: Path | None = None,
    title: str | None = None,
) -> Path:
    """Render one self-contained HTML report for one or several run directories; returns ``out``."""
    import plotly.offline
    from markupsafe import Markup

    if latency_bound_ms is not None and not (_num(latency_bound_ms) and latency_bound_ms > 0):
        raise UsageError(f"latency bound {latency_bound_ms!r} ms; accepted: a number > 0")
    if accuracy_floor is not None and _num(accuracy_floor) is None:
        raise UsageError(f"accuracy floor {accuracy_floor!r}; accepted: a finite number")
    run_dirs = [Path(d) for d in run_dirs]
    table = load_prices(prices)
    runs = load_runs(run_dirs, table)
    rows = [r for run in runs for r in run.rows]
    tasks = _tasks(rows)
    several = len(tasks) > 1
    sections: dict[str, list[Chart]] = {
        "size": _size_quality_charts(rows),
        "pareto": _pareto_charts(rows),
        "throughput": _throughput_charts(rows),
        "stages": [c for c in [_stage_chart(rows, several)] if c],
        "memory": [c for c in [_memory_chart(rows, several)] if c],
        "distributions": [c for c in [_distribution_chart(rows, several)] if c],
        "cost": _cost_charts(rows, several),
    }
    badge, badge_class = _weights_badge(rows)
    context = {
        "title": title or f"Florence-2 benchmark: {', '.join(run.name for run in runs)}",
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "badge": badge,
        "badge_class": badge_class,
        "runs": runs,
        "rows": rows,
        "ok_rows": [r for r in rows if r.ok],
        "several_runs": len(runs) > 1,
        "summary": _summary(runs, rows),
        "recommendations": [recommend(rows, t, latency_bound_ms, accuracy_floor) for t in tasks],
        "latency_bound_ms": latency_bound_ms,
        "accuracy_floor": accuracy_floor,
        "prices": table,
        "unpriced": sorted({r.device_name for r in rows if r.ok and r.price is None}),
        "charts": sections,
        "envs": [(run.name, _env_table(run.env)) for run in runs],
        "method": _method(rows, table),
        "examples": _examples(runs),
        "regression": _regression(baseline, run_dirs[0]),
        "random_only": {r.rec.get("weights") for r in rows} == {"random"},
        "reported_label": REPORTED_LABEL,
        "reported": _reported_table(rows),
        "plotlyjs": Markup(plotly.offline.get_plotlyjs()),
    }
    text = _environment().get_template("report.html.j2").render(**context)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # per process: concurrent writers never share one
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


def _reported_table(rows: list[Row]) -> list[dict[str, Any]]:
    """Per variant: params as built here, measured results, and reported ones, kept apart."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        v = out.setdefault(
            str(r.rec.get("variant")),
            {"variant": r.rec.get("variant"), "params": None, "measured": {}, "reported": {}},
        )
        v["params"] = v["params"] or _num(r.rec.get("params"))
        if r.ok and r.acc is not None:
            key = f"{r.rec.get('task')} {r.metric} ({r.rec.get('dataset')})"
            v["measured"].setdefault(key, []).append(r.acc)
        for key, value in _table(r.rec, "extra", "reported").items():
            if _num(value) is not None:
                v["reported"][str(key)] = value
    for v in out.values():
        v["measured"] = {
            k: (f"{_format_number(min(vals))}–{_format_number(max(vals))} over {len(vals)} settings")
            if len(vals) > 1 and min(vals) != max(vals)
            else _format_number(vals[0])
            for k, vals in v["measured"].items()
        }
    return [v for v in out.values() if v["params"] or v["measured"] or v["reported"]]
