"""A run directory's records as rows for display: what each cell ran on (device kind, price), a short
label per setting, and the figures derived from the record (request latency by the statistic a bound
judges, capacity under a bound, cost, energy, flags).

``report`` builds the page from these rows and ``report_charts`` draws them; neither reads records
directly. Latency here is always request latency (``latency_ms``); the amortised time per image
(``time_per_image_ms``) is named so.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from bench.accuracy.metrics import METRICS, headline_metric, metric_info
from bench.core.errors import UsageError
from bench.core.numbers import finite_number as number
from bench.core.variants import VARIANTS
from bench.report.prices import Price, PriceTable
from bench.report.uncertainty import UNSTABLE, Interval, judge
from bench.results import Flag, Record, Server, dig, figure, store, value
from bench.run.optimize import agreement_with_fp32
from bench.scenarios import ScenarioTraits, traits_of

T = TypeVar("T")

# Per-stage times: vision is part of ttft, so the stack is preprocess, vision, ttft - vision,
# decode, postprocess, which sums to about the end-to-end time per image.
STAGES = (
    ("preprocess", "preprocess"),
    ("vision", "vision encoder"),
    ("text_prefill", "text + first token (ttft − vision)"),
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
_IF_VARYING = ("weights", "dataset", "attn", "compile", "num_beams", "max_new_tokens", "scenario", "backend")
# Axes that do not start a new line in a chart: a line joins the batch sizes (and with them the
# scenarios: batch 1 is single-stream, larger batches offline) of one setting.
_ALONG_A_LINE = ("batch_size", "scenario")
# Settings that repeat a top-level axis (the weights mode asked for; the label shows the one used).
_NOT_IN_LABELS = ("weights_requested",)


# ---------------------------------------------------------------------------------------------
# records and environments


MIN_QPS = 1e-6
"""The smallest rate taken as a measured capacity: below it (zero, negative, denormal) a record's rate is
invalid and planning with it would give absurd or infinite device counts."""


def rate(value: Any) -> float | None:
    """A request rate from a record: a finite number >= MIN_QPS, else None (an invalid value)."""
    value = number(value)
    return value if value is not None and value >= MIN_QPS else None


def lower_is_better(metric: str | None) -> bool:
    """From the metric registry (bench.accuracy.metrics.METRICS): CER and WER are lower-is-better."""
    info = metric_info(metric) if metric else None
    return info is not None and not info.higher_is_better


def metric_label(metric: str | None) -> str:
    """A metric as a reader sees it, with its scale and direction from the registry: "CIDEr-D (×100, higher
    is better)", "CER (%, lower is better)"."""
    info = metric_info(metric) if metric else None
    if info is None:
        return str(metric or "accuracy")
    scale = info.unit or info.scale.split(" (")[0]
    return f"{info.label} ({scale}, {'higher' if info.higher_is_better else 'lower'} is better)"


def primary_metric(accuracy: dict[str, Any] | None, task: str | None = None) -> str | None:
    """The metric a cell is judged by: its task's headline metric, else the first registered metric it
    carries (in registry order); names the registry does not define are never chosen."""
    names = {k for k, v in (accuracy or {}).items() if number(v) is not None}
    headline = headline_metric(task) if task else None
    if headline in names:
        return headline
    return next((name for name in METRICS if name in names), None)


def gpu_names(env: dict[str, Any]) -> list[str]:
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


def cpu_name(env: dict[str, Any]) -> str | None:
    for keys in (("cpu", "model"), ("cpu", "brand"), ("cpu", "name"), ("cpu_model",), ("processor",)):
        value = dig(env, *keys)
        if isinstance(value, str) and value:
            return value
    return None


def cores_used(env: dict[str, Any]) -> int | None:
    """The cores a CPU run used: torch's thread count, else the cores the process could run on."""
    for keys in (("torch", "num_threads"), ("cpu", "usable_cores"), ("cpu", "logical_cores"), ("cpu", "cores")):
        value = dig(env, *keys)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def device_name(device: str | None, env: dict[str, Any]) -> str:
    """The hardware a cell ran on, by name: the GPU's name for cuda devices, "cpu" for the CPU."""
    device = str(device or "")
    if device.startswith("cuda"):
        gpus = gpu_names(env)
        index = int(device.split(":")[1]) if re.fullmatch(r"cuda:\d+", device) else 0
        if gpus:
            return gpus[index] if index < len(gpus) else gpus[0]
    return device or "unknown"


@dataclass(frozen=True)
class DeviceKind:
    """What you would buy or rent: a GPU by its exact name, a CPU by model and the cores used."""

    kind: str  # "gpu", "cpu" or "other"
    name: str
    cores: int | None = None

    @property
    def label(self) -> str:
        if self.kind == "cpu":
            cores = f"{self.cores} core{'s' if self.cores != 1 else ''} used" if self.cores else "cores unknown"
            return f"CPU {self.name} ({cores})"
        return self.name


def device_kind(record: Record, env: dict[str, Any]) -> DeviceKind:
    name = device_name(record.device, env)
    device = str(record.device or "")
    if device.startswith("cuda"):
        return DeviceKind("gpu", name if name != device else f"{device} (GPU name not recorded)")
    if device == "cpu":
        return DeviceKind("cpu", cpu_name(env) or "model unknown", cores_used(env))
    return DeviceKind("other", name)


def price_for(kind: DeviceKind, prices: PriceTable) -> Price | None:
    if kind.kind == "gpu":
        return prices.gpu_price(kind.name)
    if kind.kind == "cpu":
        return prices.cpu_price(kind.cores)
    return None


def _flag_text(server: Server | None) -> str:
    return f"invalid: {value(server, 'invalid_reason') or 'no reason recorded'}"


@dataclass
class Row:
    """One cell prepared for display: the record plus labels and derived figures."""

    rec: Record
    run: str
    device_name: str
    kind: DeviceKind = field(default_factory=lambda: DeviceKind("other", "unknown"))
    setting: str = ""
    series: str = ""  # the setting without batch size and scenario: one line in a chart
    family: str = ""  # the series without dtype: one colour in a chart (dtype is the marker and dash)
    parts: list[tuple[str, str]] = field(default_factory=list)  # (axis, text) of the setting: short labels
    metric: str | None = None
    price: Price | None = None
    usd_per_kwh: float | None = None
    agreement: float | None = None  # exact-match agreement with the fp32 cell of the same work (optimize)

    @property
    def ok(self) -> bool:
        return self.rec.status == "ok"

    @property
    def label(self) -> str:
        return f"{self.rec.task} · {self.setting}"

    @property
    def task(self) -> str:
        return str(self.rec.task)

    @property
    def scenario(self) -> str:
        return str(self.rec.scenario or "")

    @cached_property
    def traits(self) -> ScenarioTraits:
        """How the cell is judged, as its scenario declares (bench.scenarios.traits); read once per row (every
        chart, table and the answer ask it)."""
        return traits_of(self.rec)

    @property
    def weights(self) -> str:
        return str(self.rec.weights or "unknown")

    @property
    def quant(self) -> str:
        """The quantisation the cell ran with (``settings.quant``; "none" when absent)."""
        return str(value(self.rec, "settings.quant") or "none")

    @property
    def at_reported_setting(self) -> bool:
        """fp32, not quantised, pretrained weights of the variant's own checkpoint: the only setting a paper's or
        model card's accuracy is reported for (drawn beside no other)."""
        variant = VARIANTS.get(str(self.rec.variant))
        return (variant is not None and self.rec.dtype == "fp32" and self.quant == "none"
                and self.weights == "pretrained" and self.rec.checkpoint in (variant.hub_id, variant.native_id))

    @property
    def acc(self) -> float | None:
        """Measured accuracy on the task's metric: only pretrained weights have one (random weights score
        noise, and a checkpoint of unknown origin is not trusted)."""
        if not self.metric or self.rec.weights != "pretrained":
            return None
        return number((self.rec.accuracy or {}).get(self.metric))

    def latency(self, statistic: str) -> float | None:
        """Request latency (what one request waits), ``statistic`` one of mean, p50, p90, p95, p99."""
        return figure(self.rec, f"latency_ms.{statistic}")

    @property
    def p50(self) -> float | None:
        return self.latency("p50")

    @property
    def p90(self) -> float | None:
        return self.latency("p90")

    @property
    def p99(self) -> float | None:
        return self.latency("p99")

    @property
    def time_per_image_p50(self) -> float | None:
        """The amortised time per image (batch wall time / batch size), median."""
        return figure(self.rec, "time_per_image_ms.p50")

    @property
    def ips(self) -> float | None:
        ips = figure(self.rec, "throughput.images_per_s")
        return ips if ips and ips > 0 else None

    @property
    def server(self) -> Server | None:
        return self.rec.server

    @property
    def invalid(self) -> bool:
        """A server run that broke the scenario's rules (too short, QPS missed, p99 over its bound)."""
        return value(self.server, "valid") is False

    @cached_property
    def uncertainty(self) -> Interval | None:
        """The 95% interval of the statistic the cell's scenario is judged on (bench.report.uncertainty)."""
        return judge(self.rec) if self.ok else None

    @property
    def unstable(self) -> bool:
        """The judged statistic's interval is wider than bench.report.uncertainty allows (too few samples is not
        instability: it is said so beside the figure)."""
        return self.uncertainty is not None and self.uncertainty.verdict == UNSTABLE

    @property
    def record_flags(self) -> list[Flag]:
        """The run's own warnings about the cell (``flags``), absent in older records; each with a code and a
        message (the code where none was written)."""
        return [Flag(code=f.code or "flag", message=f.message or f.code or "") for f in self.rec.flags]

    @property
    def flags(self) -> list[str]:
        """What makes this cell's figures less than trustworthy, for every table and chart."""
        out = [_flag_text(self.server)] if self.invalid else []
        out += ["unstable"] if self.unstable else []
        return out + [str(f.code) for f in self.record_flags]

    @property
    def bound_statistic(self) -> str | None:
        return self.traits.bound_statistic

    @property
    def bound_latency(self) -> float | None:
        """The request latency a latency bound judges (the scenario's statistic: p90 single-stream, p99
        server), none where no bound is ever met (offline)."""
        statistic = self.bound_statistic
        return self.latency(statistic) if statistic else None

    def meets_bound(self, bound_ms: float) -> bool:
        """Offline cells never pass a bound; an invalid server run never does either."""
        value = self.bound_latency
        return value is not None and value <= bound_ms and not self.invalid

    def capacity(self, bound_ms: float | None = None) -> tuple[float, str] | None:
        """(QPS one device sustains with p99 within the bound, how it was found) for a cell judged on
        capacity (server; p99 stands for its scenario's statistic, the percentile its settings judge).

        The cell's ``capacity_qps`` when the bound is its own (or none is given); otherwise the highest
        valid step of its capacity-search curve whose p99 is within ``bound_ms``; for a fixed-QPS run,
        its achieved QPS when it is valid and within the bound."""
        if self.traits.reads != "capacity":
            return None
        statistic = self.traits.statistic
        own = number(value(self.server, "latency_bound_ms"))
        capacity = rate(self.rec.capacity_qps)
        if capacity and (bound_ms is None or (own is not None and abs(own - bound_ms) < 1e-9)):
            where = f"{statistic} ≤ {own:g} ms" if own is not None else "its bound"
            return capacity, f"capacity search, {where}"
        steps = self.server.curve if self.server is not None else ()
        if bound_ms is not None and steps:
            within = [
                q
                for s in steps
                if s.valid is not False
                and (tail := number(getattr(s, statistic, None))) is not None
                and tail <= bound_ms
                and (q := rate(s.target_qps)) is not None
            ]
            if within:
                return max(within), f"highest valid step of the capacity curve with {statistic} ≤ {bound_ms:g} ms"
            return None
        achieved = rate(value(self.server, "achieved_qps"))
        limit = bound_ms if bound_ms is not None else own
        judged = self.latency(statistic)
        if achieved and not self.invalid and (limit is None or (judged is not None and judged <= limit)):
            return achieved, "fixed-QPS run (a lower bound on capacity)"
        return None

    @property
    def capacity_bracket(self) -> tuple[float, float | None] | None:
        """[highest valid, lowest invalid] rate the capacity search proved (``server.capacity_bracket``,
        absent in older records; the upper end None when no rate failed)."""
        raw = value(self.server, "capacity_bracket")
        if isinstance(raw, (list, tuple)) and len(raw) == 2 and number(raw[0]) is not None:
            return number(raw[0]), number(raw[1])
        return None

    @property
    def peak_memory(self) -> tuple[float, str] | None:
        """The memory that limits how many copies fit: GPU allocation on cuda, host RSS on cpu."""
        order = ("cuda_peak_allocated_bytes", "nvml_peak_used_bytes", "cuda_peak_reserved_bytes")
        if not str(self.rec.device or "").startswith("cuda"):
            order = ("peak_rss_bytes",)
        for key in order:
            peak = figure(self.rec, f"memory.{key}")
            if peak:
                return peak, dict(MEMORY_FIELDS)[key]
        return None

    @property
    def joules(self) -> float | None:
        joules = figure(self.rec, "energy.joules_per_image")
        return joules if joules and joules > 0 else None

    @property
    def images_per_joule(self) -> float | None:
        return 1.0 / self.joules if self.joules else None

    def cost_at(self, images_per_s: float | None) -> float | None:
        """Derived: USD per hour / 3600 / images per second × 10⁶ (the device kept busy at that rate)."""
        if self.price is None or not images_per_s:
            return None
        return self.price.usd_per_hour / 3600.0 / images_per_s * 1e6

    @property
    def cost_per_million(self) -> float | None:
        """Derived from the device's price and the rate one device sustains: a server cell's capacity
        (its own bound's, the figure the answer and the decision use), else the measured throughput."""
        capacity = self.capacity(None) if self.traits.reads == "capacity" and not self.invalid else None
        return self.cost_at(capacity[0] if capacity else self.ips)

    @property
    def energy_cost_per_million(self) -> float | None:
        if self.joules is None or self.usd_per_kwh is None:
            return None
        return self.joules * 1e6 / 3.6e6 * self.usd_per_kwh

    @property
    def stages(self) -> dict[str, float] | None:
        pre, vision, ttft = (figure(self.rec, f"stages_ms.{k}") for k in ("preprocess", "vision", "ttft"))
        decode, post = figure(self.rec, "stages_ms.decode"), figure(self.rec, "stages_ms.postprocess")
        if all(v is None for v in (pre, vision, ttft, decode, post)):
            return None
        prefill = max(ttft - (vision or 0.0), 0.0) if ttft is not None else None
        values = (pre, vision, prefill, decode, post)
        return {key: (v or 0.0) for (key, _), v in zip(STAGES, values, strict=True)}


def _fmt_axis(axis: str, value: Any) -> str:
    if axis == "batch_size":
        return f"bs{value}"
    if axis == "compile":
        return {"graphs": "cuda-graphs"}.get(value, "compiled" if value else "eager")
    if axis in ("variant", "device", "dtype", "dataset", "run", "scenario"):
        return str(value)
    short = {"num_beams": "beams", "max_new_tokens": "max_new", "weights": "weights"}.get(axis, axis)
    return f"{short}={value}"


def _axis_value(rec: Record, axis: str) -> Any:
    """A record's value on a label axis; a failed cell's max_new_tokens of 0 (never resolved) is None."""
    found = getattr(rec, axis)
    if axis == "max_new_tokens" and not (isinstance(found, int) and found > 0):
        return None
    return found


def _settings(rec: Record) -> dict[str, Any]:
    """A record's settings as written (the label shows those that vary between rows)."""
    return rec.settings.to_dict() if rec.settings is not None else {}


def _label_rows(rows: list[Row]) -> None:
    """Give each row a short setting label naming the axes that vary, unique within its task, and a
    series label (the same without batch size and scenario) for chart lines."""
    varying = [a for a in _IF_VARYING if len({json.dumps(_axis_value(r.rec, a)) for r in rows}) > 1]
    own_settings = {id(r): _settings(r.rec) for r in rows}
    settings_keys = sorted({k for r in rows for k in own_settings[id(r)] if k not in _NOT_IN_LABELS})
    varying_settings = [k for k in settings_keys if len({json.dumps(own_settings[id(r)].get(k)) for r in rows}) > 1]
    several_runs = len({r.run for r in rows}) > 1
    several_kinds = len({r.kind for r in rows if r.kind.kind == "gpu"}) > 1
    for r in rows:
        parts: list[tuple[str, str]] = [("run", r.run)] if several_runs else []
        for axis in (*_ALWAYS, *varying):
            if _axis_value(r.rec, axis) is None and axis in _IF_VARYING:
                continue
            text = _fmt_axis(axis, getattr(r.rec, axis))
            if axis == "device" and several_kinds and r.kind.kind == "gpu":
                text = r.kind.name
            parts.append((axis, text))
        own = own_settings[id(r)]
        parts += [(f"settings.{k}", f"{k}={own[k]}") for k in varying_settings if own.get(k) is not None]
        r.parts = parts
        r.setting = " ".join(text for _, text in parts)
        r.series = " ".join(text for axis, text in parts if axis not in _ALONG_A_LINE)
        r.family = " ".join(text for axis, text in parts if axis not in (*_ALONG_A_LINE, "dtype"))
    seen = Counter((r.rec.task, r.setting) for r in rows)
    for r in rows:
        if seen[(r.rec.task, r.setting)] > 1:
            r.setting += f" #{str(r.rec.cell_id)[:6]}"


def _without_texts(rec: Record) -> Record:
    """The record without the generated texts, which no section reads once the fp32 agreement is computed."""
    if rec.extra is None or rec.extra.texts is None:
        return rec
    return replace(rec, extra=replace(rec.extra, texts=None))


def _task_metrics(rows: list[Row]) -> dict[str, str | None]:
    """One metric per task (the most common primary metric), so settings compare like with like."""
    out: dict[str, str | None] = {}
    for task in dict.fromkeys(r.rec.task for r in rows):
        names = [primary_metric(r.rec.accuracy, task) for r in rows if r.rec.task == task]
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
        if (path / store.RESULTS).is_dir():
            raise UsageError(f"{path / store.RESULTS} is a directory; accepted: a run directory whose "
                             f"{store.RESULTS} is a regular file")
        if not (path / store.RESULTS).is_file():
            raise UsageError(
                f"no {store.RESULTS} in {path}; accepted: a run directory written by florence2-bench run"
            )
        name = path.resolve().name if names[path.resolve().name] == 1 else str(path)
        env = store.read_env(path)
        rows = []
        by_cell = store.latest_by_cell(store.records(path))
        agreement = agreement_with_fp32(by_cell.values())
        for rec in map(_without_texts, by_cell.values()):
            kind = device_kind(rec, env)
            rows.append(
                Row(
                    rec,
                    name,
                    device_name(rec.device, env),
                    kind,
                    price=price_for(kind, prices),
                    usd_per_kwh=prices.usd_per_kwh,
                    agreement=agreement.get(rec.cell_id),
                )
            )
        runs.append(Run(name, path, env, rows))
    all_rows = [r for run in runs for r in run.rows]
    _label_rows(all_rows)
    metrics = _task_metrics(all_rows)
    for r in all_rows:
        r.metric = metrics.get(r.rec.task)
    return runs


def group_by(rows: Iterable[T], key: Callable[[T], Any]) -> dict[Any, list[T]]:
    """Rows by ``key``, in first-seen order: one pass, where a filter per key would pass over all rows per key."""
    out: dict[Any, list[T]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return out


def tasks_of(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(str(r.rec.task) for r in rows))


def kinds_of(rows: list[Row]) -> list[DeviceKind]:
    """Device kinds, GPUs first (by name), then CPUs."""
    kinds = dict.fromkeys(r.kind for r in rows)
    return sorted(kinds, key=lambda k: (k.kind != "gpu", k.kind != "cpu", k.label))
