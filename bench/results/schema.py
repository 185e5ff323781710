"""Record schema versions, and reading older records in the current meaning.

Schema 2 (this version): ``latency_ms``/``samples_ms`` are *request* latency, what one request waits
(for an offline batch of N, the batch's wall time); ``time_per_image_ms`` is the amortised figure;
``scenario`` is an explicit axis and part of the cell id; ``server`` and ``capacity_qps`` are new.

Schema 1 (before): ``latency_ms``/``samples_ms`` were the amortised per-image time, batch wall time /
batch size, with one sample per batch. That converts exactly: request latency = the schema-1 figure x
batch size (every statistic scales, ``n`` and ``cv`` do not), and the schema-1 figure itself becomes
``time_per_image_ms``. A converted record says so in ``extra.converted_from_schema: 1`` and
``timing.latency``. Its ``cell_id`` is kept: schema-1 ids did not include the scenario, so they never
match a schema-2 id; ``compare`` refuses to pair a converted run with a current one (one line).
Any other version is refused with one line; a record without ``schema`` (never written by ``run``,
which always sets it; hand-made for a test or a notebook) is taken as the current schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.core.errors import UsageError

SCHEMA_VERSION = 2
CONVERTED = "converted_from_schema"
_SCALED = ("mean", "std", "p50", "p90", "p95", "p99", "ci95_low", "ci95_high")
STAGES_BASIS = "per image, amortised over the batch (stage time of a batch / its size); median over batches"


def upgrade(record: dict[str, Any], where: str | Path = "a record") -> dict[str, Any]:
    """``record`` in the schema-2 meaning (converted when it is schema 1); refuses other versions."""
    version = record.get("schema", SCHEMA_VERSION)  # every record run wrote has one; hand-made ones may not
    if version == SCHEMA_VERSION:
        return record
    if version != 1:
        raise UsageError(f"{where}: record schema {version!r} is not readable by this version; accepted: schema 1 "
                         f"(converted) or {SCHEMA_VERSION}")
    return _from_v1(record)


def _from_v1(v1: dict[str, Any]) -> dict[str, Any]:
    record = dict(v1)
    batch = int(record.get("batch_size") or 1)
    amortised = record.get("latency_ms")
    record["time_per_image_ms"] = amortised
    if isinstance(amortised, dict):
        record["latency_ms"] = {k: (v * batch if k in _SCALED and isinstance(v, (int, float)) else v)
                                for k, v in amortised.items()}
    record["samples_ms"] = [s * batch for s in record.get("samples_ms") or []]
    record.setdefault("scenario", "single-stream" if batch == 1 else "offline")
    record["server"] = None
    record["capacity_qps"] = None
    timing = dict(record.get("timing") or {})
    if record.get("status") == "ok":
        timing["latency"] = (f"converted from schema 1: request latency = the recorded per-image time x batch size "
                             f"{batch} (the batch's wall time)")
        timing["stages_basis"] = STAGES_BASIS
    record["timing"] = timing
    record["extra"] = {**(record.get("extra") or {}), CONVERTED: 1}
    record["schema"] = SCHEMA_VERSION
    return record


def converted(records: list[dict[str, Any]]) -> bool:
    """Whether any of these records was read from an older schema."""
    return any((r.get("extra") or {}).get(CONVERTED) for r in records)
