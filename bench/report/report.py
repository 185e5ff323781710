"""The HTML report: what to buy and run, per task and device kind, and the measurements behind it.

One self-contained file (plotly.js inlined once, images as data URIs, no external URL) rendered with
jinja2 and autoescaping on, so a caption, label, variant name or error message shows as text. The page
opens with the answer (``bench.report.answer``: devices, cost and p99 for the demand), then the decision (the
best setting per goal, with the interval of its judged figure, flagged when unstable or invalid), the
environment (collapsed), the regression check when a baseline is given, and the charts.

Every figure is labelled by how it was obtained: *measured* (by this run), *derived* (computed from
measured figures and a price table whose source is printed beside each cost) or *reported* (paper /
model card). Latency is request latency, what one request waits (``latency_ms``); a bound judges the
p90 of single-stream cells and the p99 of server cells, and never an offline cell, which is judged on
throughput only. The amortised time per image (``time_per_image_ms``) is always named so.
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.accuracy.metrics import TASK_BENCHMARKS
from bench.core import host
from bench.core.errors import UsageError
from bench.core.paths import Writer, distinct_dirs, write_all
from bench.core.stats import queries_needed
from bench.pages.page import format_number, render, write_html
from bench.report import answer as answers
from bench.report import answer_chart, chart_style, report_charts, report_table
from bench.report.prices import DEFAULT_PRICES, HOURS_PER_MONTH, PriceTable, load_prices
from bench.report.question import MAX_UTILISATION_DEFAULT, PERCENTILE_DEFAULT, percentile_name
from bench.report.report_rows import (
    DeviceKind,
    Row,
    Run,
    cpu_name,
    device_name,
    gpu_names,
    group_by,
    load_runs,
    lower_is_better,
    metric_label,
    primary_metric,
)
from bench.report.report_rows import kinds_of as _kinds
from bench.report.report_rows import number as _num
from bench.report.report_rows import tasks_of as _tasks
from bench.report.uncertainty import ALTERNATIVE_FACTOR, STABLE_HALF_WIDTH, samples_needed
from bench.results import Example, store, value
from bench.results import dig as _get
from bench.results.server_settings import ServerSettings
from bench.scenarios import capacity as capacity_search
from bench.scenarios.server import KEPT_UP

__all__ = [
    "DEFAULT_PRICES",
    "PriceTable",
    "build_report",
    "device_name",
    "load_prices",
    "load_runs",
    "lower_is_better",
    "primary_metric",
    "recommend",
]

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

# ---------------------------------------------------------------------------------------------
# the decision: the best setting per goal, per task and device kind


def _fmt(value: float, unit: str) -> str:
    return f"{format_number(value)} {unit}".strip()


@dataclass(frozen=True)
class Goal:
    """One question a buyer asks; ``value`` gives a row's figure for it (None: the row does not answer it)."""

    name: str
    label: str
    higher_is_better: bool
    value: Callable[[Row, float | None], float | None]
    show: Callable[[float, Row, float | None], str]
    basis: str  # how the figure is obtained, shown under the table


def _capacity_value(r: Row, bound: float | None) -> float | None:
    found = r.capacity(bound)
    return found[0] if found else None


GOALS: tuple[Goal, ...] = (
    Goal(
        "throughput",
        "highest throughput",
        True,
        lambda r, b: r.ips if r.traits.closed_loop else None,
        lambda v, r, b: _fmt(v, "images/s") + f" ({r.scenario or 'scenario unknown'})",
        "measured images per second of offline and single-stream cells (batch work, no latency bound)",
    ),
    Goal(
        "latency",
        "lowest single-stream request latency (p90)",
        False,
        lambda r, b: r.latency(r.traits.statistic) if r.traits.reads == "latency" else None,
        lambda v, r, b: _fmt(v, f"ms {r.traits.statistic}"),
        "measured request latency p90 of single-stream cells (one request at a time, no queue)",
    ),
    Goal(
        "capacity",
        "highest server capacity within the latency bound",
        True,
        _capacity_value,
        lambda v, r, b: _fmt(v, "requests/s") + f" ({r.capacity(b)[1]})",
        "measured: the highest Poisson arrival rate a server cell sustained validly with the percentile its search "
        "judged (p99 unless its record says otherwise) within the bound",
    ),
    Goal(
        "cost",
        "lowest cost per million images",
        False,
        lambda r, b: r.cost_per_million if r.traits.closed_loop else None,
        lambda v, r, b: f"${format_number(v)} ({r.price.text if r.price else ''})",
        "derived: price per hour ÷ 3600 ÷ measured images per second × 10⁶ (batch work, device kept busy)",
    ),
    Goal(
        "cost_within_bound",
        "cheapest way to serve the question (the answer's pick)",
        False,
        lambda r, b: None,  # not a figure of one row: ``decide`` takes the answer's pick
        lambda v, r, b: f"${format_number(v)} ({r.price.text if r.price else ''})",
        "the answer's pick for this device kind (bench.report.answer): the cheapest option whose capacity was judged at "
        "the question's percentile within the bound, valid, unflagged and through the quality gate; its cost per "
        "million images at that capacity",
    ),
    Goal(
        "energy",
        "lowest energy per image",
        False,
        lambda r, b: r.joules,
        lambda v, r, b: _fmt(v, "J/image") + f" ({format_number(1 / v)} images/J)",
        "measured: energy counter over the cell ÷ images (NVML on GPUs, RAPL on CPUs where readable)",
    ),
)


@dataclass
class Pick:
    goal: Goal
    row: Row | None
    text: str
    note: str = ""


@dataclass
class Decision:
    task: str
    kinds: list[DeviceKind]
    goals: list[Goal]
    picks: dict[tuple[str, DeviceKind], Pick]

    def pick(self, goal: Goal, kind: DeviceKind) -> Pick:
        return self.picks[(goal.name, kind)]


def _best(candidates: list[Row], goal: Goal, bound: float | None) -> Row | None:
    scored = [(goal.value(r, bound), r) for r in candidates]
    scored = [(v, r) for v, r in scored if v is not None]
    if not scored:
        return None
    sign = -1.0 if goal.higher_is_better else 1.0
    return min(scored, key=lambda vr: sign * vr[0])[1]


def _within_factor(alternative: float, pick: float, goal: Goal) -> bool:
    """Whether an alternative is worth naming: at most ALTERNATIVE_FACTOR worse than the pick."""
    if pick <= 0 or alternative <= 0:
        return False
    worse = pick / alternative if goal.higher_is_better else alternative / pick
    return worse <= ALTERNATIVE_FACTOR


def _pick(rows: list[Row], goal: Goal, bound: float | None) -> Pick:
    answering = [r for r in rows if goal.value(r, bound) is not None]
    valid = [r for r in answering if not r.invalid]
    best = _best(valid, goal, bound)
    if best is None:
        why = "not measured"
        if goal.name == "capacity" and any(r.traits.reads == "capacity" for r in rows):
            why = answers.no_capacity(rows, answers.Question(bound))
        return Pick(goal, None, why)
    text = goal.show(goal.value(best, bound), best, bound)
    note = ""
    if best.unstable:
        note = "unstable: the 95% interval of the figure its scenario is judged on is wider than ±" \
            f"{STABLE_HALF_WIDTH:.0%}; rerun it with more samples or on a quiet machine"
        stable = _best([r for r in valid if not r.unstable], goal, bound)
        if stable is not None and _within_factor(goal.value(stable, bound), goal.value(best, bound), goal):
            note += f". Best stable: {stable.setting}, {goal.show(goal.value(stable, bound), stable, bound)}"
    return Pick(goal, best, text, note)


def _answer_pick(goal: Goal, found: answers.Answer | None) -> Pick:
    """The cost-within-the-question goal is the answer's own pick (one decision function for the page)."""
    if found is None or found.option is None:
        return Pick(goal, None, found.note if found else "not measured")
    o = found.option
    text = (f"${format_number(o.usd_per_million)} per million images ({o.row.price.text})" if o.usd_per_million
            is not None else "cost unknown (no price)") + f" at {format_number(o.capacity)} requests/s ({o.basis})"
    return Pick(goal, o.row, text, f"{found.devices} devices for {format_number(found.demand_qps)} images/s; "
                                   f"{o.latency.text}; {o.validity.stamp}; {o.quality.text}")


def decide(rows: list[Row], bound: float | None, found: list[answers.Answer] | None = None) -> list[Decision]:
    """Per task: for each goal and device kind, the best finished (and, for servers, valid) setting; the
    cheapest way to serve the question is the answer's pick (``found``, ``bench.report.answer.answer``)."""
    out = []
    found = found or []
    for task, mine in group_by([r for r in rows if r.ok], lambda r: r.task).items():
        kinds = _kinds(mine)
        by_kind = group_by(mine, lambda r: r.kind)
        picked = {a.kind: a for a in found if a.task == task}
        goals = [
            g
            for g in GOALS
            if (g.name == "cost_within_bound" and any(a.option for a in picked.values()))
            or (g.name != "cost_within_bound" and any(g.value(r, bound) is not None for r in mine))
        ]
        picks = {
            (g.name, k): _answer_pick(g, picked.get(k)) if g.name == "cost_within_bound"
            else _pick(by_kind[k], g, bound) for g in goals for k in kinds
        }
        out.append(Decision(task, kinds, goals, picks))
    return out


# ---------------------------------------------------------------------------------------------
# the recommendation: the answer's overall pick, with the constraints it met


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
    cost: float | None = None
    option: answers.Option | None = None


def recommend(rows: list[Row], task: str, found: list[answers.Answer], question: answers.Question) -> Recommendation:
    """The task's overall pick of the answer (the same pick as the Answer and Decision sections and the
    ``--answer`` JSON), with how many options met the question and, when none did, why."""
    ok = [r for r in rows if r.task == task and r.ok]
    metric = next((r.metric for r in ok if r.metric), None)
    constraint = question.text
    if question.accuracy_floor is not None:
        constraint += f"; {metric or 'accuracy'} {'≤' if lower_is_better(metric) else '≥'} " \
                      f"{format_number(question.accuracy_floor)}"
    mine = [a for a in found if a.task == task]
    met = sum(len(a.top) for a in mine)
    rec = Recommendation(task, metric, constraint, None, met, len(ok), "")
    if not ok:
        rec.verdict = f"{NONE_MEETS}: no cell of this task finished"
        return rec
    pick = answers.overall(found, task)
    if pick is None or pick.option is None:
        rec.verdict = f"{NONE_MEETS}: " + ("; ".join(f"{a.kind.label}: {a.note}" for a in mine) or "no option")
        return rec
    rec.option, rec.best, rec.cost = pick.option, pick.option.row, pick.usd_per_million
    rec.verdict = ("cheapest option that meets it" if pick.usd_per_month is not None
                   else f"fewest devices that meet it; cost unknown (no price for {pick.kind.label})")
    if not pick.option.quality.verified:
        rec.notes.append(pick.option.quality.text + ": give --quality-gate X to keep such options out")
    if question.bound_ms is None and question.accuracy_floor is None:
        rec.notes.append("give --latency-bound-ms and --accuracy-floor to constrain the choice")
    return rec


# ---------------------------------------------------------------------------------------------
# combining runs: what differs between them


def _commit(env: dict[str, Any]) -> str | None:
    commit = _get(env, "git", "commit")
    if not isinstance(commit, str):
        return None
    return commit[:12] + (" (uncommitted changes)" if _get(env, "git", "dirty") else "")


# (label, getter) of the facts that make two runs' figures differ for reasons other than the setting
FACTS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("commit", _commit),
    ("torch", lambda e: _get(e, "torch", "version") or _get(e, "libraries", "torch")),
    ("transformers", lambda e: _get(e, "libraries", "transformers")),
    ("tokenizers", lambda e: _get(e, "libraries", "tokenizers")),
    ("Python", lambda e: _get(e, "python", "version")),
    ("CUDA (torch build)", lambda e: _get(e, "torch", "cuda")),
    ("cuDNN", lambda e: _get(e, "torch", "cudnn")),
    ("NVIDIA driver", lambda e: _get(e, "gpu", "driver_version")),
    ("GPU", lambda e: ", ".join(gpu_names(e)) or None),
    ("CPU model", cpu_name),
    ("CPU cores used (torch threads)", lambda e: _get(e, "torch", "num_threads")),
    ("CPU cores usable", lambda e: _get(e, "cpu", "usable_cores")),
    ("host", lambda e: _get(e, "hostname")),
    ("host load", lambda e: host.describe_load(e.get("host_load"))),
    ("CPU frequency governor", lambda e: _get(e, "cpu_governor", "governor")),
)
# (label, predicate) of facts whose value marks a run as suspect: highlighted in its column; such a fact
# differs between runs when the verdict does (two idle machines' loads are never equal, and never matter)
SUSPECT: dict[str, Callable[[dict[str, Any]], bool]] = {
    "host load": lambda e: host.busy(e.get("host_load")) or host.busy(e.get("host_load"), "end"),
}


@dataclass
class Fact:
    label: str
    values: list[str]
    suspect: list[bool] = field(default_factory=list)  # per run: a value that makes its figures suspect

    @property
    def differs(self) -> bool:
        """Values differ; a state that is never equal twice (the host's load) differs when its verdict does."""
        return len(set(self.suspect if self.label in SUSPECT else self.values)) > 1


def comparability(runs: list[Run]) -> list[Fact]:
    """Each environment fact per run, the differing ones first."""
    facts = []
    for label, getter in FACTS:
        values = []
        for run in runs:
            value = getter(run.env) if run.env else None
            values.append("not recorded" if value in (None, "") else str(value))
        suspect = SUSPECT.get(label, lambda e: False)
        facts.append(Fact(label, values, [bool(run.env) and suspect(run.env) for run in runs]))
    return sorted(facts, key=lambda f: not f.differs)


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


def _draw_example(run_dir: Path, example: Example) -> tuple[str | None, str]:
    """A PNG data URI of the example image with the predicted shapes drawn, and a note."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = _num(example.width), _num(example.height)
    if not (width and height and 1 <= width <= MAX_DECLARED_SIDE and 1 <= height <= MAX_DECLARED_SIDE):
        width = height = None  # an absurd declared size is not trusted (nor allocated)
    path = _inside(run_dir, example.image_file)
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

    for n, (kind, coords, label) in enumerate(_shapes(example.answer)[:MAX_SHAPES]):
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
    cells = [(run, r) for run in runs for r in run.rows if r.ok and r.rec.examples]
    cells.sort(key=lambda c: c[1].rec.weights != "pretrained")
    picked, seen = [], set()
    for run, r in cells:
        key = (r.rec.task, r.rec.variant)
        if key in seen or len(picked) >= MAX_EXAMPLE_CELLS:
            continue
        seen.add(key)
        items = []
        for ex in r.rec.examples[:MAX_EXAMPLES_PER_CELL]:
            uri, note = _draw_example(run.path, ex)
            answer = ex.answer
            items.append(
                {
                    "image_id": ex.image_id,
                    "uri": uri,
                    "note": note,
                    "text": str(ex.text if ex.text is not None else ""),
                    "answer": answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False),
                }
            )
        picked.append({"row": r, "examples": items})
    return picked



# ---------------------------------------------------------------------------------------------
# regression section: compare's own Comparison, rendered as the CLI prints it


def _regression(baseline: Path | None, current: Path) -> dict[str, Any] | None:
    if baseline is None:
        return None
    if not (Path(baseline) / store.RESULTS).is_file():
        raise UsageError(
            f"no {store.RESULTS} in baseline {baseline}; accepted: a run directory written by `run`"
        )
    try:
        from bench.regression.compare import compare_dirs
    except ImportError as exc:
        return {"unavailable": f"regression compare unavailable (bench.regression.compare could not be imported: {exc})"}
    try:
        comparison = compare_dirs(Path(baseline), Path(current))
    except UsageError as exc:  # compare refuses the pair (e.g. another record schema): say why, keep the report
        return {"baseline": str(baseline), "refused": str(exc)}
    return {"baseline": str(baseline), "comparison": comparison, "columns": comparison.columns}


# ---------------------------------------------------------------------------------------------
# summary, environment, method


def _weights_badge(rows: list[Row]) -> tuple[str, str]:
    """Accuracy is badged as measured only when every cell ran pretrained weights and some accuracy was
    scored (``Row.acc``); random weights, unknown weights or no score never are."""
    modes = {r.rec.weights for r in rows}
    if not rows:
        return "NO CELLS", "badge-random"
    if modes == {"random"}:
        return "RANDOM WEIGHTS — accuracy not measured", "badge-random"
    if modes == {"pretrained"}:
        if any(r.acc is not None for r in rows if r.ok):
            return "PRETRAINED WEIGHTS — accuracy measured", "badge-pretrained"
        return "PRETRAINED WEIGHTS — accuracy not measured (no cell scored)", "badge-mixed"
    if "pretrained" not in modes:
        return f"WEIGHTS {', '.join(sorted(str(m) for m in modes))} — accuracy not measured", "badge-random"
    return "MIXED WEIGHTS — only pretrained-weight cells have accuracy", "badge-mixed"


def _distinct(rows: list[Row], key: str) -> str:
    return ", ".join(str(v) for v in dict.fromkeys(getattr(r.rec, key) for r in rows)) or "–"


def _why_unstable(r: Row) -> str:
    return r.uncertainty.text if r.uncertainty else "no interval"


def _summary(runs: list[Run], rows: list[Row]) -> dict[str, Any]:
    statuses = Counter(str(r.rec.status) for r in rows)
    where = []
    for run in runs:
        kinds = ", ".join(k.label for k in _kinds(run.rows))
        host = _get(run.env, "hostname") or _get(run.env, "host") or _get(run.env, "platform", "node")
        where.append({"run": run.name, "path": str(run.path), "host": host, "devices": kinds})
    return {
        "what": [
            ("variants", _distinct(rows, "variant")),
            ("tasks", _distinct(rows, "task")),
            ("datasets", _distinct(rows, "dataset")),
            ("images per cell", _distinct(rows, "n_images")),
            ("scenarios", _distinct(rows, "scenario")),
            ("devices", ", ".join(k.label for k in _kinds(rows)) or "–"),
            ("dtypes", _distinct(rows, "dtype")),
            ("batch sizes", _distinct(rows, "batch_size")),
            ("attention", _distinct(rows, "attn")),
            ("weights", _distinct(rows, "weights")),
        ],
        "where": where,
        "statuses": sorted(statuses.items()),
        "failed": [r for r in rows if r.rec.status != "ok"],
        "unstable": [(r, _why_unstable(r)) for r in rows if r.unstable],
        "invalid": [r for r in rows if r.ok and r.invalid],
    }


def _env_table(env: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, found in sorted(store.flatten(env).items()):
        text = found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)
        out.append((key, text if len(text) <= 400 else text[:400] + " …"))
    return out


def _method(rows: list[Row], prices: PriceTable) -> list[tuple[str, str]]:
    def collect(getter) -> str:
        values = Counter(v for v in (getter(r) for r in rows if r.ok) if v not in (None, "", {}))
        return "; ".join(f"{v} ({n} cells)" for v, n in values.most_common()) or "not recorded"

    energy = f"; energy {prices.usd_per_kwh:g} USD/kWh ({prices.energy_source})" if prices.usd_per_kwh else ""
    return [
        ("latency clock", collect(lambda r: value(r.rec, "timing.clock"))),
        ("warm-up / iterations", collect(lambda r: report_table.timing_text(r.rec.timing))),
        ("scenario", collect(lambda r: r.rec.scenario)),
        ("per-stage times", collect(lambda r: value(r.rec, "timing.stages_basis"))),
        ("energy source", collect(lambda r: value(r.rec, "energy.source"))),
        ("peak memory used in frontiers", collect(lambda r: r.peak_memory[1] if r.peak_memory else None)),
        ("prices", prices.label + energy),
    ]


def _agreement_differs(rows: list[Row]) -> str:
    """What differs from the fp32 reference in the compared cells, named (never "half-precision" for int8)."""
    parts = []
    dtypes = sorted({str(r.rec.dtype) for r in rows if r.ok and r.rec.dtype not in ("fp32", None)})
    if dtypes:
        parts.append(f"{'/'.join(dtypes)} precision")
    quants = sorted({r.quant for r in rows if r.ok} - {"none"})
    if quants:
        parts.append(f"{'/'.join(quants)} quantisation")
    backends = sorted({str(r.rec.backend) for r in rows if r.ok and r.rec.backend} - {"transformers"})
    if backends:
        parts.append(f"the {'/'.join(backends)} backend")
    return " and ".join(parts) or "the settings that differ from eager fp32 transformers"


def _recorded(rows: list[Row], path: str) -> str:
    """The distinct values the server cells recorded at ``path`` (the rules they ran under), or the default's."""
    values = sorted({f"{v:g}" for r in rows if r.ok and r.server for v in [_num(value(r.rec, path))]
                     if v is not None})
    return ", ".join(values)


def _rules(rows: list[Row], question: answers.Question) -> list[str]:
    """The rules the figures on this page were judged by, generated from the code's constants and what the
    records store (never a hand-written paraphrase that can go stale)."""
    defaults = ServerSettings(qps=1.0)
    percentiles = sorted({percentile_name(_num(r.server.latency_percentile) or PERCENTILE_DEFAULT)
                          for r in rows if r.ok and r.server})
    confidence = _recorded(rows, "timing.server_run.confidence") or f"{defaults.confidence:g}"
    need = {p: queries_needed(0, p, defaults.confidence) for p in (0.9, 0.99)}
    here = "here" if any(r.ok and r.server for r in rows) else "by default; no server run here"
    min_duration = _recorded(rows, "timing.server_run.min_duration_s") or f"{defaults.min_duration_s:g}"
    min_requests = _recorded(rows, "timing.server_run.min_requests") or f"{defaults.min_requests:g}"
    return [
        f"The answer's question: {question.text}. An option qualifies for the headline only when its capacity was "
        f"judged at {question.statistic}, its run is VALID, and it carries none of the flags "
        f"{', '.join(answers.SUSPECT)}; the others are listed with why. Devices = ceil(demand ÷ (capacity × "
        f"{question.max_utilisation:g})).",
        "A server run is VALID by MLPerf's rules: its Poisson schedule lasted at least min_duration_s "
        f"({min_duration} s {here}), it served at least min_requests ({min_requests} {here}), and early stopping "
        "passes for its percentile "
        f"({', '.join(percentiles) or f'{percentile_name(PERCENTILE_DEFAULT)} by default'}) at {confidence} confidence: with k of n requests over the "
        "bound, the true percentile is within it when P(Binomial(n, 1 − P) ≤ k) ≤ 1 − confidence (LoadGen's "
        f"early_stopping.cc); with none over, p99 needs {need[0.99]} requests and p90 {need[0.9]}. The achieved "
        f"rate is reported, never judged (a run that achieved ≥ {KEPT_UP:.0%} of its target kept up: the capacity "
        "search's stop rule only).",
        f"Capacity is the highest VALID rate the capacity search found, to within {capacity_search.PRECISION:.0%} "
        "of the lowest invalid one (the record's capacity_bracket); a capacity above the offline throughput "
        "(capacity-above-offline) or a curve whose percentile falls as the load rises (curve-not-monotone) is "
        "flagged by the run and never headlines.",
        f"A setting with no server cell is answered by a capacity {answers.PREDICTED_BASIS}: a simulation of the batcher "
        "(max batch, max queue delay) under Poisson arrivals, each batch's service time drawn from the raw batch "
        "times its offline and single-stream cells measured (never extrapolated past the largest measured batch "
        "size), searched for the highest rate whose percentile meets the bound. It is never called measured.",
        "The decision table judges single-stream cells by request latency p90 and server cells by their own "
        "percentile; offline cells are judged on throughput only and never meet a bound.",
        f"A figure is stable when the 95% interval of the statistic its scenario is judged on lies within "
        f"±{STABLE_HALF_WIDTH:.0%} of it; an interval needs at least {samples_needed(0.5)} samples for the median, "
        f"{samples_needed(0.9)} for p90 and {samples_needed(0.99)} for p99 (order statistics), and with fewer the "
        "page says “not enough samples”. Every interval printed is the interval of the statistic beside it.",
    ]


def _agreement_label(rows: list[Row]) -> str:
    """The fp32-agreement column's header: with random weights it is a numerical stress test only."""
    if any(r.weights == "random" for r in rows):
        return "agreement with fp32 outputs (random weights: a numerical stress test, not quality)"
    return "agreement with fp32 outputs (same generated text)"


def _reported_key(task: str, rows: list[Row]) -> str | None:
    """The reported benchmark a task's cells stand beside: the records' own, else the task's first."""
    for r in rows:
        key = value(r.rec, "extra.reported_benchmark.key")
        if r.task == task and isinstance(key, str):
            return key
    return next((b.key for (_, t), b in TASK_BENCHMARKS.items() if t == task), None)


# ---------------------------------------------------------------------------------------------
# entry point


def _format_number(value: Any, digits: int = 3) -> str:
    return format_number(value, digits)


def build_report(
    run_dirs: list[Path],
    out: Path,
    *,
    latency_bound_ms: float | None = None,
    accuracy_floor: float | None = None,
    prices: Path | None = None,
    baseline: Path | None = None,
    title: str | None = None,
    demand_qps: float | None = None,
    answer: Path | None = None,
    latency_percentile: float = PERCENTILE_DEFAULT,
    max_utilisation: float = MAX_UTILISATION_DEFAULT,
    quality_gate: float | None = None,
    writer: Writer = write_all,
) -> Path:
    """Render one self-contained HTML report for one or several run directories; returns ``out``.

    The question (``bench.report.answer.Question``: bound, percentile, demand, utilisation, quality gate, floor) is
    answered once and every section reads that answer; with ``answer`` it is also written there as JSON. A
    directory named twice (``RUN ./RUN/``) counts once; ``writer`` is the seam for a full disk."""
    question = answers.Question(latency_bound_ms, latency_percentile, demand_qps, max_utilisation, quality_gate,
                                accuracy_floor)
    run_dirs = distinct_dirs(run_dirs)
    price_table = load_prices(prices)
    runs = load_runs(run_dirs, price_table)
    rows = [r for run in runs for r in run.rows]
    tasks = _tasks(rows)
    reported_keys = {t: _reported_key(t, rows) for t in tasks}
    charted, charted_note = chart_style.chart_rows(rows)
    styles = chart_style.Styles(charted)
    charts = report_charts.build_charts(charted, latency_bound_ms, reported_keys, REPORTED_LABEL, styles)
    badge, badge_class = _weights_badge(rows)
    facts = comparability(runs)
    found = answers.answer(rows, question)
    if answer is not None:
        answers.write_answer(Path(answer), found, question, writer=writer)
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
        "decisions": decide(rows, latency_bound_ms, found),
        "question": question,
        "answers": found,
        "answer_tasks": list(dict.fromkeys(a.task for a in found)),
        "demand_qps": demand_qps,
        "hours_per_month": HOURS_PER_MONTH,
        "cost_rounding": answers.ROUNDING,
        "server_basis": answers.SERVER_BASIS,
        "predicted_basis": answers.PREDICTED_BASIS,
        "stability": {"half_width": STABLE_HALF_WIDTH, "factor": ALTERNATIVE_FACTOR,
                      "needed": {s: samples_needed(q) for s, q in (("median", 0.5), ("p90", 0.9), ("p99", 0.99))}},
        "recommendations": [recommend(rows, t, found, question) for t in tasks],
        "latency_bound_ms": latency_bound_ms,
        "accuracy_floor": accuracy_floor,
        "prices": price_table,
        "unpriced": [k.label for k in _kinds([r for r in rows if r.ok and r.price is None])],
        "charts": charts,
        "chart_keys": styles.keys,
        "charted_note": charted_note,
        "max_label": chart_style.MAX_LABEL,
        "facts": facts,
        "differing": [f for f in facts if f.differs],
        "envs": [(run.name, _env_table(run.env)) for run in runs],
        "method": _method(rows, price_table),
        "examples": _examples(runs),
        "regression": _regression(baseline, run_dirs[0]),
        "random_only": {r.rec.weights for r in rows} == {"random"},
        "any_random": any(r.weights == "random" for r in rows),
        "agreement_label": _agreement_label(rows),
        "agreement_differs": _agreement_differs(rows),
        "rules": _rules(rows, question),
        "suspect": answers.SUSPECT,
        "answer_charts": answer_chart.charts(found, styles),
        "reported_label": REPORTED_LABEL,
        "reported": _reported_table(rows),
        "metric_label": metric_label,
        "cells_table": report_table.script_block(
            report_table.table_data(rows, latency_bound_ms, _agreement_label(rows))),
        "cells_table_headers": report_table.headers(_agreement_label(rows)),
        "cost_table": report_table.script_block(report_table.table_data(
            [r for r in rows if r.ok], latency_bound_ms, "", report_table.COST_COLUMNS)),
        "cost_table_headers": report_table.headers("", report_table.COST_COLUMNS),
    }
    return write_html(Path(out), render("report.html.j2", **context), writer)


def _reported_table(rows: list[Row]) -> list[dict[str, Any]]:
    """Per variant: params as built here, measured results, and reported ones, kept apart."""
    variants: dict[str, Any] = {}
    params: dict[str, float | None] = {}
    measured: dict[str, dict[str, list[float]]] = {}
    reported: dict[str, dict[str, Any]] = {}
    for r in rows:
        name = str(r.rec.variant)
        variants.setdefault(name, r.rec.variant)
        params[name] = params.get(name) or _num(r.rec.params)
        mine, theirs = measured.setdefault(name, {}), reported.setdefault(name, {})
        if r.ok and r.acc is not None:
            mine.setdefault(f"{r.rec.task} {r.metric} ({r.rec.dataset})", []).append(r.acc)
        for key, figure in (value(r.rec, "extra.reported") or {}).items():
            if _num(figure) is not None:
                theirs[str(key)] = figure
    out = []
    for name, variant in variants.items():
        summary = {
            k: (f"{_format_number(min(vals))}–{_format_number(max(vals))} over {len(vals)} settings")
            if len(vals) > 1 and min(vals) != max(vals)
            else _format_number(vals[0])
            for k, vals in measured[name].items()
        }
        if params[name] or summary or reported[name]:
            out.append({"variant": variant, "params": params[name], "measured": summary, "reported": reported[name]})
    return out
