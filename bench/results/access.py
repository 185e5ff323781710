"""Reading figures out of records without string keys: attribute paths, one value or a column of many.

A path is the dotted attribute chain from a ``Record`` (``"latency_ms.p50"``, ``"throughput.images_per_s"``,
``"server.early_stopping.met"``, ``"extra.roofline.fraction"``); a missing table on the way gives None.
``dig`` is the same walk for plain JSON objects that are not records (env.json, a sweep's stored settings).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bench.core.numbers import finite_number
from bench.results.record import Record


@functools.cache
def _steps(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def value(obj: Any, path: str) -> Any:
    """The attribute at ``path`` below ``obj`` (a record or one of its tables); None where a step is None."""
    for name in _steps(path):
        if obj is None:
            return None
        obj = getattr(obj, name)
    return obj


def figure(record: Record, path: str) -> float | None:
    """The finite number at ``path`` as a float, or None (absent, null, a label, NaN)."""
    found = value(record, path)
    return None if isinstance(found, bool) else finite_number(found)


def columns(records: Sequence[Record], paths: Iterable[str]) -> dict[str, np.ndarray]:
    """One float64 array per path, a row per record, NaN where the figure is None: for readers of many records."""
    out = {}
    for path in paths:
        column = np.fromiter((_float(value(r, path)) for r in records), dtype=np.float64, count=len(records))
        out[path] = column
    return out


def labels(records: Sequence[Record], path: str) -> list[Any]:
    """The value at ``path`` of each record (text, flags), None where absent."""
    return [value(r, path) for r in records]


def samples(record: Record) -> np.ndarray:
    """The record's request latencies in ms as a read-only float64 array (no copy; NaN: not a number)."""
    out = np.frombuffer(record.samples_ms, dtype=np.float64) if len(record.samples_ms) else np.empty(0)
    out.flags.writeable = False
    return out


def _float(found: Any) -> float:
    number = None if isinstance(found, bool) else finite_number(found)
    return math.nan if number is None else number


def dig(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...`` of plain untrusted JSON (not a record: env.json, stored settings); None where a step
    is missing or not an object."""
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d
