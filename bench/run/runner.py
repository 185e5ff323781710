"""Running cells: load each group's model once, measure each cell with its scenario, build its record.

Both executors use this module: the local one calls ``run_cells`` in-process, the Ray one calls it in
each task (``bench.run.executors.ray``). A failure in one cell (an exception, MemoryError) becomes a
record and the run goes on; a ``UsageError`` stops it. CUDA running out of memory at a batch size is
a ``skipped`` record naming the allocation that failed and the device's memory, and the larger batch
sizes of the same setting are skipped without trying.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import itertools
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bench.accuracy.data import get_dataset, load_samples
from bench.accuracy.tasks import get_task, tasks_of
from bench.backends.base import Backend, GenerationSettings, LoadedModel, LoadOptions, generation_settings
from bench.backends.registry import get_backend
from bench.core import host
from bench.core.errors import CellSkipped, UsageError
from bench.core.measure import Clock, RepetitionPolicy, clock_for, device_kind
from bench.core.paths import inside, make_dir, write_atomic
from bench.core.variants import get_variant
from bench.results import (
    CellAxes,
    Example,
    Extra,
    Flag,
    LoadGen,
    Record,
    Settings,
    Timing,
    figure,
    plausibility,
    store,
)
from bench.results.cell import Cell

if TYPE_CHECKING:
    from bench.scenarios.base import Measurement

COLD_BASIS = ("load_s: resolve + load + model settings of the model this cell shares with its group; "
              "first_call_ms: the cell's first batch, before warm-up (the group's first cell: just after the load)")

# Who issued a cell's requests (``timing.load_generator``); docs/scenarios.md, "Load generators".
LOAD_GENERATOR_BASIS = {
    "builtin": "this project's own load generator (closed loop, or the seeded Poisson schedule of the server)",
    "mlperf": ("the official MLPerf LoadGen issued the queries and judged the run (loadgen); the same batcher and "
               "pipeline served them"),
}
LOADGEN_LOGS = "loadgen"  # the run directory's folder of LoadGen logs, one subfolder per cell id


class RunConfig(Protocol):
    """What running a cell needs of a sweep's settings (``bench.run.sweep.SweepConfig``)."""

    limit: int | None
    energy_idle_s: float
    examples: int

    def policy(self, device: str) -> RepetitionPolicy: ...

    def load_options(self) -> LoadOptions: ...

    def backend_for(self, name: str) -> Backend: ...


def backend_for(config: RunConfig | None, name: str) -> Backend:
    """The backend ``name`` with the run's settings for it (none without a run: the registry's own)."""
    return get_backend(name) if config is None else config.backend_for(name)


# ------------------------------------------------------------------------------------ support


def unsupported_reason(cell: Cell, backend: Backend) -> str | None:
    """Why a valid cell cannot run on this machine with ``backend`` (a ``skipped`` record), or None."""
    import torch

    if reason := backend.unavailable_reason():  # not installed: nothing else about the cell matters
        return reason
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
    from bench.scenarios import get_load_generator, get_scenario

    traits = get_scenario(cell.scenario).traits
    if cell.prefetch and traits.prefetch is None:
        return f"prefetch needs a next batch to prepare: {traits.no_prefetch}"
    if reason := get_load_generator(cell.load_generator).unavailable():
        return reason
    if cell.prefetch and cell.load_generator != "builtin":
        return f"prefetch is measured with the builtin load generator only ({cell.load_generator} asked)"
    return backend.unsupported_reason(cell)


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


def _base_record(cell: Cell, loaded: LoadedModel | None = None, **fields: Any) -> Record:
    """The record of ``cell``: its axes and settings, the checkpoint its group loaded (if it did), and ``fields``."""
    axes = {f.name: getattr(cell, f.name) for f in dataclasses.fields(CellAxes)}
    settings = Settings(cache=cell.cache, channels_last=cell.channels_last, quant=cell.quant,
                        weights_requested=cell.weights, compile_vision=cell.compile_vision,
                        preprocess=cell.preprocess, prefetch=cell.prefetch,
                        threads=cell.threads if cell.threads != host.THREADS_DEFAULT else None,
                        load_generator=cell.load_generator)
    fields = {"max_new_tokens": cell.max_new_tokens or 0, **fields}
    return Record(**axes, cell_id=cell.cell_id, checkpoint=(loaded.ref.checkpoint if loaded else "") or
                  (cell.model_path or ""), weights=(loaded.ref.weights if loaded else "") or cell.weights,
                  scenario=cell.scenario, backend=cell.backend, settings=settings, **fields)


def marked_record(cell: Cell, status: str, reason: str, loaded: LoadedModel | None = None) -> Record:
    """A record that says only why the cell did not run (``skipped``) or how it failed (``error``)."""
    return _base_record(cell, loaded, status=status, error=reason)


def _failure(cell: Cell, exc: BaseException, loaded: LoadedModel | None = None) -> Record:
    if is_cuda_oom(exc):
        return marked_record(cell, "skipped", cuda_oom_reason(cell.device, cell.batch_size, exc), loaded)
    text = f"{type(exc).__name__}: {exc}"
    oom = isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()
    return _base_record(cell, loaded, status="oom" if oom else "error", error=text.splitlines()[0][:2000],
                        extra=Extra.from_dict({"traceback": traceback.format_exc(limit=8)}))


def is_cuda_oom(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, raised by the CUDA allocator."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def cuda_memory(device: str) -> tuple[int, int] | None:
    """(free, total) bytes of a CUDA device, or None where it cannot be read."""
    try:
        import torch

        free, total = torch.cuda.mem_get_info(torch.device(device))
        return int(free), int(total)
    except Exception:  # no CUDA, or the device is in a bad state after the OOM
        return None


def cuda_oom_reason(device: str, batch_size: int, exc: BaseException) -> str:
    """One line: the batch size, the allocation that failed and the device's memory."""
    asked = re.search(r"Tried to allocate ([\d.]+ ?[KMGT]i?B)", str(exc))
    memory = cuda_memory(device)
    capacity = (f"the device has {memory[1] / 2**30:.1f} GiB in all, {memory[0] / 2**30:.1f} GiB free after the "
                "failure" if memory else "device capacity unknown")
    need = f"tried to allocate {asked.group(1)} more" if asked else "allocation size not reported"
    return f"CUDA out of memory at batch size {batch_size}: {need}; {capacity}"


def free_memory() -> None:
    """Collect garbage and hand the CUDA allocator's cached blocks back (after a failure or a model)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Progress:
    """A tqdm bar with cell count, current cell and ETA; ``quiet`` prints one plain line per cell.

    With ``run_dir`` every line printed is also appended, timestamped, to its progress.log as it is printed.
    """

    def __init__(self, total: int, quiet: bool, run_dir: Path | None = None) -> None:
        self.quiet = quiet
        self.run_dir = run_dir
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="cell", file=sys.stderr, dynamic_ncols=True)

    def start(self, cell: Cell) -> None:
        if self.bar is not None:
            self.bar.set_description(cell.label)

    def done(self, cell: Cell, record: Record) -> None:
        p50 = figure(record, "latency_ms.p50")
        line = f"{record.status:7s} {cell.label}" + (f"  p50 {p50:.0f} ms" if p50 is not None else "")
        if record.error:
            line += f"  ({record.error[:120]})"
        self._write(line)
        if self.bar is not None:
            self.bar.update(1)

    def note(self, line: str) -> None:
        """A line on the current cell's progress (a capacity search's steps), under the bar."""
        self._write(f"        {line}")

    def _write(self, line: str) -> None:
        if self.run_dir is not None:
            store.append_progress(self.run_dir, f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {line}")
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def groups(cells: Iterable[Cell], config: RunConfig | None = None) -> list[list[Cell]]:
    """Adjacent cells sharing a model load, in order (what the load depends on: the cell's group and
    whatever its backend, with the run's settings, fixes when it loads)."""
    return [list(g) for _, g in itertools.groupby(
        cells, key=lambda c: (c.group, backend_for(config, c.backend).load_key(c)))]


def _runnable(group: list[Cell], config: RunConfig, gate: Callable[[Cell], str | None] | None,
              emit: Callable[[Cell, Record], None]) -> list[Cell]:
    """The cells of a group that may run; each other one is emitted as a ``skipped`` record with its reason
    (a backend that does not support it, or the gate)."""
    runnable = []
    for cell in group:
        reason = unsupported_reason(cell, config.backend_for(cell.backend)) or (gate(cell) if gate else None)
        if reason:
            emit(cell, marked_record(cell, "skipped", reason))
        else:
            runnable.append(cell)
    return runnable


def _refusal(cell: Cell, setting: Cell, gate: Callable[[Cell], str | None] | None,
             oom_at: dict[Cell, int]) -> str | None:
    """Why a loaded cell is not tried: the gate's reason, else a smaller batch of the same settings
    (``setting``: the cell without its batch size) that already ran out of CUDA memory."""
    reason = gate(cell) if gate else None
    if reason is None and setting in oom_at and cell.batch_size > oom_at[setting]:
        return (f"not tried: batch size {cell.batch_size} > {oom_at[setting]}, which ran out of CUDA "
                "memory with the same settings")
    return reason


def run_cells(config: RunConfig, cells: list[Cell], out: Path, *, quiet: bool = False,
              gate: Callable[[Cell], str | None] | None = None) -> list[Record]:
    """Run cells locally, loading each group's model once; every record is appended as it ends.

    ``gate(cell)`` may refuse a cell before it starts (a time budget, say): its reason becomes the
    ``skipped`` record's error.
    """
    progress = Progress(len(cells), quiet, out)
    written: list[Record] = []
    oom_at: dict[Cell, int] = {}  # a setting (batch size left out) -> the smallest batch that ran out of memory

    def emit(cell: Cell, record: Record) -> None:
        store.append(out, record)
        written.append(record)
        progress.done(cell, record)

    try:
        for group in groups(cells, config):
            runnable = _runnable(group, config, gate, emit)
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
                free_memory()
                continue
            for cell in runnable:
                setting = dataclasses.replace(cell, batch_size=0)
                reason = _refusal(cell, setting, gate, oom_at)
                if reason:
                    emit(cell, marked_record(cell, "skipped", reason, loaded))
                    continue
                progress.start(cell)
                try:
                    with host.torch_threads(cell.threads) as threads:
                        record = run_cell(config, cell, loaded, out, note=progress.note)
                    # the number used (a skipped record: the one asked for)
                    record = dataclasses.replace(record, settings=dataclasses.replace(record.settings, threads=threads))
                except CellSkipped as exc:  # valid, but not runnable on its data: recorded, the sweep goes on
                    record = marked_record(cell, "skipped", str(exc), loaded)
                except UsageError:
                    raise
                except (Exception, MemoryError) as exc:
                    record = _failure(cell, exc, loaded)
                    if is_cuda_oom(exc):
                        oom_at[setting] = min(cell.batch_size, oom_at.get(setting, cell.batch_size))
                    del exc  # its traceback holds the failed batch's tensors
                    free_memory()
                emit(cell, record)
            del loaded
            free_memory()
    finally:
        progress.close()
    return written


def load_group(config: RunConfig, cell: Cell) -> LoadedModel:
    """The cell's model through its backend (converting or compiling is part of loading)."""
    variant = get_variant(cell.variant)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = config.backend_for(cell.backend).resolve(variant, config.load_options())
    for w in caught:
        print(f"WARNING: {w.message}", file=sys.stderr, flush=True)
    loaded = config.backend_for(cell.backend).load(variant, ref, cell, config.load_options())
    loaded.load_s = time.perf_counter() - started
    return loaded


def _timing(cell: Cell, policy: RepetitionPolicy, m: Measurement, clock: Clock, generation: GenerationSettings,
            started: float, backend: Backend, loaded: LoadedModel, pipeline: Any) -> dict[str, Any]:
    """How a cell's figures were timed: the clock, the repetitions, each figure's basis, the server's run length."""
    from bench.results.schema import STAGES_BASIS
    from bench.scenarios import get_scenario
    from bench.scenarios.base import TIME_PER_IMAGE_BASIS

    timing = {
        "clock": type(clock).__name__, "warmup": policy.warmup, "iterations": m.iterations,
        "min_iterations": policy.min_iterations, "min_duration_s": policy.min_duration_s,
        "latency": m.latency_basis, "time_per_image": TIME_PER_IMAGE_BASIS, "stages_basis": STAGES_BASIS,
        "generation": "forced exact token count (random weights)" if generation.forced else "natural end (EOS)",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "image_processor": backend.processor_name(loaded),
        "preprocess": {"host": "the checkpoint's processor on the CPU, pixels copied",
                       "device": "uint8 images copied, resized and normalised on the device"}[cell.preprocess],
        "prefetch": get_scenario(cell.scenario).traits.prefetch if cell.prefetch else None,
        "load_s": loaded.load_s, "first_call_ms": pipeline.first_call_ms, "cold": COLD_BASIS,
        "load_generator": LOAD_GENERATOR_BASIS[cell.load_generator],
    }
    if cell.server is not None:  # the server's run length replaces the repetition policy's
        timing["server_run"] = {"min_duration_s": cell.server.min_duration_s,
                                "final_min_duration_s": cell.server.final_min_duration_s,
                                "max_duration_s": cell.server.max_duration_s,
                                "min_requests": cell.server.min_requests, "max_requests": cell.server.max_requests,
                                "confidence": cell.server.confidence, "seed": cell.server.seed}
    return timing


def run_cell(config: RunConfig, cell: Cell, loaded: LoadedModel, out: Path,
             note: Callable[[str], None] = lambda line: None) -> Record:
    """Measure one cell with an already-loaded model and build its record; ``note`` gets progress lines."""
    from bench.accuracy.metrics import usable_samples
    from bench.backends.transformers.preprocess import device_unsupported_reason
    from bench.run.optimize import matmul_reference, reference_dtype, roofline_for
    from bench.scenarios import ScenarioInput, get_load_generator

    task = get_task(cell.task)
    samples = usable_samples(task.token, load_samples(cell.dataset, config.limit, config.allow_outside_images))
    if not samples:
        raise CellSkipped(f"dataset {cell.dataset!r} has no image usable for {task.token} (no query or reference)")
    if cell.preprocess == "device" and (reason := device_unsupported_reason(loaded.processor)):
        raise CellSkipped(reason)
    generation = generation_settings(task, loaded.ref.weights, cell.num_beams, cell.max_new_tokens, cell.cache)
    clock = clock_for(cell.device)
    backend = config.backend_for(cell.backend)
    pipeline = backend.pipeline(loaded, task, generation, device=cell.device, dtype=cell.dtype, clock=clock,
                                preprocess=cell.preprocess, prefetch=cell.prefetch)
    policy = config.policy(cell.device)
    started = time.time()
    reference_in = reference_dtype(cell.dtype, cell.quant)
    flops = backend.vision_flops(loaded)  # no roofline (nor its reference products) where it counts none
    before = matmul_reference(cell.device, reference_in) if flops is not None else 0.0  # just before the cell
    log_dir = out / LOADGEN_LOGS / cell.cell_id  # a generator's own logs (LoadGen's), one folder per cell
    inside(out, f"{LOADGEN_LOGS}/{cell.cell_id}", "load generator log folder")  # a link there never leads outside
    m = get_load_generator(cell.load_generator).measure(cell.scenario, ScenarioInput(
        pipeline, samples, cell.batch_size, policy, device=cell.device, weights_bytes=loaded.weights_bytes,
        energy_idle_s=config.energy_idle_s, server=cell.server, prefetch=cell.prefetch, log_dir=log_dir,
        note=note))
    if set(m.stages_ms) != set(backend.stages):  # a record holds what its backend declares it times
        raise RuntimeError(f"backend {backend.name} timed stages {', '.join(m.stages_ms) or 'none'}; it declares "
                           f"{', '.join(backend.stages)}")
    after = matmul_reference(cell.device, reference_in) if flops is not None else 0.0  # and just after it
    loadgen = LoadGen.from_dict(m.loadgen)
    if loadgen is not None and loadgen.logs is not None:  # its log folder, relative to the run directory
        loadgen = dataclasses.replace(loadgen, logs=Path(loadgen.logs).relative_to(out).as_posix())
    timing = _timing(cell, policy, m, clock, generation, started, backend, loaded, pipeline)
    roofline, roofline_flags = roofline_for(flops, m.stages_ms.get("vision"), cell.device, cell.dtype, cell.quant,
                                            (before, after))
    variant = get_variant(cell.variant)
    extra = {"reported": dict(variant.reported),  # paper/model-card numbers, always labelled "reported"
             "reported_source": variant.reported_source, "reported_benchmark": _benchmark(cell),
             "texts": {str(k): v for k, v in m.texts.items()}, "roofline": roofline and roofline.to_dict(),
             "resolution_note": loaded.ref.note, "model_settings": loaded.notes,
             "backend_info": backend.record_extra(loaded), **m.extra}
    measured = tuple(map(Flag.from_dict, m.flags))
    flags = (*measured, *_offline_flags(cell, m.capacity_qps, measured, out), *map(Flag.from_dict, roofline_flags))
    return _base_record(
        cell, loaded, max_new_tokens=generation.max_new_tokens, params=loaded.params, **m.tables(),
        loadgen=loadgen, flags=flags,
        timing=Timing.from_dict(timing), accuracy=_accuracy(cell, loaded, samples, m.answers),
        extra=Extra.from_dict(extra),
        examples=tuple(map(Example.from_dict, _examples(out, cell.dataset, samples[: config.examples], m.answers,
                                                         m.texts))))


def _offline_flags(cell: Cell, capacity_qps: float | None, flags: tuple[Flag, ...], out: Path) -> list[Flag]:
    """``capacity-above-offline`` against the offline cell of the same setting and batch size already in
    this run directory (the sweep runs a batch size's scenarios in the order listed, offline first in
    ``procurement``); nothing when the cell's own ceiling already raised it."""
    if capacity_qps is None or any(f.code == "capacity-above-offline" for f in flags):
        return []
    twin = dataclasses.replace(cell, scenario="offline", server=None).cell_id
    offline = [r for r in store.records(out) if r.cell_id == twin and r.status == "ok"]
    images_per_s = figure(offline[-1], "throughput.images_per_s") if offline else None
    found = plausibility.capacity_above_offline(capacity_qps, images_per_s,
                                                "the offline cell of the same setting and batch size in this run")
    return [Flag.from_dict(found)] if found else []


def _accuracy(cell: Cell, loaded: LoadedModel, samples, answers: dict[int, Any]) -> dict[str, float] | None:
    """Scores with pretrained weights only: random weights' answers are meaningless."""
    if loaded.ref.weights != "pretrained":
        return None
    if cell.task not in tasks_of(get_dataset(cell.dataset)):
        return None
    from bench.accuracy.metrics import score

    return score(cell.task, samples, [answers.get(s.image_id) for s in samples])


def _benchmark(cell: Cell) -> dict[str, str] | None:
    """Which reported benchmark this cell measures (its key and the metric that matches it), if any."""
    from bench.accuracy.metrics import reported_benchmark

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
        if not path.is_file() or path.is_symlink():  # a link, a FIFO, a folder: refused by the door, never used
            inside(out, f"examples/{name}", "example image")  # a link in examples/ never leads a write outside
            make_dir(folder, "example image")
            png = io.BytesIO()
            sample.load_image().save(png, format="PNG")
            write_atomic(path, png.getvalue(), what="example image")
        examples.append({"image_id": sample.image_id, "image_file": f"examples/{name}", "width": sample.width,
                         "height": sample.height, "text": texts.get(sample.image_id, ""),
                         "answer": answers.get(sample.image_id)})
    return examples
