"""The seam every backend (runtime) implements, and the types backends and scenarios share.

A backend is what turns a checkpoint into something that runs a batch: PyTorch/transformers (the
default), another runtime for some of the model's parts, or a runtime with its own engine. The harness
around it (scenarios, trackers, records) is the same for all of them, so their figures are comparable
cell by cell. Nothing here knows transformers: the backends that start from a transformers model share
``bench.backends.transformers.backend.CheckpointBackend``.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bench.accuracy.data import Sample
    from bench.accuracy.tasks import Task
    from bench.core.measure import Clock
    from bench.core.variants import Variant

# Every stage a backend may time, in the order a batch runs them (``bench.backends.transformers.pipeline``
# says what each one covers). A backend times those of ``Backend.stages``; a record holds only those.
STAGES = ("preprocess", "vision", "ttft", "per_token", "decode", "postprocess")


@dataclass(frozen=True)
class LoadOptions:
    """How the user allows a checkpoint to be loaded (both unsafe options are off by default)."""

    weights: str = "auto"
    model_path: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False


@dataclass(frozen=True)
class CheckpointRef:
    """A resolved source: a local directory with weights, or None for random weights."""

    weights: str  # "pretrained" | "random"
    checkpoint: str  # what the record shows: a path, a hub id, or "random:<variant>"
    directory: Path | None
    config_directory: Path | None = None  # random weights with a user-given architecture
    note: str = ""


@dataclass
class LoadedModel:
    """A model ready to run, as a backend loaded it (``model`` and ``processor`` are the backend's own)."""

    model: Any
    processor: Any
    ref: CheckpointRef
    params: int
    weights_bytes: int
    notes: list[str] = field(default_factory=list)
    load_s: float | None = None  # resolve + load + model settings, timed by the runner (bench.run.runner.load_group)
    backend_info: dict[str, Any] = field(default_factory=dict)  # what the backend adds to the record


@dataclass(frozen=True)
class GenerationSettings:
    """How generation is asked for; random weights force an exact token count per task."""

    num_beams: int = 3
    max_new_tokens: int = 1024
    forced: bool = False  # True in random mode: exactly max_new_tokens new tokens (EOS suppressed)
    cache: str = "dynamic"  # "dynamic" | "static"

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"num_beams": self.num_beams, "do_sample": False, "max_new_tokens": self.max_new_tokens}
        if self.forced:
            kw["min_new_tokens"] = self.max_new_tokens
        if self.cache == "static":
            kw["cache_implementation"] = "static"
        return kw


def generation_settings(task: Task, weights: str, num_beams: int, max_new_tokens: int | None = None,
                        cache: str = "dynamic") -> GenerationSettings:
    """Random weights: the task's typical output length, forced. Pretrained: the model card's 1024 cap."""
    if weights == "random":
        return GenerationSettings(num_beams, max_new_tokens or task.random_tokens, forced=True, cache=cache)
    return GenerationSettings(num_beams, max_new_tokens or 1024, forced=False, cache=cache)


@dataclass
class BatchResult:
    """Per-image stage times (ms, amortised over the batch; the backend's ``stages``) and the outputs of one batch."""

    stages_ms: dict[str, float]
    end_to_end_ms: float
    batch_ms: float
    new_tokens: list[int]
    texts: list[str]
    answers: list[Any]
    samples: list[Sample] = field(default_factory=list)
    started_s: float = 0.0  # host perf_counter when the batch's preparation began
    finished_s: float = 0.0  # host perf_counter when its results were ready (after the sync)
    overlapped: bool = False  # prepared ahead by a Prefetcher while the previous batch ran
    step_ms: list[float] = field(default_factory=list)  # each decoding step after the first token (whole batch)


@dataclass
class Prepared:
    """A batch ready for ``Pipeline.execute``: its inputs and how long preparing them took."""

    samples: list[Sample]
    inputs: Any
    prepare_ms: float  # host wall time of decode + tokenise + pixels + copy, device work included
    started_s: float


class Pipeline(Protocol):
    """What a scenario drives: batches of one task through a loaded model, each stage timed.

    ``prepare``/``execute`` split a batch so that a ``Prefetcher`` prepares the next one on another thread;
    ``collate`` makes one batch of requests prepared one at a time (the server scenario).
    """

    first_call_ms: float | None  # the first batch this pipeline ran: cold, before any warm-up

    def run_batch(self, samples: list[Sample]) -> BatchResult: ...

    def prepare(self, samples: list[Sample]) -> Prepared: ...

    def execute(self, prepared: Prepared) -> BatchResult: ...

    def collate(self, parts: list[Prepared]) -> Prepared: ...


class Backend:
    """One runtime. Subclasses set ``name``, ``axes``, ``stages`` and ``install_hint`` and implement
    ``resolve``, ``load`` and ``pipeline``.

    ``axes`` maps a cell field (``dtype``, ``quant``, ...) to the values this backend runs; a sweep
    accepts a value when one of its backends does, and makes a cell only where the cell's backend does.
    ``device_axes`` narrows them on one kind of device (``cpu``, ``cuda``, ``mps``): a value the backend
    runs elsewhere but not there gives a ``skipped`` record that says so.
    """

    name: str = ""
    axes: Mapping[str, tuple] = {}
    device_axes: Mapping[str, Mapping[str, tuple]] = {}
    stages: tuple[str, ...] = STAGES  # the stages its pipeline times (a subset of STAGES, in that order)
    install_hint: str | None = None  # how to install what it needs, for the skipped record
    # its settings' dataclass: a sweep's [backend.NAME] table and the run flags --NAME-FIELD set them
    settings_type: type | None = None
    settings: Any = None  # an instance of settings_type (None: the backend has none)

    def configure(self, table: Mapping[str, Any]) -> Backend:
        """This backend with the settings of a ``[backend.NAME]`` table (itself when the table is empty);
        a bad setting is a UsageError of one line."""
        if not table:
            return self
        where = f"[backend.{self.name}]"
        if self.settings_type is None:
            from bench.core.errors import UsageError

            raise UsageError(f"backend {self.name} has no settings ({where} {', '.join(sorted(table))}); "
                             "accepted: no table")
        configured = copy.copy(self)
        configured.settings = parse_settings(self.settings_type, table, where)
        return configured

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run at all here (its package is missing), or None."""
        return None

    def accepts(self, axis: str, value: object, device_kind: str | None = None) -> bool:
        """Whether ``value`` of a cell axis is one this backend runs (on ``device_kind`` when given;
        booleans are not 1 or 0)."""
        accepted = self.accepted(axis, device_kind)
        return accepted is None or any(value == a and type(value) is type(a) for a in accepted)

    def accepted(self, axis: str, device_kind: str | None = None) -> tuple | None:
        """The values of ``axis`` this backend runs (on ``device_kind`` when given); None: any."""
        if device_kind is not None and axis in self.device_axes.get(device_kind, {}):
            return self.device_axes[device_kind][axis]
        return self.axes.get(axis)

    def unsupported_reason(self, cell: Any) -> str | None:
        """Why this backend cannot run ``cell`` on this machine (a ``skipped`` record), or None."""
        from bench.core.measure import device_kind

        if reason := self.unavailable_reason():
            return reason
        kind = device_kind(cell.device)
        for axis in self.axes:
            value = getattr(cell, axis, None)
            if value is not None and not self.accepts(axis, value):
                return f"backend {self.name} does not run {axis} {value!r}; accepted: {_listed(self.axes[axis])}"
            if value is not None and not self.accepts(axis, value, kind):
                return (f"backend {self.name} does not run {axis} {value!r} on {kind}; accepted there: "
                        f"{_listed(self.accepted(axis, kind))}")
        return None

    def load_key(self, cell: Any) -> tuple:
        """What a loaded model depends on beyond ``Cell.group`` (cells whose keys differ load apart): a
        runtime that fixes its threads or streams when it compiles names them here."""
        return ()

    def resolve(self, variant: Variant, options: LoadOptions) -> CheckpointRef:
        """Where the cell's weights come from (never silently: a fallback to random weights warns)."""
        raise NotImplementedError

    def load(self, variant: Variant, ref: CheckpointRef, cell: Any, options: LoadOptions) -> LoadedModel:
        """The model ready to run ``cell``'s settings; whatever is converted or compiled counts as loading."""
        raise NotImplementedError

    def pipeline(self, loaded: LoadedModel, task: Task, generation: GenerationSettings, *, device: str,
                 dtype: str, clock: Clock, preprocess: str = "host", prefetch: bool = False) -> Pipeline:
        """What a scenario drives over ``loaded``."""
        raise NotImplementedError

    def vision_flops(self, loaded: LoadedModel) -> float | None:
        """FLOPs of one image through the vision encoder (the roofline's numerator); None: not counted."""
        return None

    def processor_name(self, loaded: LoadedModel) -> str | None:
        """The image processor's name, for the record's timing; None where the runtime has none."""
        return None

    def record_extra(self, loaded: LoadedModel) -> dict[str, Any]:
        """What this backend adds to a record's ``extra["backend_info"]`` (versions, conversions, settings)."""
        return {}


SETTING_MAX = 1024  # the largest count (threads, streams) a backend setting accepts


def parse_settings(kind: type, table: Mapping[str, Any], where: str) -> Any:
    """A backend's settings dataclass from a table (TOML values, or the command line's strings): every key
    a field, every value of the field's kind (a count: an integer from 1 to ``SETTING_MAX``; a path)."""
    from bench.core.errors import UsageError

    hints = typing.get_type_hints(kind)
    names = [f.name for f in dataclasses.fields(kind)]
    if unknown := sorted(set(table) - set(names)):
        raise UsageError(f"unknown {where} setting(s) {unknown}; accepted: {', '.join(names)}")
    return kind(**{key: _setting(f"{where} {key}", value, hints[key]) for key, value in table.items()})


def _setting(what: str, value: Any, hint: Any) -> Any:
    from bench.core.errors import UsageError

    kinds = typing.get_args(hint) or (hint,)
    if int in kinds:
        number = int(value) if isinstance(value, str) and value.strip().isdigit() else value
        if isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= SETTING_MAX:
            return number
        raise UsageError(f"bad {what} {value!r}; accepted: an integer from 1 to {SETTING_MAX}")
    if Path in kinds:
        if isinstance(value, str) and value.strip():
            return Path(value).expanduser()
        raise UsageError(f"bad {what} {value!r}; accepted: a folder path")
    raise TypeError(f"{what}: no parser for a setting of type {hint}")  # a settings field this seam cannot read


def _listed(values: tuple | None) -> str:
    return ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in values or ())
