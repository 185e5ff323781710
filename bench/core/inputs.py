"""The validation layer for what comes from outside: sweep settings, axis lists, output paths and a
resumed run's recorded sweep. Every malformed input becomes one ``UsageError`` line naming the file,
the key, the bad value and what is accepted; nothing malformed gets far enough to raise a traceback.

Types are read from the dataclasses' annotations (``SweepConfig``, ``RepetitionPolicy``, ...), so a
setting added there is checked here without a second statement of its type. This module imports nothing
of the harness but its errors: callers hand it the schemas and axes, so every module may use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import types
import typing
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.core.numbers import is_finite, is_number
from bench.core.paths import check_size

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file's contents; a missing, unreadable or non-UTF-8 file is one UsageError line, and so is a
    file over the door's bound for an input (refused before it is read). A pipe is read (``--sweep <(...)``)."""
    try:
        with Path(path).open("rb") as fh:
            check_size(path, "input", os.fstat(fh.fileno()))
            return fh.read().decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory; accepted: a file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{what} {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "accepted: a UTF-8 text file"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


# ------------------------------------------------------------------------------------ bounds


@dataclass(frozen=True)
class Bound:
    """The accepted range of a number: ``low`` <= value <= ``high`` (``low_open``: value > ``low``)."""

    low: float
    high: float
    integer: bool = True
    low_open: bool = False

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not is_number(value) or (self.integer and not isinstance(value, int)):
            return False
        if not is_finite(value):
            return False
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low = f"> {_plain(self.low)}" if self.low_open else f">= {_plain(self.low)}"
        return f"{kind} {low} and <= {_plain(self.high)}"


def _plain(number: float) -> str:
    """A bound as people write it: 4,294,967,295 rather than 4.29497e+09."""
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


# Every number a user gives (a flag, a sweep file's value), with its accepted range; README "Bounds"
# lists them. A value outside is one line, exit 2, before any work: a batch of 2**63 images is never built.
BOUNDS: dict[str, Bound] = {
    "batch_sizes": Bound(1, 4096),
    "num_beams": Bound(1, 64),
    "max_new_tokens": Bound(1, 8192),
    "limit": Bound(1, 10_000_000),
    "examples": Bound(0, 1000),
    "energy_idle_s": Bound(0, 3600, integer=False),
    "threads": Bound(1, 1024),
    "seed": Bound(0, 2**32 - 1),
    "baseline_runs": Bound(3, 10_000),  # fewer runs give no spread to judge a change against
    "qps": Bound(0, 1_000_000, integer=False, low_open=True),
    "demand_qps": Bound(0, 1_000_000, integer=False, low_open=True),
    "max_queue_delay_ms": Bound(0, 60_000, integer=False),
    "latency_bound_ms": Bound(0, 3_600_000, integer=False, low_open=True),
    "latency_percentile": Bound(0, 0.999999, integer=False, low_open=True),
    "confidence": Bound(0, 0.999999, integer=False, low_open=True),
    "accuracy_floor": Bound(0, 1_000_000, integer=False),
    "max_utilisation": Bound(0, 1, integer=False, low_open=True),
    "quality_gate": Bound(0, 1, integer=False, low_open=True),
    "min_duration_s": Bound(0, 86_400, integer=False),
    "max_duration_s": Bound(0, 86_400, integer=False),
    "final_min_duration_s": Bound(0, 86_400, integer=False),
    "min_requests": Bound(1, 10_000_000),
    "max_requests": Bound(1, 10_000_000),
    "prep_workers": Bound(1, 1024),
    "warmup": Bound(0, 100_000),
    "min_iterations": Bound(1, 1_000_000),
    "max_iterations": Bound(1, 1_000_000),
    "cv_threshold": Bound(0, 100, integer=False, low_open=True),
}
# the most cells one sweep may make (the product of its axis lengths, computed before any is expanded)
MAX_CELLS = 100_000
# the deepest nesting of lists and tables a JSON or TOML file may have (the harness's own files use < 10)
MAX_NESTING = 64


def check_bound(name: str, value: Any, where: str = "") -> None:
    """Refuse ``value`` outside ``BOUNDS[name]``; ``where`` names its source (a flag, a file)."""
    bound = BOUNDS[name]
    if not bound.accepts(value):
        raise UsageError(f"{where or 'bad ' + name} {_show(value)}; accepted: {bound.describe()}")


def bounded(name: str) -> Callable[[str], int | float]:
    """An argparse ``type`` for a numeric flag: the number, or argparse's one-line error naming the range."""
    bound = BOUNDS[name]

    def parse(text: str) -> int | float:
        try:
            value: int | float = int(text) if bound.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {'int' if bound.integer else 'float'} value: {text!r}; accepted: "
                                             f"{bound.describe()}") from None
        if not bound.accepts(value):
            raise argparse.ArgumentTypeError(f"bad {name} {text}; accepted: {bound.describe()}")
        return value

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def check_cell_count(lengths: dict[str, int]) -> None:
    """Refuse a sweep whose axes multiply to more than ``MAX_CELLS`` cells, before any is made."""
    total = math.prod(lengths.values())
    if total > MAX_CELLS:
        largest = sorted(lengths.items(), key=lambda kv: -kv[1])[:3]
        shown = " x ".join(f"{n} {axis}" for axis, n in largest)
        raise UsageError(f"the sweep would make up to {total:,} cells ({shown}, ...); accepted: at most "
                         f"{MAX_CELLS:,} cells (split it into several sweeps)")


# --------------------------------------------------------------------------------- nesting


class NestingError(ValueError):
    """A JSON or TOML document nested deeper than ``MAX_NESTING`` (a ValueError, as a parse error is)."""


_FLAT = frozenset((int, float, str, bool, type(None)))  # JSON's scalars


def _depth_ok(value: Any) -> bool:
    """Level by level, containers only: a history of 100,000 records holds millions of numbers."""
    level, depth = ([value] if isinstance(value, (dict, list)) else []), 1
    while level:
        if depth > MAX_NESTING:
            return False
        below = []
        for item in level:
            values = item.values() if isinstance(item, dict) else item
            if _FLAT.issuperset(map(type, values)):  # no container in it: no call per value
                continue
            below.extend(v for v in values if isinstance(v, (dict, list)))
        level, depth = below, depth + 1
    return True


def _nesting_checked(parse: Callable[[str], Any], text: str) -> Any:
    too_deep = NestingError(f"nested deeper than {MAX_NESTING} levels; accepted: at most {MAX_NESTING}")
    try:
        value = parse(text)
    except RecursionError:
        raise too_deep from None
    if not _depth_ok(value):
        raise too_deep
    return value


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` for files from outside: nesting deeper than ``MAX_NESTING`` is a ``NestingError``."""
    return _nesting_checked(json.loads, text)


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads`` for files from outside: nesting deeper than ``MAX_NESTING`` is a ``NestingError``."""
    return _nesting_checked(tomllib.loads, text)


# ------------------------------------------------------------------------------------- types


def _parts(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """A hint's origin and arguments, looked up once per hint (a history checks a million values)."""
    try:
        return _PARTS[hint]
    except KeyError:
        _PARTS[hint] = found = (typing.get_origin(hint), typing.get_args(hint))
        return found
    except TypeError:  # an unhashable hint
        return typing.get_origin(hint), typing.get_args(hint)


_PARTS: dict[Any, tuple[Any, tuple[Any, ...]]] = {}


def conforms(value: Any, hint: Any, *, shallow: bool = False) -> bool:
    """Whether ``value`` (as TOML or JSON gives it) has the annotated type; unknown hints accept anything.

    ``shallow`` checks containers' own type only (a record's nested tables are read defensively).
    """
    origin, args = _parts(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a, shallow=shallow) for a in args)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        return shallow or not args or all(conforms(v, args[0]) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            return False
        return shallow or all(isinstance(k, str) and conforms(v, args[1]) for k, v in value.items())
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return is_number(value) and (shallow or is_finite(value))
    if hint is str:
        return isinstance(value, str)
    return True


def _describe(hint: Any) -> str:
    """What a user should write for a type, in TOML words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin in (list, tuple):
        inner = {str: "strings", int: "integers", bool: "booleans", float: "numbers"}.get(args[0], "values")
        example = {str: '["a", "b"]', int: "[1, 8]", bool: "[false, true]", float: "[0.5]"}.get(args[0], "[...]")
        return f"a list of {inner}, e.g. {example}"
    if origin is dict:
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(hint, str(hint))


def check_fields(values: dict[str, Any], schema: type, where: str) -> None:
    """Refuse a value whose type is not the dataclass field's (``batch_sizes = 1``, ``limit = "2"``)."""
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        if key in hints and not conforms(value, hints[key]):
            raise UsageError(f"{where}: bad {key} = {_show(value)}; accepted: {_describe(hints[key])}")


def check_sweep(values: dict[str, Any], schema: type, sections: dict[str, type], where: str) -> None:
    """Types of a sweep's settings (``schema``) and of its tables (``sections``: table name -> schema)."""
    check_fields(values, schema, where)
    for name, section in sections.items():
        if isinstance(values.get(name), dict):
            check_fields(values[name], section, f"{where}: [{name}]")


def check_ranges(config: Any, axes: Iterable[str]) -> None:
    """Values of the right type but outside what the harness accepts (``BOUNDS``), and a matrix too large
    (``MAX_CELLS``): checked on the settings as given, before anything is expanded or run."""
    lengths = {}
    for axis in axes:
        values = getattr(config, axis, None)
        if isinstance(values, list) and not values:
            raise UsageError(f"the sweep's {axis} list is empty; accepted: at least one value")
        lengths[axis] = len(values) if isinstance(values, list) else 1
    check_cell_count(lengths)
    for axis in axes:
        if axis in BOUNDS and axis != "threads":  # threads may be "auto": host.parse_threads checks them
            for value in getattr(config, axis):
                check_bound(axis, value, f"bad {axis} value")
    for name in ("limit", "max_new_tokens", "examples", "energy_idle_s"):
        if getattr(config, name) is not None:  # limit, max_new_tokens: None is "all", "the task's default"
            check_bound(name, getattr(config, name))
    for table in ("repetition", "server"):
        for key, value in getattr(config, table).items():
            if key in BOUNDS and is_number(value):  # a string (qps "auto") or a wrong type: the table's own check
                check_bound(key, value, f"bad [{table}] {key}")


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -------------------------------------------------------------------------------- axis lists


def dedupe_axes(config: Any, axes: Iterable[str], canonical: dict[str, Callable[[Any], Any]]) -> Any:
    """The config with repeated axis values dropped (first kept), each with a warning.

    Two equal values (``caption`` and ``<CAPTION>`` name one task: ``canonical`` maps an axis's values to
    their one spelling) would make two cells with one cell id.
    """
    changes = {}
    for axis in axes:
        values = getattr(config, axis, None)
        if not isinstance(values, list):
            continue
        key = canonical.get(axis, lambda v: v)
        kept, seen = [], set()
        for value in values:
            k = key(value)
            if k in seen:
                warnings.warn(
                    f"repeated {axis} value {value!r} ignored (it names a cell already in the sweep)", stacklevel=2
                )
                continue
            seen.add(k)
            kept.append(k if axis in canonical else value)
        if kept != values:
            changes[axis] = kept
    return dataclasses.replace(config, **changes) if changes else config


# ------------------------------------------------------------------------------- output paths


def output_file(path: str | os.PathLike, what: str) -> Path:
    """A file path the command may write: its folder is created, or one line says why it cannot be."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory; accepted: a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"cannot write {what} {path}: {_blocking_part(path.parent)}; accepted: a path in a "
                         "directory") from None
    except OSError as exc:
        raise UsageError(f"cannot write {what} {path}: {exc.strerror}; accepted: a path in a writable directory") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what} {path}: {path.parent} is not writable; accepted: a writable directory")
    return path


def _blocking_part(folder: Path) -> str:
    """Why ``folder`` cannot be made: the first part of it that is a dangling link, or a file."""
    for part in reversed((folder, *folder.parents)):
        if part.is_symlink() and not part.exists():
            return f"{part} is a dangling link (to {os.readlink(part)})"
        if part.exists() and not part.is_dir():
            return f"a part of its folder is a file ({part})"
    return "a part of its folder is a file"


# --------------------------------------------------------------------------------- resuming

# labels, and a permission to read images from anywhere: they do not change what a cell measures
_NOT_DEFINITION = ("name", "description", "allow_outside_images")


def sweep_definition(sweep: dict[str, Any]) -> dict[str, Any]:
    """The settings that define a sweep's cells and how they are measured, JSON-normalised."""
    return json.loads(json.dumps({k: v for k, v in sweep.items() if k not in _NOT_DEFINITION}, default=str))


def check_resume(out: Path, recorded: Any, current: dict[str, Any], extend: bool) -> None:
    """Refuse to resume a run directory with another sweep than the one recorded, unless extending."""
    if not isinstance(recorded, dict) or extend:
        return
    old, new = sweep_definition(recorded), sweep_definition(current)
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if not changed:
        return
    shown = "; ".join(f"{k} {_show(old.get(k))} -> {_show(new.get(k))}" for k in changed[:3])
    more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
    raise UsageError(
        f"--resume of {out} with a different sweep: {shown}{more}; accepted: the sweep recorded in "
        f"{out / 'env.json'}, or --extend to add the new cells to this run directory"
    )
