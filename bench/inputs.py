"""The validation layer for what comes from outside: sweep settings, axis lists, output paths and a
resumed run's recorded sweep. Every malformed input becomes one ``UsageError`` line naming the file,
the key, the bad value and what is accepted; nothing malformed gets far enough to raise a traceback.

Types are read from the dataclasses' annotations (``SweepConfig``, ``RepetitionPolicy``, ...), so a
setting added there is checked here without a second statement of its type. This module imports nothing
of the harness but its errors: callers hand it the schemas and axes, so every module may use it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.numbers import is_finite, is_number


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file's contents; a missing, unreadable or non-UTF-8 file is one UsageError line."""
    try:
        return Path(path).read_bytes().decode("utf-8")
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


# ------------------------------------------------------------------------------------- types


def conforms(value: Any, hint: Any, *, shallow: bool = False) -> bool:
    """Whether ``value`` (as TOML or JSON gives it) has the annotated type; unknown hints accept anything.

    ``shallow`` checks containers' own type only (a record's nested tables are read defensively).
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
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
    """Values of the right type but outside what the harness accepts."""
    for axis in axes:
        if isinstance(getattr(config, axis, None), list) and not getattr(config, axis):
            raise UsageError(f"the sweep's {axis} list is empty; accepted: at least one value")
    if config.max_new_tokens is not None and config.max_new_tokens < 1:
        raise UsageError(
            f"bad max_new_tokens {config.max_new_tokens}; accepted: integers >= 1 (or unset for the task's default)"
        )
    if config.examples < 0:
        raise UsageError(f"bad examples {config.examples}; accepted: integers >= 0")
    if config.energy_idle_s < 0:
        raise UsageError(f"bad energy_idle_s {config.energy_idle_s}; accepted: a number of seconds >= 0")


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
        raise UsageError(f"cannot write {what} {path}: a part of its folder is a file; accepted: a path in a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot write {what} {path}: {exc.strerror}; accepted: a path in a writable directory") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what} {path}: {path.parent} is not writable; accepted: a writable directory")
    return path


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
