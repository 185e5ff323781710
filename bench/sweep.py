"""Sweeps: a TOML matrix of settings expanded into cells, run group by group, never losing a result.

A cell is one point of the matrix. Cells are grouped by what needs a model load (variant, dtype,
device, attention, quantisation, channels-last, compile), so each model is loaded once per group.
Each finished cell is appended to results.jsonl at once; ``resume`` skips cells already ``ok``.
A failure in one cell (an exception, CUDA OOM, MemoryError) becomes a record and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import itertools
import json
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import inputs, store
from bench.checkpoints import (
    ATTN,
    DTYPES,
    WEIGHTS_MODES,
    LoadedModel,
    LoadOptions,
    load,
    read_config,
    resolve,
)
from bench.data import get_dataset, load_samples
from bench.errors import CellSkipped, UsageError, choice_error
from bench.measure import RepetitionPolicy, clock_for, device_kind
from bench.tasks import get_task
from bench.variants import get_variant

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SWEEP_DIR = Path(__file__).parent / "sweeps"
CACHES = ("dynamic", "static")
QUANT = ("none", "int8-dynamic")
# axes a user can override from the command line, with their element parser
AXES: dict[str, Callable[[str], Any]] = {
    "variants": str, "tasks": str, "dtypes": str, "batch_sizes": int, "devices": str, "attn": str,
    "compile": lambda v: _parse_bool("compile", v), "num_beams": int, "cache": str,
    "channels_last": lambda v: _parse_bool("channels_last", v), "quant": str,
}


def _parse_bool(axis: str, value: str) -> bool:
    lowered = str(value).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"bad {axis} value {value!r}; accepted: true, false")


@dataclass
class SweepConfig:
    """A sweep file: the matrix, the data, the repetition policy and how weights are found."""

    name: str = "custom"
    description: str = ""
    variants: list[str] = field(default_factory=lambda: ["base"])
    tasks: list[str] = field(default_factory=lambda: ["<CAPTION>"])
    dtypes: list[str] = field(default_factory=lambda: ["fp32"])
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    attn: list[str] = field(default_factory=lambda: ["sdpa"])
    compile: list[bool] = field(default_factory=lambda: [False])
    num_beams: list[int] = field(default_factory=lambda: [3])
    cache: list[str] = field(default_factory=lambda: ["dynamic"])
    channels_last: list[bool] = field(default_factory=lambda: [False])
    quant: list[str] = field(default_factory=lambda: ["none"])
    dataset: str = "synthetic-smoke"
    limit: int | None = 4
    max_new_tokens: int | None = None
    weights: str = "auto"
    model_path: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    repetition: dict[str, Any] = field(default_factory=dict)
    energy_idle_s: float = 1.0
    examples: int = 2

    def policy(self, device: str) -> RepetitionPolicy:
        base = dataclasses.asdict(RepetitionPolicy.for_device(device))
        unknown = set(self.repetition) - set(base)
        if unknown:
            raise UsageError(f"unknown repetition setting(s) {sorted(unknown)}; accepted: {sorted(base)}")
        return RepetitionPolicy(**{**base, **self.repetition})

    def load_options(self) -> LoadOptions:
        return LoadOptions(self.weights, self.model_path, self.trust_remote_code, self.allow_pickle)


def load_sweep(name_or_path: str) -> SweepConfig:
    """A shipped sweep by name (``smoke``) or a TOML file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SWEEP_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise choice_error("sweep", name_or_path, sorted(p.stem for p in SWEEP_DIR.glob("*.toml")))
    elif not path.exists():
        raise UsageError(f"sweep file not found: {path}; accepted: a shipped sweep name or a TOML file")
    try:
        raw = tomllib.loads(inputs.read_text(path, "sweep file"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and key != "repetition":
            flat.update(value)
        else:
            flat[key] = value
    known = {f.name for f in dataclasses.fields(SweepConfig)}
    unknown = set(flat) - known
    if unknown:
        raise UsageError(f"{path}: unknown setting(s) {sorted(unknown)}; accepted: {sorted(known)}")
    inputs.check_sweep(flat, str(path))
    return SweepConfig(**flat)


def override(config: SweepConfig, **axes: str | None) -> SweepConfig:
    """Apply comma-separated CLI overrides (``--dtypes fp16,bf16``) to a sweep's axes."""
    changes: dict[str, Any] = {}
    for axis, text in axes.items():
        if text is None:
            continue
        items = [v.strip() for v in text.split(",") if v.strip()]
        if not items:
            raise UsageError(f"empty --{axis.replace('_', '-')} list; accepted: comma-separated values")
        try:
            changes[axis] = [AXES[axis](v) for v in items]
        except ValueError:
            raise UsageError(f"bad --{axis.replace('_', '-')} value in {text!r}; accepted: integers") from None
    return dataclasses.replace(config, **changes)


@dataclass(frozen=True)
class Cell:
    """One point of the matrix. ``cell_id`` hashes exactly these settings, so it is machine-independent."""

    variant: str
    task: str
    dataset: str
    n_images: int
    device: str
    dtype: str
    batch_size: int
    attn: str
    compile: bool
    num_beams: int
    cache: str
    channels_last: bool
    quant: str
    weights: str
    model_path: str | None
    max_new_tokens: int | None

    @property
    def cell_id(self) -> str:
        canonical = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def group(self) -> tuple:
        return (self.variant, self.model_path, self.dtype, self.device, self.attn, self.quant, self.channels_last,
                self.compile)

    @property
    def label(self) -> str:
        extra = [k for k, on in (("compile", self.compile), ("channels-last", self.channels_last),
                                 (self.quant, self.quant != "none"), ("static-cache", self.cache == "static"))
                 if on]
        return " ".join([self.variant, self.task, self.dtype, f"bs{self.batch_size}", self.device, self.attn,
                         f"beams{self.num_beams}", *extra])


def validate(config: SweepConfig) -> None:
    """Refuse invalid values and combinations before anything runs (exit 2 via UsageError)."""
    inputs.check_sweep(dataclasses.asdict(config), "sweep")
    inputs.check_ranges(config)
    for v in config.variants:
        get_variant(v)
    if "custom" in config.variants and not config.model_path:
        raise UsageError("variant 'custom' needs --model-path DIR; accepted: a registered variant, or a model path")
    for t in config.tasks:
        get_task(t)
    get_dataset(config.dataset)
    checks = (("dtype", config.dtypes, DTYPES), ("attention implementation", config.attn, ATTN),
              ("cache", config.cache, CACHES), ("quantisation", config.quant, QUANT),
              ("weights mode", [config.weights], WEIGHTS_MODES))
    for kind, values, accepted in checks:
        for value in values:
            if value not in accepted:
                raise choice_error(kind, value, accepted)
    for device in config.devices:
        device_kind(device)
    for name, values in (("batch size", config.batch_sizes), ("num_beams", config.num_beams)):
        for value in values:
            if value < 1:
                raise UsageError(f"bad {name} {value}; accepted: integers >= 1")
    if config.limit is not None and config.limit < 1:
        raise UsageError(f"bad limit {config.limit}; accepted: integers >= 1")
    if config.quant == ["int8-dynamic"] and all(device_kind(d) != "cpu" for d in config.devices):
        raise UsageError("quant 'int8-dynamic' runs on CPU only and no device is cpu; accepted devices: cpu")
    for device in config.devices:
        config.policy(device)
    if config.model_path:
        read_config(Path(config.model_path).expanduser())
    for sample in load_samples(config.dataset, config.limit):
        sample.load_image()  # a missing or corrupt image stops the sweep here, named, before any cell runs


def expand(config: SweepConfig) -> list[Cell]:
    """The matrix as cells, ordered so that cells sharing a model load are adjacent; one cell per id."""
    n_images = len(load_samples(config.dataset, config.limit))
    cells, seen = [], set()
    for combo in itertools.product(config.variants, config.devices, config.dtypes, config.attn, config.quant,
                                   config.channels_last, config.compile, config.tasks, config.batch_sizes,
                                   config.num_beams, config.cache):
        variant, device, dtype, attn, quant, channels_last, compile_, task, bs, beams, cache = combo
        if quant != "none" and device_kind(device) != "cpu":
            continue  # dynamic int8 is a CPU-only path; the combination is not a cell
        cell = Cell(variant, get_task(task).token, config.dataset, n_images, device, dtype, bs, attn, compile_,
                    beams, cache, channels_last, quant, config.weights, config.model_path, config.max_new_tokens)
        if cell.cell_id not in seen:  # repeated axis values (see inputs.dedupe_axes) make no second cell
            seen.add(cell.cell_id)
            cells.append(cell)
    return cells


# ------------------------------------------------------------------------------------ support


def unsupported_reason(cell: Cell) -> str | None:
    """Why a valid cell cannot run on this machine (it becomes a ``skipped`` record), or None."""
    import torch

    kind = device_kind(cell.device)
    if kind == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available on this machine (no GPU or a CPU-only torch build)"
    if kind == "mps" and not torch.backends.mps.is_available():
        return "MPS is not available on this machine"
    if kind == "cuda" and cell.dtype == "bf16" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16 support"
    if kind == "cpu" and cell.dtype != "fp32":
        flags = _cpu_flags()
        needs = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}[cell.dtype]
        if not flags & set(needs):
            return (f"this CPU has no native {cell.dtype} ({' or '.join(needs)} missing from /proc/cpuinfo); "
                    "emulated timings would mislead")
    if cell.compile and kind == "cpu" and cell.cache != "static":
        return "compile is measured with the static KV cache only (a dynamic cache recompiles every step)"
    from bench.optimize import unsupported_reason as model_setting_reason

    return model_setting_reason(cell)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


# -------------------------------------------------------------------------------------- running


def _base_record(cell: Cell, checkpoint: str = "", weights: str = "") -> store.Record:
    return store.Record(
        cell_id=cell.cell_id, variant=cell.variant, checkpoint=checkpoint or (cell.model_path or ""),
        weights=weights or cell.weights, task=cell.task, dataset=cell.dataset, n_images=cell.n_images,
        device=cell.device, dtype=cell.dtype, batch_size=cell.batch_size, attn=cell.attn, compile=cell.compile,
        num_beams=cell.num_beams, max_new_tokens=cell.max_new_tokens or 0,
        settings={"cache": cell.cache, "channels_last": cell.channels_last, "quant": cell.quant,
                  "weights_requested": cell.weights},
    )


def _failure(cell: Cell, exc: BaseException, loaded: LoadedModel | None = None) -> store.Record:
    record = _base_record(cell, loaded.ref.checkpoint if loaded else "", loaded.ref.weights if loaded else "")
    text = f"{type(exc).__name__}: {exc}"
    oom = isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()
    record.status = "oom" if oom else "error"
    record.error = text.splitlines()[0][:2000]
    record.extra["traceback"] = traceback.format_exc(limit=8)
    return record


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class RunSummary:
    records: list[dict[str, Any]]
    skipped_resumed: int

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] in ("error", "oom")]


class Progress:
    """A tqdm bar with cell count, current cell and ETA; ``quiet`` prints one plain line per cell."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="cell", file=sys.stderr, dynamic_ncols=True)

    def start(self, cell: Cell) -> None:
        if self.bar is not None:
            self.bar.set_description(cell.label)

    def done(self, cell: Cell, record: store.Record) -> None:
        p50 = (record.latency_ms or {}).get("p50")
        line = f"{record.status:7s} {cell.label}" + (f"  p50 {p50:.0f} ms" if p50 is not None else "")
        if record.error:
            line += f"  ({record.error[:120]})"
        if self.bar is not None:
            self.bar.write(line)
            self.bar.update(1)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_sweep(config: SweepConfig, out: Path, *, resume: bool = False, quiet: bool = False,
              executor: str = "local", ray_address: str | None = None, extend: bool = False) -> RunSummary:
    """Validate, expand, and run every cell not already done; returns the records written.

    The run directory is locked for the whole run; ``resume`` skips cells whose latest record is final
    (``store.FINAL_STATUSES``) and refuses another sweep definition unless ``extend``.
    """
    if executor not in EXECUTORS:
        raise choice_error("executor", executor, EXECUTORS)
    if extend and not resume:
        raise UsageError("--extend adds cells to an existing run; accepted: --resume --extend")
    if executor == "ray":
        from bench.distributed import probe

        probe(ray_address)  # before anything is written
    validate(config)
    config = inputs.dedupe_axes(config)
    cells = expand(config)
    with store.run_lock(out):
        if not resume and (out / store.RESULTS).exists() and (out / store.RESULTS).stat().st_size:
            raise UsageError(f"{out} already holds results; accepted: --resume to continue it, or a new --out directory")
        store.repair_tail(out / store.RESULTS)  # a record that lost its newline is completed, a torn one cut
        done = store.finished_cells(out) if resume else set()
        todo = [c for c in cells if c.cell_id not in done]
        store.write_env(out, _env(out, config, resume, extend))
        if executor == "ray":
            from bench.distributed import run_with_ray

            records = run_with_ray(config, todo, out, ray_address=ray_address, quiet=quiet)
        else:
            records = run_cells(config, todo, out, quiet=quiet)
    return RunSummary(records, len(cells) - len(todo))


EXECUTORS = ("local", "ray")


def _env(out: Path, config: SweepConfig, resume: bool, extend: bool) -> dict[str, Any]:
    """env.json: a first run records its machine and sweep; a resume keeps them and appends a note
    (refusing a different sweep unless ``extend``, which makes the new sweep the recorded one)."""
    from bench.environment import differences, fingerprint

    current, sweep_now = fingerprint(), dataclasses.asdict(config)
    env = store.read_env(out) if resume else {}
    if not env:
        return {**current, "sweep": sweep_now}
    inputs.check_resume(out, env.get("sweep"), sweep_now, extend)
    note: dict[str, Any] = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "environment_differences": differences(env, current)}
    if inputs.sweep_definition(env.get("sweep") or {}) != inputs.sweep_definition(sweep_now):
        note["previous_sweep"] = env.get("sweep")
        env["sweep"] = sweep_now
    env["resumes"] = [*env.get("resumes", []), note]
    return env


def run(config_or_name: SweepConfig | str, out: str | Path, *, resume: bool = False, quiet: bool = True,
        executor: str = "local", ray_address: str | None = None, extend: bool = False, **overrides: Any):
    """Notebook API: run a sweep and return its results as ``store.load(out)`` does (a DataFrame).

    Axis overrides take lists or comma-separated strings (``dtypes=["fp32", "bf16"]``); other keyword
    arguments replace sweep fields (``limit=2``, ``weights="random"``).
    """
    config = load_sweep(config_or_name) if isinstance(config_or_name, str) else config_or_name
    axes = {k: v if isinstance(v, str) else ",".join(map(str, v)) for k, v in overrides.items() if k in AXES}
    config = dataclasses.replace(override(config, **axes), **{k: v for k, v in overrides.items() if k not in AXES})
    run_sweep(config, Path(out), resume=resume, quiet=quiet, executor=executor, ray_address=ray_address,
              extend=extend)
    return store.load(out)


def groups(cells: Iterable[Cell]) -> list[list[Cell]]:
    """Adjacent cells sharing a model load, in order."""
    return [list(g) for _, g in itertools.groupby(cells, key=lambda c: c.group)]


def run_cells(config: SweepConfig, cells: list[Cell], out: Path, *, quiet: bool = False) -> list[dict[str, Any]]:
    """Run cells locally, loading each group's model once; every record is appended as it ends."""
    progress = Progress(len(cells), quiet)
    written: list[dict[str, Any]] = []

    def emit(cell: Cell, record: store.Record) -> None:
        store.append(out, record)
        written.append(json.loads(record.to_json()))
        progress.done(cell, record)

    try:
        for group in groups(cells):
            runnable = []
            for cell in group:
                reason = unsupported_reason(cell)
                if reason:
                    record = _base_record(cell)
                    record.status, record.error = "skipped", reason
                    emit(cell, record)
                else:
                    runnable.append(cell)
            if not runnable:
                continue
            first = runnable[0]
            progress.start(first)
            try:
                loaded = load_group(config, first)
            except UsageError:
                raise
            except (Exception, MemoryError) as exc:  # a failed load fails every cell of its group
                for cell in runnable:
                    emit(cell, _failure(cell, exc))
                _free_memory()
                continue
            for cell in runnable:
                progress.start(cell)
                try:
                    record = run_cell(config, cell, loaded, out)
                except CellSkipped as exc:  # valid, but not runnable on its data: recorded, the sweep goes on
                    record = _base_record(cell, loaded.ref.checkpoint, loaded.ref.weights)
                    record.status, record.error = "skipped", str(exc)
                except UsageError:
                    raise
                except (Exception, MemoryError) as exc:
                    record = _failure(cell, exc, loaded)
                    _free_memory()
                emit(cell, record)
            del loaded
            _free_memory()
    finally:
        progress.close()
    return written


def load_group(config: SweepConfig, cell: Cell) -> LoadedModel:
    from bench.optimize import apply_model_settings

    variant = get_variant(cell.variant)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = resolve(variant, config.load_options())
    for w in caught:
        print(f"WARNING: {w.message}", file=sys.stderr, flush=True)
    loaded = load(variant, ref, device=cell.device, dtype=cell.dtype, attn=cell.attn, options=config.load_options())
    apply_model_settings(loaded, cell)
    return loaded


def run_cell(config: SweepConfig, cell: Cell, loaded: LoadedModel, out: Path) -> store.Record:
    """Measure one cell with an already-loaded model and build its record."""
    from bench.metrics import usable_samples
    from bench.optimize import roofline_for
    from bench.pipeline import Pipeline, generation_settings
    from bench.scenario import measure, scenario_name

    task = get_task(cell.task)
    samples = usable_samples(task.token, load_samples(cell.dataset, config.limit))
    if not samples:
        raise CellSkipped(f"dataset {cell.dataset!r} has no image usable for {task.token} (no query or reference)")
    generation = generation_settings(task, loaded.ref.weights, cell.num_beams, cell.max_new_tokens, cell.cache)
    clock = clock_for(cell.device)
    pipeline = Pipeline(loaded, task, generation, device=cell.device, dtype=cell.dtype, clock=clock)
    policy = config.policy(cell.device)
    started = time.time()
    m = measure(pipeline, samples, cell.batch_size, policy, cell.device, loaded.weights_bytes,
                energy_idle_s=config.energy_idle_s)
    record = _base_record(cell, loaded.ref.checkpoint, loaded.ref.weights)
    record.max_new_tokens = generation.max_new_tokens
    record.params = loaded.params
    record.latency_ms = m.latency
    record.stages_ms = m.stages_ms
    record.throughput = m.throughput
    record.memory = m.memory
    record.energy = m.energy
    record.samples_ms = m.samples_ms
    record.gen_tokens_mean = m.gen_tokens_mean
    record.unstable = m.unstable
    record.scenario = scenario_name(cell.batch_size)
    record.timing = {
        "clock": type(clock).__name__, "warmup": policy.warmup, "iterations": m.iterations,
        "min_iterations": policy.min_iterations, "min_duration_s": policy.min_duration_s,
        "per_image": "batch wall time / batch size" if cell.batch_size > 1 else "one image per batch",
        "generation": "forced exact token count (random weights)" if generation.forced else "natural end (EOS)",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "injected_preprocess_delay_ms": pipeline.delay_s * 1000 or None,
        "image_processor": type(loaded.processor.image_processor).__name__,
    }
    record.accuracy = _accuracy(cell, loaded, samples, m.answers)
    variant = get_variant(cell.variant)
    record.extra["reported"] = dict(variant.reported)  # paper/model-card numbers, always labelled "reported"
    record.extra["reported_source"] = variant.reported_source
    record.extra["reported_benchmark"] = _benchmark(cell)
    record.extra["texts"] = {str(k): v for k, v in m.texts.items()}
    record.extra["roofline"] = roofline_for(loaded.model, m.stages_ms.get("vision"), cell.device, cell.dtype,
                                            cell.quant)
    record.extra["resolution_note"] = loaded.ref.note
    record.extra["model_settings"] = loaded.notes
    record.examples = _examples(out, cell.dataset, samples[: config.examples], m.answers, m.texts)
    return record


def _accuracy(cell: Cell, loaded: LoadedModel, samples, answers: dict[int, Any]) -> dict[str, float] | None:
    """Scores with pretrained weights only: random weights' answers are meaningless."""
    if loaded.ref.weights != "pretrained":
        return None
    spec = get_dataset(cell.dataset)
    if cell.task not in spec.tasks:
        return None
    from bench.metrics import score

    return score(cell.task, samples, [answers.get(s.image_id) for s in samples])


def _benchmark(cell: Cell) -> dict[str, str] | None:
    """Which reported benchmark this cell measures (its key and the metric that matches it), if any."""
    from bench.metrics import reported_benchmark

    benchmark = reported_benchmark(cell.dataset, cell.task)
    return None if benchmark is None else {"key": benchmark.key, "metric": benchmark.metric}


def _examples(out: Path, dataset: str, samples, answers: dict[int, Any], texts: dict[int, str]) -> list[dict[str, Any]]:
    """A few images with their outputs, for the report (images are written once per run)."""
    examples = []
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset)[:60]
    folder = out / "examples" / slug
    for sample in samples:
        name = f"{slug}/{sample.image_id:06d}.png"
        path = out / "examples" / name
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            sample.load_image().save(path)
        examples.append({"image_id": sample.image_id, "image_file": f"examples/{name}", "width": sample.width,
                         "height": sample.height, "text": texts.get(sample.image_id, ""),
                         "answer": answers.get(sample.image_id)})
    return examples
