"""Sweeps: a TOML matrix of settings expanded into cells, run group by group, never losing a result.

A cell (``bench.results.cell``) is one point of the matrix. Cells are grouped by what needs a model load
(variant, dtype, device, attention, quantisation, channels-last, compile), so each model is loaded
once per group. An executor (``bench.run.executors``: local or Ray) runs them with ``bench.run.runner``;
each finished cell is appended to results.jsonl at once; ``resume`` skips cells already ``ok`` or ``skipped``.
A failure in one cell (an exception, MemoryError) becomes a record and the sweep goes on; CUDA running
out of memory at a batch size is a ``skipped`` record naming the memory (``bench.run.runner``).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.accuracy.data import get_dataset, load_samples
from bench.accuracy.tasks import get_task
from bench.backends.base import Backend, LoadOptions
from bench.backends.registry import BACKENDS, DEFAULT_BACKEND, get_backend
from bench.backends.transformers.checkpoints import WEIGHTS_MODES, check_files, read_config
from bench.backends.transformers.settings import parse_compile
from bench.core import host, inputs
from bench.core.errors import UsageError, choice_error
from bench.core.measure import DEVICE_KINDS, RepetitionPolicy, device_kind
from bench.core.paths import refuse_link
from bench.core.variants import get_variant
from bench.results import Record, store
from bench.results.cell import Cell
from bench.run.executors import ExecutorOptions, get_executor
from bench.run.runner import LOADGEN_LOGS
from bench.scenarios import (
    DEFAULT_LOAD_GENERATOR,
    LOAD_GENERATORS,
    SCENARIOS,
    ServerSettings,
    default_scenario,
    get_scenario,
    takes_load,
)

SWEEP_DIR = Path(__file__).parent.parent / "sweeps"
# axes a user can override from the command line, with their element parser
AXES: dict[str, Callable[[str], Any]] = {
    "variants": str, "tasks": str, "dtypes": str, "batch_sizes": int, "devices": str, "attn": str,
    "compile": lambda v: parse_compile("compile", v), "num_beams": int, "cache": str,
    "channels_last": lambda v: _parse_bool("channels_last", v), "quant": str, "scenarios": str,
    "compile_vision": lambda v: parse_compile("compile_vision", v), "preprocess": str,
    "prefetch": lambda v: _parse_bool("prefetch", v), "threads": host.parse_threads,
    "load_generator": str, "backends": str,
}
# the sweep's list of each axis a backend declares (``Backend.axes`` is keyed by the cell's field)
# and the name its errors use
BACKEND_AXES = {"dtype": ("dtypes", "dtype"), "attn": ("attn", "attention implementation"),
                "cache": ("cache", "cache"), "quant": ("quant", "quantisation"), "compile": ("compile", "compile"),
                "compile_vision": ("compile_vision", "compile_vision"),
                "channels_last": ("channels_last", "channels_last"), "preprocess": ("preprocess", "preprocess")}
# TOML tables kept as settings dicts (every other table is flattened into the sweep's fields)
SECTIONS = ("repetition", "server", "backend")


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
    compile: list[bool | str] = field(default_factory=lambda: [False])
    num_beams: list[int] = field(default_factory=lambda: [3])
    cache: list[str] = field(default_factory=lambda: ["dynamic"])
    channels_last: list[bool] = field(default_factory=lambda: [False])
    quant: list[str] = field(default_factory=lambda: ["none"])
    scenarios: list[str] | None = None  # None: single-stream at batch 1, offline above (bench.scenarios)
    compile_vision: list[bool | str] = field(default_factory=lambda: [False])
    preprocess: list[str] = field(default_factory=lambda: ["host"])
    prefetch: list[bool] = field(default_factory=lambda: [False])
    threads: list[int | str] = field(default_factory=lambda: [host.THREADS_DEFAULT])  # torch intra-op threads
    load_generator: list[str] = field(default_factory=lambda: [DEFAULT_LOAD_GENERATOR])  # builtin, mlperf
    backends: list[str] = field(default_factory=lambda: [DEFAULT_BACKEND])
    dataset: str = "synthetic-smoke"
    limit: int | None = 4
    max_new_tokens: int | None = None
    weights: str = "auto"
    model_path: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    allow_outside_images: bool = False  # coco-json images may lie outside the image folder (--allow-outside-images)
    repetition: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)  # [server]: ServerSettings fields
    backend: dict[str, dict[str, Any]] = field(default_factory=dict)  # [backend.NAME]: that backend's settings
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

    def server_settings(self) -> ServerSettings:
        return ServerSettings.from_dict(self.server)

    def backend_for(self, name: str) -> Backend:
        """The backend ``name`` with this sweep's settings for it (``[backend.NAME]``)."""
        return get_backend(name).configure(self.backend.get(name, {}))


def load_sweep(name_or_path: str) -> SweepConfig:
    """A shipped sweep by name (``smoke``: no suffix, no folder) or a TOML file path (``s.toml``, and a
    path without a suffix such as ``/dev/fd/63`` from ``--sweep <(cat s.toml)``)."""
    path = Path(name_or_path)
    if not path.suffix and len(path.parts) == 1:
        path = SWEEP_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise choice_error("sweep", name_or_path, sorted(p.stem for p in SWEEP_DIR.glob("*.toml")))
    elif not path.exists():
        raise UsageError(f"sweep file not found: {path}; accepted: a shipped sweep name or a TOML file")
    try:
        raw = inputs.parse_toml(inputs.read_text(path, "sweep file"))
    except ValueError as exc:  # TOML syntax, or nesting deeper than inputs.MAX_NESTING
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and key not in SECTIONS:
            flat.update(value)
        else:
            flat[key] = value
    known = {f.name for f in dataclasses.fields(SweepConfig)}
    unknown = set(flat) - known
    if unknown:
        raise UsageError(f"{path}: unknown setting(s) {sorted(unknown)}; accepted: {sorted(known)}")
    _check_types(flat, str(path))
    return SweepConfig(**flat)


def _check_types(values: dict[str, Any], where: str) -> None:
    """Each setting of the type its dataclass declares (``batch_sizes = 1`` is not a list)."""
    inputs.check_sweep(values, SweepConfig, {"repetition": RepetitionPolicy, "server": ServerSettings}, where)


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


def validate(config: SweepConfig) -> None:
    """Refuse invalid values and combinations before anything runs (exit 2 via UsageError)."""
    _check_types(dataclasses.asdict(config), "sweep")
    inputs.check_ranges(config, AXES)
    for v in config.variants:
        get_variant(v)
    if "custom" in config.variants and not config.model_path:
        raise UsageError("variant 'custom' needs --model-path DIR; accepted: a registered variant, or a model path")
    for t in config.tasks:
        get_task(t)
    get_dataset(config.dataset)
    if config.weights not in WEIGHTS_MODES:
        raise choice_error("weights mode", config.weights, WEIGHTS_MODES)
    for value in config.load_generator:
        if value not in LOAD_GENERATORS:
            raise choice_error("load generator", value, LOAD_GENERATORS)
    validate_backend_axes(config)
    for name in config.backend:  # a table for a backend the sweep does not run is kept, checked all the same
        config.backend_for(name)
    for device in config.devices:
        device_kind(device)
    for value in config.threads:
        host.parse_threads(value)
    if over := host.oversubscribed(config.threads, host.usable_cores()):
        warnings.warn(f"threads {', '.join(map(str, over))} > the {host.usable_cores()} usable cores: the cells "
                      "oversubscribe the CPU (allowed, to measure it; expect slower, noisier figures)", stacklevel=2)
    for device in config.devices:
        config.policy(device)
    validate_scenarios(config)
    if config.model_path:
        read_config(Path(config.model_path).expanduser())
        check_files(Path(config.model_path).expanduser())
    for sample in load_samples(config.dataset, config.limit, config.allow_outside_images):
        sample.load_image()  # a missing or corrupt image stops the sweep here, named, before any cell runs


def validate_backend_axes(config: SweepConfig) -> None:
    """Known backends, and each axis value one of them runs (the accepted values are the backends'), on
    one of the sweep's devices (a value a backend runs on some of them only gives skipped cells elsewhere)."""
    backends = [get_backend(name) for name in config.backends]
    others = [b for name, b in BACKENDS.items() if name not in config.backends]
    kinds = list(dict.fromkeys(device_kind(d) for d in config.devices))
    for axis, (sweep_axis, kind) in BACKEND_AXES.items():
        for value in getattr(config, sweep_axis):
            if not any(b.accepts(axis, value) for b in backends):
                accepted = dict.fromkeys(a for b in backends for a in b.axes.get(axis, ()))
                error = choice_error(kind, value, [str(a).lower() if isinstance(a, bool) else a for a in accepted])
                elsewhere = [b.name for b in others if b.accepts(axis, value)]
                if elsewhere:
                    error = UsageError(f"{error}; backend {', '.join(elsewhere)} runs it (--backends)")
                raise error
            if not any(b.accepts(axis, value, k) for b in backends for k in kinds):
                where = [k for k in DEVICE_KINDS if any(b.accepts(axis, value, k) for b in backends)]
                raise UsageError(f"{kind} {value!r} runs on no device of the sweep ({', '.join(config.devices)}); "
                                 f"accepted devices: {', '.join(where)}")


def validate_scenarios(config: SweepConfig) -> None:
    """Known scenario names, each with a batch size it can run, and server settings when asked for."""
    if config.scenarios is not None and not config.scenarios:
        raise UsageError(f"empty scenarios list; accepted: {', '.join(SCENARIOS)}")
    for name in config.scenarios or ():
        scenario = get_scenario(name)
        problems = [scenario.cell_problem(bs) for bs in config.batch_sizes]
        if all(problems):
            raise UsageError(f"scenario {name!r} makes no cell at batch size(s) {config.batch_sizes} ({problems[0]}); "
                             "accepted: single-stream with batch size 1 in --batch-sizes")
    if takes_load(config.scenarios or ()):
        config.server_settings()
    for bs in config.batch_sizes:
        if config.scenarios is not None and not _fitting(config.scenarios, bs):
            warnings.warn(f"batch size {bs}: no scenario of {config.scenarios} runs it "
                          f"({get_scenario(config.scenarios[0]).cell_problem(bs)}); its cells are made in "
                          f"{default_scenario(bs)}, as in sweeps without a scenarios axis", stacklevel=2)


def _fitting(scenarios: list[str], batch_size: int) -> list[str]:
    return [s for s in scenarios if get_scenario(s).cell_problem(batch_size) is None]


def _scenarios_for(config: SweepConfig, batch_size: int) -> list[str]:
    """The scenarios of one batch size: those asked for that can run it; the default one when none can
    (a batch size asked for never disappears in silence: ``validate_scenarios`` warns)."""
    if config.scenarios is None:
        return [default_scenario(batch_size)]
    return _fitting(config.scenarios, batch_size) or [default_scenario(batch_size)]


def unique_cells(cells: Iterable[Cell]) -> list[Cell]:
    """The first cell of each cell id, in order."""
    out, seen = [], set()
    for cell in cells:
        if cell.cell_id not in seen:
            seen.add(cell.cell_id)
            out.append(cell)
    return out


def expand(config: SweepConfig) -> list[Cell]:
    """The matrix as cells, ordered so that cells sharing a model load are adjacent; one cell per id."""
    n_images = len(load_samples(config.dataset, config.limit, config.allow_outside_images))

    def cells() -> Iterator[Cell]:
        for combo in itertools.product(config.backends, config.variants, config.devices, config.dtypes, config.attn,
                                       config.quant, config.channels_last, config.compile, config.compile_vision, config.tasks,
                                       config.preprocess, config.prefetch, config.batch_sizes, config.num_beams,
                                       config.cache, config.threads, config.load_generator):
            (backend, variant, device, dtype, attn, quant, channels_last, compile_, compile_vision, task, preprocess,
             prefetch, bs, beams, cache, threads, load_generator) = combo
            values = {"dtype": dtype, "attn": attn, "cache": cache, "quant": quant, "compile": compile_,
                      "compile_vision": compile_vision, "channels_last": channels_last, "preprocess": preprocess}
            if not all(get_backend(backend).accepts(axis, value) for axis, value in values.items()):
                continue  # a value only another backend of the sweep runs
            for scenario in _scenarios_for(config, bs):
                server = None if get_scenario(scenario).traits.closed_loop else config.server_settings()
                yield Cell(variant, get_task(task).token, config.dataset, n_images, device, dtype, bs, attn,
                           compile_, beams, cache, channels_last, quant, config.weights, config.model_path,
                           config.max_new_tokens, scenario, server, compile_vision, preprocess, prefetch, threads,
                           load_generator, backend)

    return unique_cells(cells())  # repeated axis values (see inputs.dedupe_axes) make no second cell


@dataclass
class RunSummary:
    records: list[Record]
    skipped_resumed: int

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.records if r.status in ("error", "oom")]


def run_sweep(config: SweepConfig, out: Path, *, resume: bool = False, quiet: bool = False,
              executor: str = "local", ray_address: str | None = None, extend: bool = False,
              loadavg: host.LoadReader = os.getloadavg) -> RunSummary:
    """Validate, expand, and run every cell not already done; returns the records written.

    The run directory is locked for the whole run; ``resume`` skips cells whose latest record is final
    (``store.FINAL_STATUSES``) and refuses another sweep definition unless ``extend``. ``loadavg`` reads
    the host's load (``env.json``'s ``host_load``, at the start and the end; tests pass a fake).
    """
    chosen = get_executor(executor, ExecutorOptions(ray_address))  # an unknown or unreachable one: before anything
    if extend and not resume:
        raise UsageError("--extend adds cells to an existing run; accepted: --resume --extend")
    validate(config)
    config = inputs.dedupe_axes(config, AXES, {"tasks": lambda t: get_task(t).token})
    cells = expand(config)
    with store.run_lock(out):
        if resume and any(r.extra.converted_from_schema for r in store.records(out)):
            raise UsageError(f"{out} holds schema-1 records (amortised latency, cell ids without the scenario); "
                             "accepted: a new --out directory")
        if not resume and (out / store.RESULTS).exists() and (out / store.RESULTS).stat().st_size:
            raise UsageError(f"{out} already holds results; accepted: --resume to continue it, or a new --out directory")
        _check_log_folder(out / LOADGEN_LOGS)
        load = host.host_load(loadavg)
        env = _env(out, config, resume, extend, load)  # a refused resume returns here, before anything is changed
        store.repair_tail(out / store.RESULTS)  # a record that lost its newline is completed, a torn one cut
        done = store.finished_cells(out) if resume else set()
        todo = [c for c in cells if c.cell_id not in done]
        store.write_env(out, env)
        if warning := host.busy_warning(load):
            warnings.warn(warning, host.BusyHostWarning, stacklevel=2)
        try:
            records = chosen.run(config, todo, out, quiet=quiet)
        finally:
            _finish_host_load(out, loadavg)
    return RunSummary(records, len(cells) - len(todo))


def _check_log_folder(logs: Path) -> None:
    """The load generator's log folder is a real folder of the run directory: never a link leading the
    logs elsewhere, nor a file that would fail every cell."""
    refuse_link(logs, "load generator log folder")
    if logs.exists() and not logs.is_dir():
        raise UsageError(f"load generator log folder {logs} is not a folder; accepted: a folder (remove the file)")


def _finish_host_load(out: Path, loadavg: host.LoadReader) -> None:
    """Write the load at the end of the run into this session's ``host_load`` (the latest resume's, if any)."""
    env = store.read_env(out)
    session = env["resumes"][-1] if env.get("resumes") and "host_load" in env["resumes"][-1] else env
    if isinstance(session.get("host_load"), dict):
        session["host_load"]["end"] = host.load_average(loadavg)
        store.write_env(out, env)


def _env(out: Path, config: SweepConfig, resume: bool, extend: bool, load: dict[str, Any]) -> dict[str, Any]:
    """env.json: a first run records its machine, sweep and host load; a resume keeps them and appends a
    note with its own host load (refusing a different sweep unless ``extend``, which makes the new sweep
    the recorded one)."""
    import time

    from bench.run.environment import differences, fingerprint

    current, sweep_now = fingerprint(), dataclasses.asdict(config)
    env = store.read_env(out) if resume else {}
    if resume and not extend and store.records(out) and not isinstance(env.get("sweep"), dict):
        raise UsageError(f"--resume of {out}: {out / store.ENV} is missing or unreadable, so the sweep these records "
                         "came from is unknown; accepted: --resume --extend to add this sweep's cells anyway, or a "
                         "new --out directory")
    if not env:
        return {**current, "sweep": sweep_now, "host_load": load}
    recorded = env.get("sweep")
    if isinstance(recorded, dict):  # a setting added since that run was written had its default then
        recorded = {**dataclasses.asdict(SweepConfig()), **recorded}
    inputs.check_resume(out, recorded, sweep_now, extend)
    note: dict[str, Any] = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "environment_differences": differences(env, current), "host_load": load}
    if inputs.sweep_definition(recorded if isinstance(recorded, dict) else {}) != inputs.sweep_definition(sweep_now):
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
