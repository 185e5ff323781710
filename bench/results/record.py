"""The record: one cell's result, typed, and the only door from its JSON (``Record.from_dict``).

``Record.from_dict`` takes a parsed results.jsonl line: not a record (no ``cell_id``/``status`` text) or
not well formed (a contract field of the wrong type, a table holding containers) is None, as the store
has always skipped such lines; a record of schema 1 is read in today's meaning (bench.results.schema.upgrade;
another version is one ``UsageError``); a figure that is not a finite number becomes None. ``to_dict``
writes exactly the schema-2 JSON that was read, or, for a record a writer built, every field.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from array import array
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.numbers import is_number
from bench.results import tables as t
from bench.results.schema import CONVERTED, SCHEMA_VERSION, upgrade
from bench.results.tables import Table, _names, read_table

# Tables that report and compare read: their values are scalars (a number, or None where not
# measurable; a few labels and flags), never nested containers. EXTRA_TABLES are such tables in ``extra``.
# NESTED_TABLES may also hold tables of scalars (``timing.server_run``), lists of them (``server.curve``) and,
# under the keys in SCALAR_LISTS only, lists of numbers (``server.capacity_bracket``: [low, high]).
SCALAR_TABLES = ("latency_ms", "time_per_image_ms", "stages_ms", "throughput", "memory", "energy", "accuracy",
                 "settings", "per_token_ms")
EXTRA_TABLES = ("reported", "reported_benchmark", "roofline", "texts", "ray")
NESTED_TABLES = ("timing", "server")
SCALAR_LISTS = ("capacity_bracket", "percentile_ci_ms")
_SCALARS = (int, float, str, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)  # JSON's own types: a set of them is checked without a call per value
_NUMBER_TYPES = frozenset((int, float))


@dataclass(frozen=True, slots=True)
class CellAxes:
    """The axes of a cell that its record states at top level: declared once, for ``bench.results.cell.Cell`` (which
    adds the rest) and for ``Record``."""

    variant: str
    task: str
    dataset: str
    n_images: int
    device: str
    dtype: str
    batch_size: int
    attn: str
    compile: bool | str  # False, True or "graphs" (bench.backends.transformers.settings.COMPILE_MODES)
    num_beams: int


@dataclass(frozen=True, slots=True)
class Record(CellAxes, Table):
    """One cell's result: the fields of shared/CONTRACT.md, plus a few labelled extras (README)."""

    cell_id: str
    checkpoint: str
    weights: str
    max_new_tokens: int
    status: str = "ok"
    error: str | None = None
    params: int | None = None
    latency_ms: t.Stats | None = None  # request latency: what one request waits
    time_per_image_ms: t.Stats | None = None  # amortised: batch wall time / batch size
    stages_ms: t.Stages | None = None
    throughput: t.Throughput | None = None
    memory: t.Memory | None = None
    energy: t.Energy | None = None
    accuracy: dict[str, float | None] | None = None  # the task's scores by name
    samples_ms: array = field(default_factory=lambda: array("d"))  # request latencies; NaN where not a number
    gen_tokens_mean: float | None = None
    scenario: str = "single-stream"
    backend: str = "transformers"  # the runtime that ran the model (bench.backends); older records: transformers
    server: t.Server | None = None  # server cells only
    capacity_qps: float | None = None  # server cells with qps "auto"
    loadgen: t.LoadGen | None = None  # load_generator "mlperf": LoadGen's verdict, percentiles, logs
    settings: t.Settings = field(default_factory=lambda: t.Settings.from_dict({}))
    timing: t.Timing = field(default_factory=lambda: t.Timing.from_dict({}))
    unstable: bool | None = None
    flags: tuple[t.Flag, ...] = ()  # what makes a figure of this record suspect (e.g. roofline-bad-reference)
    per_token_ms: t.PerToken | None = None  # decode steps' latency; at batch N a step makes a token per image
    examples: tuple[t.Example, ...] = ()
    extra: t.Extra = field(default_factory=lambda: t.Extra.from_dict({}))
    schema: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, value: Any, where: str | Path = "a record") -> Record | None:  # type: ignore[override]
        """The record of one parsed results.jsonl line, or None when it is not a well-formed record."""
        return cls.from_checked(value, where) if is_record(value) else None

    @classmethod
    def from_checked(cls, value: dict[str, Any], where: str | Path = "a record",
                     only: Collection[str] | None = None) -> Record:
        """``from_dict`` of a value ``is_record`` has already accepted (``bench.store.parse_line``): the store
        checks each line once, not twice. ``only``: type these fields alone (after the schema upgrade; a converted
        record keeps ``extra.converted_from_schema``, which says what its figures mean); the others take their
        defaults, so such a record is for the reader that named them, never written back."""
        value = upgrade(value, where)
        if only is None:
            return read_table(cls, value)
        kept = {k: v for k, v in value.items() if k in only}
        if "extra" not in only and isinstance(extra := value.get("extra"), dict) and CONVERTED in extra:
            kept["extra"] = {CONVERTED: extra[CONVERTED]}
        return read_table(cls, kept)

    def to_json(self) -> str:
        """The record's results.jsonl line (without its newline)."""
        return json.dumps(self.to_dict(), sort_keys=True, default=jsonable)


def jsonable(obj: Any) -> Any:
    """What ``json.dumps`` cannot write itself: numpy values as numbers and lists, paths as text."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ------------------------------------------------------------------------------------ well-formedness


def is_record(value: Any) -> bool:
    """Whether parsed JSON is a record the store reads: a ``cell_id`` and ``status`` as text, and well formed."""
    return (isinstance(value, dict) and isinstance(value.get("cell_id"), str)
            and isinstance(value.get("status"), str) and well_formed(value))


def _scalar_table(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and (
        _SCALAR_TYPES.issuperset(map(type, value.values())) or all(isinstance(v, _SCALARS) for v in value.values())))


def _nested_table(value: Any) -> bool:
    def plain(key: str, v: Any) -> bool:
        return isinstance(v, _SCALARS) or (isinstance(v, dict) and _scalar_table(v)) or (
            isinstance(v, list) and all(isinstance(item, dict) and _scalar_table(item) for item in v)) or (
            key in SCALAR_LISTS and isinstance(v, list)
            and all(item is None or is_number(item) for item in v))

    return value is None or (isinstance(value, dict) and all(
        type(v) in _SCALAR_TYPES or plain(k, v) for k, v in value.items()))


def well_formed(record: dict[str, Any]) -> bool:
    """Records are untrusted input: each contract field present must have its declared JSON type."""
    checks = _json_checks()
    for k, v in record.items():
        check = checks.get(k)
        if check is not None and type(v) not in check[0] and not check[1](v):
            return False
    extra = record.get("extra") or {}
    if not (all(_scalar_table(record.get(k)) for k in SCALAR_TABLES)
            and all(_nested_table(record.get(k)) for k in NESTED_TABLES)
            and all(_scalar_table(extra.get(k)) for k in EXTRA_TABLES)):
        return False
    samples = record.get("samples_ms") or []
    examples = record.get("examples") or []
    flags = record.get("flags") or []
    return (_NUMBER_TYPES.issuperset(map(type, samples)) or all(is_number(v) for v in samples)) and all(
        isinstance(e, dict) for e in examples
    ) and all(_scalar_table(f) and f is not None for f in flags)


@functools.cache
def _json_checks() -> dict[str, tuple[frozenset[type], Any]]:
    """``conforms(value, json_hints()[name], shallow=True)`` as one isinstance per field: a record is checked on
    every read (100k records in a compare). Each field's exact JSON types come first (a set lookup, no call)."""
    def check(hint: Any) -> tuple[frozenset[type], Any]:
        if hint is Any:
            return frozenset(), lambda v: True
        parts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        kinds = tuple(typing.get_origin(a) or a for a in parts)
        kinds = tuple(type(None) if k is None else k for k in kinds)
        kinds += (int,) if float in kinds else ()  # a JSON number
        if bool in kinds:
            return frozenset(kinds), lambda v: isinstance(v, kinds)
        return frozenset(kinds) - {bool}, lambda v: isinstance(v, kinds) and not isinstance(v, bool)

    return {name: check(hint) for name, hint in json_hints().items()}


@functools.cache
def json_hints() -> dict[str, Any]:
    """Each record field's type as JSON has it: a table is an object, a tuple or sample array a list."""
    def as_json(hint: Any) -> Any:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if isinstance(hint, type) and issubclass(hint, Table):
            return dict[str, Any]
        if hint is array or origin is tuple:
            return list[Any]
        if origin in (typing.Union, types.UnionType):
            return typing.Union[tuple(as_json(a) for a in args)]  # noqa: UP007 (built from a tuple)
        return hint

    hints = typing.get_type_hints(Record)
    return {name: as_json(hints[name]) for name in _names(Record)}
