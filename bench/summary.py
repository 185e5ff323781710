"""The run's summary table: what ran and the headline numbers, one fixed-width line per cell."""

from __future__ import annotations


def summary_table(records: list[dict]) -> str:
    """A fixed-width table of the run's cells: what ran and the headline numbers."""
    head = ("status", "variant", "task", "scenario", "dtype", "bs", "device", "backend", "weights", "p50 ms", "p90 ms",
            "p99 ms", "img/s", "tok/s", "server", "peak RSS MiB", "tokens")
    rows = [head]
    invalid, flagged = [], []
    for r in records:
        lat, thr, mem = r.get("latency_ms") or {}, r.get("throughput") or {}, r.get("memory") or {}
        rss = mem.get("peak_rss_bytes")
        server = r.get("server") or {}
        if server and not server.get("valid"):
            invalid.append(f"! {r['variant']} {r['task']} bs{r['batch_size']} {r['device']} server: invalid at "
                           f"{_num(server.get('target_qps'), 3)} QPS: {server.get('invalid_reason')}")
        flagged += [f"! {r['variant']} {r['task']} bs{r['batch_size']} {r['device']} {r.get('scenario') or '-'}: "
                    f"{f.get('code')}: {f.get('message')}" for f in r.get("flags") or [] if isinstance(f, dict)]
        rows.append((
            r["status"] + ("*" if r.get("unstable") else ""), r["variant"], r["task"], _scenario_text(r),
            r["dtype"], str(r["batch_size"]), r["device"], str(r.get("backend") or "transformers"), r["weights"], _num(lat.get("p50"), 0),
            _num(lat.get("p90"), 0), _num(lat.get("p99"), 0), _num(thr.get("images_per_s"), 3),
            _num(thr.get("tokens_per_s"), 1), _server_text(r), _num(rss / 2**20 if rss else None, 0),
            _num(r.get("gen_tokens_mean"), 1),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("latency = request latency, what one request waits (offline: the whole batch; server: queueing "
                 "included)")
    if any(r.get("unstable") for r in records):
        lines.append("* unstable: coefficient of variation above the threshold")
    return "\n".join(lines + invalid + flagged)


def _scenario_text(record: dict) -> str:
    """The scenario, and the load generator when it is not the builtin one."""
    generator = (record.get("settings") or {}).get("load_generator", "builtin")
    return (record.get("scenario") or "-") + ("" if generator == "builtin" else f" ({generator})")


def _server_text(record: dict) -> str:
    """Server cells: the capacity found, or the load run and whether the run was valid."""
    server = record.get("server")
    if not server:
        return "-"
    if record.get("capacity_qps") is not None:
        return f"capacity {record['capacity_qps']:.3g} QPS"
    verdict = "valid" if server.get("valid") else "INVALID"
    return f"{verdict} @ {_num(server.get('target_qps'), 3)} QPS"


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
