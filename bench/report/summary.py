"""The run's summary table: what ran and the headline numbers, one fixed-width line per cell."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.results import Record, value


def _typed(records: Iterable[Record | dict[str, Any]]) -> list[Record]:
    """Records as ``bench.results.Record`` (the runner still hands over its records as JSON dicts)."""
    out = []
    for r in records:
        typed = r if isinstance(r, Record) else Record.from_dict(r, "the run's record")
        if typed is not None:
            out.append(typed)
    return out


def summary_table(records: Iterable[Record | dict[str, Any]]) -> str:
    """A fixed-width table of the run's cells: what ran and the headline numbers."""
    head = ("status", "variant", "task", "scenario", "dtype", "bs", "device", "backend", "weights", "p50 ms", "p90 ms",
            "p99 ms", "img/s", "tok/s", "server", "peak RSS MiB", "tokens")
    rows = [head]
    invalid, flagged = [], []
    typed = _typed(records)
    for r in typed:
        rss = value(r, "memory.peak_rss_bytes")
        where = f"{r.variant} {r.task} bs{r.batch_size} {r.device}"
        if r.server and not r.server.valid:
            invalid.append(f"! {where} server: invalid at {_num(r.server.target_qps, 3)} QPS: {r.server.invalid_reason}")
        flagged += [f"! {where} {r.scenario or '-'}: {f.code}: {f.message}" for f in r.flags]
        rows.append((
            r.status + ("*" if r.unstable else ""), r.variant, r.task, _scenario_text(r),
            r.dtype, str(r.batch_size), r.device, str(r.backend or "transformers"), r.weights,
            _num(value(r, "latency_ms.p50"), 0), _num(value(r, "latency_ms.p90"), 0), _num(value(r, "latency_ms.p99"), 0),
            _num(value(r, "throughput.images_per_s"), 3), _num(value(r, "throughput.tokens_per_s"), 1), _server_text(r),
            _num(rss / 2**20 if rss else None, 0), _num(r.gen_tokens_mean, 1),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("latency = request latency, what one request waits (offline: the whole batch; server: queueing "
                 "included)")
    if any(r.unstable for r in typed):
        lines.append("* unstable: coefficient of variation above the threshold")
    return "\n".join(lines + invalid + flagged)


def _scenario_text(record: Record) -> str:
    """The scenario, and the load generator when it is not the builtin one."""
    generator = record.settings.load_generator or "builtin"
    return (record.scenario or "-") + ("" if generator == "builtin" else f" ({generator})")


def _server_text(record: Record) -> str:
    """Server cells: the capacity found, or the load run and whether the run was valid."""
    server = record.server
    if not server:
        return "-"
    if record.capacity_qps is not None:
        return f"capacity {record.capacity_qps:.3g} QPS"
    verdict = "valid" if server.valid else "INVALID"
    return f"{verdict} @ {_num(server.target_qps, 3)} QPS"


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
