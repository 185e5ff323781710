"""The typed tables of a record, and the one conversion both ways between a table and its JSON.

Every table is a frozen, slotted dataclass whose field names are the JSON keys. ``from_dict`` reads
untrusted JSON: a figure that is not a finite number, a label that is not text, a nested table that is
not an object becomes None (never an exception); keys a table does not declare are kept as they are
(``_other``) and the keys present are remembered (``_keys``) so that ``to_dict`` writes back exactly
what was read. A table built by a writer (no ``_keys``) writes every declared field, null where undefined.
"""

from __future__ import annotations

import functools
import math
import sys
import types
import typing
from array import array
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from bench.core.numbers import is_finite

Convert = Callable[[Any], Any]
_KEYSETS: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct key set (43k records share few)


@dataclass(frozen=True)
class Table:
    """Base of every record table: the conversion from and to JSON, driven by the fields' type hints.

    ``_keys`` and ``_other`` (how the table was read, not a figure: left out of ``repr``, keyword-only) are declared
    here once; each table's own ``slots=True`` gives them a slot (this base has none, so ``Record`` can also be a
    ``CellAxes``)."""

    __slots__ = ()
    _keys: tuple[str, ...] | None = field(default=None, repr=False, kw_only=True)
    _other: dict[str, Any] | None = field(default=None, repr=False, kw_only=True)

    @classmethod
    def from_dict(cls, value: Any) -> Any:
        """The table of a JSON object (None when ``value`` is not an object); bad values become None."""
        return read_table(cls, value) if isinstance(value, dict) else None

    def to_dict(self) -> dict[str, Any]:
        """The table as JSON: the keys read (or every declared field), unknown keys as they were read."""
        names = _names(type(self))
        other = self._other or {}
        keys = self._keys if self._keys is not None else names + tuple(other)
        known = _spec(type(self))
        return {k: (to_json(getattr(self, k)) if k in known else other[k]) for k in keys if k in known or k in other}


def read_table(cls: type, value: dict[str, Any]) -> Any:
    """``value`` as a ``cls``: declared keys converted, others kept in ``_other``, the key set in ``_keys``;
    a required field it lacks (a hand-made record) is None.

    The slots are filled straight from the class's plan (``_plan``): a frozen dataclass's ``__init__`` costs a
    generic ``object.__setattr__`` per field, and a 43k-cell report reads ~600k tables."""
    plan, names, known, put_keys, put_other = _plan(cls)
    table = object.__new__(cls)
    get = value.get
    for name, convert, put, default, factory in plan:
        item = get(name, _ABSENT)
        put(table, convert(item) if item is not _ABSENT else factory() if factory is not None else default)
    keys = tuple(value)
    put_keys(table, None if keys == names else _KEYSETS.setdefault(keys, keys))
    put_other(table, None if known.issuperset(keys) else {k: v for k, v in value.items() if k not in known})
    return table


def to_json(value: Any) -> Any:
    """A table's value as JSON: tables as objects, tuples and sample arrays as lists (NaN as null)."""
    if isinstance(value, Table):
        return value.to_dict()
    if isinstance(value, tuple):
        return [to_json(v) for v in value]
    if isinstance(value, array):
        return [None if math.isnan(v) else v for v in value.tolist()]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def private(name: str) -> bool:
    return name in ("_keys", "_other")


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if not private(f.name))


@functools.cache
def _required(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING)


_ABSENT = object()  # a key the JSON object does not have


@functools.cache
def _plan(cls: type) -> tuple[tuple[tuple[str, Convert, Callable[[Any, Any], None], Any, Any], ...],
                              tuple[str, ...], frozenset[str], Callable[[Any, Any], None], Callable[[Any, Any], None]]:
    """How ``read_table`` fills a ``cls``, worked out once: per declared field its name, converter, slot setter and
    the value it takes when absent (its default, a fresh one from its factory, or None where it has neither);
    then the declared names, as a tuple and a set, and the setters of ``_keys`` and ``_other``."""
    spec = _spec(cls)
    slot = {name: vars(klass)[name].__set__ for klass in reversed(cls.__mro__) for name in vars(klass).get(
        "__slots__", ())}

    def absent(f: Any) -> tuple[Any, Any]:
        if f.default_factory is not MISSING:
            return None, f.default_factory
        return (None if f.default is MISSING else f.default), None

    plan = tuple((f.name, spec[f.name], slot[f.name], *absent(f)) for f in fields(cls) if not private(f.name))
    return plan, _names(cls), frozenset(_names(cls)), slot["_keys"], slot["_other"]


@functools.cache
def _spec(cls: type) -> dict[str, Convert]:
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    return {name: converter(hints[name]) for name in _names(cls)}


# ------------------------------------------------------------------------------------ converters


_JSON_NUMBERS = frozenset((int, float))  # what json.loads makes: checked by one set lookup, no call


def number(v: Any) -> Any:
    """A finite int or float as read (not a bool), else None."""
    if type(v) in _JSON_NUMBERS:
        return v if math.isfinite(v) else None
    return v if is_finite(v) else None


def integer(v: Any) -> int | None:
    return v if type(v) is int or (isinstance(v, int) and not isinstance(v, bool)) else None


def text(v: Any) -> str | None:
    return sys.intern(v) if isinstance(v, str) else None  # labels repeat in every record: one copy each


def flag(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def raw(v: Any) -> Any:
    return v


def samples(v: Any) -> array:
    """Request latencies as doubles (8 bytes each, not a float object per sample); NaN where not a number."""
    if not isinstance(v, list):
        return array("d")
    if _JSON_NUMBERS.issuperset(map(type, v)):  # the usual list: copied in C, kept when its sum is finite
        whole = array("d", v)
        if math.isfinite(sum(whole)):  # a NaN or infinity makes the sum NaN or infinite
            return whole
    return array("d", (x if is_finite(x) else math.nan for x in v))


_SIMPLE: dict[Any, Convert] = {float: number, int: integer, str: text, bool: flag}


def converter(hint: Any) -> Convert:
    """How a value of the annotated type is read from JSON (None where it does not conform)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return raw
    if hint is array:
        return samples
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return converter(options[0])
        parts = [converter(a) for a in options]

        def first(v: Any) -> Any:  # the first reading that is not None
            for part in parts:
                read = part(v)
                if read is not None:
                    return read
            return None
        return first
    if isinstance(hint, type) and issubclass(hint, Table):
        return hint.from_dict
    if origin is tuple:
        item = converter(args[0])
        if isinstance(args[0], type) and issubclass(args[0], Table):
            return lambda v: tuple(t for t in map(item, v) if t is not None) if isinstance(v, list) else ()
        return lambda v: tuple(map(item, v)) if isinstance(v, list) else None
    if origin is dict:
        value = converter(args[1])
        return lambda v: {str(k): value(x) for k, x in v.items()} if isinstance(v, dict) else None
    return _SIMPLE[hint]


# ------------------------------------------------------------------------------------ the tables

@dataclass(frozen=True, slots=True)
class Stats(Table):
    """A distribution's statistics in ms (``latency_ms``, ``time_per_image_ms``; bench.core.measure.summarize)."""

    mean: float | None = None
    std: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    n: int | None = None
    ci95_low: float | None = None
    ci95_high: float | None = None
    cv: float | None = None
    unstable: bool | None = None
    ci_method: str | None = None


@dataclass(frozen=True, slots=True)
class Stages(Table):
    """Median ms per image of each stage a backend times (only those it declares are present)."""

    preprocess: float | None = None
    vision: float | None = None
    ttft: float | None = None
    per_token: float | None = None
    decode: float | None = None
    postprocess: float | None = None


@dataclass(frozen=True, slots=True)
class Throughput(Table):
    images_per_s: float | None = None
    tokens_per_s: float | None = None
    wall_s: float | None = None
    decode_tokens_per_s: float | None = None  # None: no decode phase to rate (max_new_tokens 1) or not timed


@dataclass(frozen=True, slots=True)
class Memory(Table):
    """Peaks in bytes (bench.core.trackers.MEMORY_KEYS); None where no tracker measured it."""

    peak_rss_bytes: int | None = None
    cuda_peak_allocated_bytes: int | None = None
    cuda_peak_reserved_bytes: int | None = None
    nvml_peak_used_bytes: int | None = None
    weights_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Energy(Table):
    joules_per_image: float | None = None
    joules_per_image_above_idle: float | None = None
    idle_power_w: float | None = None
    source: str | None = None  # the counter, or why there is no figure


@dataclass(frozen=True, slots=True)
class PerToken(Table):
    """Decode steps' latency (``per_token_ms``): each image of a batch waits one step per token."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    n: int | None = None
    basis: str | None = None


@dataclass(frozen=True, slots=True)
class EarlyStopping(Table):
    """MLPerf's early-stopping rule applied to a server run (``server.early_stopping``)."""

    percentile: float | None = None
    confidence: float | None = None
    queries: int | None = None
    overlatency: int | None = None
    queries_needed: int | None = None
    estimate_ms: float | None = None
    met: bool | None = None


@dataclass(frozen=True, slots=True)
class CurveStep(Table):
    """One load of a server cell's latency-vs-QPS curve (``server.curve``)."""

    target_qps: float | None = None
    achieved_qps: float | None = None
    scheduled_qps: float | None = None
    completed_qps: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    percentile_ms: float | None = None
    ci_lo_ms: float | None = None
    ci_hi_ms: float | None = None
    overlatency: int | None = None
    n_requests: int | None = None
    batch_size_mean: float | None = None
    service_ms: float | None = None
    service_batch_size: int | None = None
    repredicted_qps: float | None = None
    final: bool | None = None
    valid: bool | None = None
    invalid_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Server(Table):
    """A server cell's run at its load (or its capacity's representative run), with its curve."""

    target_qps: float | None = None
    achieved_qps: float | None = None
    scheduled_qps: float | None = None
    completed_qps: float | None = None
    n_requests: int | None = None
    duration_s: float | None = None
    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None
    batch_size_mean: float | None = None
    latency_bound_ms: float | None = None
    latency_percentile: float | None = None
    percentile_ms: float | None = None
    percentile_ci_ms: tuple[float | None, ...] | None = None
    early_stopping: EarlyStopping | None = None
    capacity_bracket: tuple[float | None, ...] | None = None
    valid: bool | None = None
    invalid_reason: str | None = None
    curve: tuple[CurveStep, ...] = ()


@dataclass(frozen=True, slots=True)
class LoadGenEarlyStopping(Table):
    met: bool | None = None
    overlatency: int | None = None
    estimate_ms: float | None = None
    result: str | None = None


@dataclass(frozen=True, slots=True)
class LoadGen(Table):
    """MLPerf LoadGen's verdict and figures (``load_generator = "mlperf"``; bench.scenarios.mlperf)."""

    result_validity: str | None = None
    scenario: str | None = None
    version: str | None = None
    min_duration_met: bool | None = None
    min_queries_met: bool | None = None
    perf_constraints_met: bool | None = None
    invalid_reason: str | None = None
    query_count: int | None = None
    sample_count: int | None = None
    samples_per_s: float | None = None
    scheduled_samples_per_s: float | None = None
    percentiles_ms: dict[str, float | None] | None = None  # "p50", "p90", ... as LoadGen reports them
    mean_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    early_stopping: LoadGenEarlyStopping | None = None
    logs: str | None = None  # relative to the run directory
    issue_delay_ms: dict[str, float | None] | None = None


@dataclass(frozen=True, slots=True)
class ServerRun(Table):
    """A server cell's run length (``timing.server_run``): it replaces the repetition policy."""

    min_duration_s: float | None = None
    final_min_duration_s: float | None = None
    max_duration_s: float | None = None
    min_requests: int | None = None
    max_requests: int | None = None
    confidence: float | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Timing(Table):
    """How the figures were obtained: the clock, the repetition policy, and each figure's basis."""

    clock: str | None = None
    warmup: int | None = None
    iterations: int | None = None
    min_iterations: int | None = None
    min_duration_s: float | None = None
    latency: str | None = None
    time_per_image: str | None = None
    stages_basis: str | None = None
    generation: str | None = None
    started_utc: str | None = None
    image_processor: str | None = None
    preprocess: str | None = None
    prefetch: str | None = None
    load_s: float | None = None
    first_call_ms: float | None = None
    cold: str | None = None
    load_generator: str | None = None
    server_run: ServerRun | None = None


@dataclass(frozen=True, slots=True)
class Settings(Table):
    """The cell's settings that are not top-level record fields (bench.results.cell.Cell)."""

    cache: str | None = None
    channels_last: bool | None = None
    quant: str | None = None
    weights_requested: str | None = None
    compile_vision: bool | str | None = None
    preprocess: str | None = None
    prefetch: bool | None = None
    threads: int | str | None = None  # the threads used; None: the default
    load_generator: str | None = None


@dataclass(frozen=True, slots=True)
class Flag(Table):
    """What makes a figure of the record suspect (bench.results.plausibility)."""

    code: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Example(Table):
    """One image shown in the report with the model's output."""

    image_id: int | None = None
    image_file: str | None = None
    width: float | None = None
    height: float | None = None
    text: str | None = None
    answer: Any = None  # the task's parsed answer, as the task wrote it


@dataclass(frozen=True, slots=True)
class Roofline(Table):
    """Vision FLOP/s against a matrix-product reference (``extra.roofline``; bench.run.optimize.roofline_for)."""

    vision_gflop_per_image: float | None = None
    vision_ms_per_image: float | None = None
    vision_gflops_per_s: float | None = None
    matmul_gflops_per_s: float | None = None
    fraction: float | None = None
    bad_reference: bool | None = None
    matmul_gflops_before: float | None = None
    matmul_gflops_after: float | None = None
    matmul_reference: str | None = None
    matmul_dtype: str | None = None
    matmul_n: int | None = None
    flop_convention: str | None = None


@dataclass(frozen=True, slots=True)
class ReportedBenchmark(Table):
    """Which paper benchmark a cell measures: its key in ``extra.reported`` and the matching metric."""

    key: str | None = None
    metric: str | None = None


@dataclass(frozen=True, slots=True)
class RayHost(Table):
    """Where a cell ran under the Ray executor (``extra.ray``)."""

    host: str | None = None
    num_threads: int | None = None


@dataclass(frozen=True, slots=True)
class Extra(Table):
    """Labelled extras; keys not declared here (``capacity_search``, ``traceback``, ...) are kept as read."""

    reported: dict[str, float | None] | None = None  # paper/model-card numbers, always labelled "reported"
    reported_source: str | None = None
    reported_benchmark: ReportedBenchmark | None = None
    texts: dict[str, str | None] | None = None  # image id -> generated text
    roofline: Roofline | None = None
    ray: RayHost | None = None
    converted_from_schema: int | None = None  # bench.results.schema.CONVERTED
    resolution_note: str | None = None
    model_settings: Any = None
    backend_info: Any = None
    capacity_search: Any = None
    traceback: str | None = None
    pytest_benchmark: Any = None  # a pytest-benchmark round in a history: its name, fullname, group, params
