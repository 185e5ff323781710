"""The door for records (bench/results/): no module of bench/ outside it reads a record by a field's name.

An AST scan. An offence is reading (a ``Load`` subscript, or ``.get``) with a string constant that names a
field of ``Record`` or of one of its tables (``r["images_per_s"]``, ``rec["latency_ms"]["p50"]``,
``rec.get("server")``): readers use attributes (``rec.latency_ms.p50``) or ``bench.results.value``/``figure``/
``columns`` with a path. Writing such a key (building a dict) is not an offence. ``SHARED`` names also key data
that is not a record, so they are never offences; each says where. ``ALLOWLIST``: modules not yet migrated,
with their offences' count; whoever migrates one removes it (a listed module that is clean fails too).
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import bench.results as results
from bench.results import Record, Table

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

SHARED = {
    "width", "height", "image_id", "text", "answer",  # dataset annotations and samples (bench.accuracy.data, bench.accuracy.metrics)
    "weights",  # the random checkpoint's marker file (bench.backends.transformers.checkpoints)
    "batch_size",  # a call's bound arguments (bench.backends.transformers.settings)
    "threads",  # the bounds of settings (bench.core.inputs.BOUNDS)
    "key",  # LoadGen's log entries (bench.scenarios.mlperf.read_detail)
    "preprocess", "vision", "ttft", "per_token", "decode", "postprocess",  # a batch's stage times (BatchResult)
}

# module (relative to bench/) -> who migrates it (TEAM.md); remove a line once it reads attributes
ALLOWLIST: dict[str, str] = {}  # every module migrated (issue 27)


def field_names() -> set[str]:
    """Every field name of ``Record`` and of the tables in ``bench.results``, less ``SHARED``."""
    tables = [t for t in vars(results).values() if isinstance(t, type) and issubclass(t, Table) and t is not Table]
    assert Record in tables
    return {f.name for t in tables for f in dataclasses.fields(t) if not f.name.startswith("_")} - SHARED


def offences(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, key) of each read of a record field by name in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key = node.slice.value if isinstance(node.slice, ast.Constant) else None
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant)):
            key = node.args[0].value
        if isinstance(key, str) and key in names:
            found.append((node.lineno, key))
    return found


def _scan() -> dict[str, list[tuple[int, str]]]:
    names = field_names()
    out = {}
    for path in sorted(BENCH.rglob("*.py")):
        rel = path.relative_to(BENCH).as_posix()
        if rel.startswith("results/"):
            continue
        if found := offences(path.read_text(), names):
            out[rel] = found
    return out


def test_no_module_outside_bench_results_reads_a_record_by_field_name():
    found = _scan()
    new = {m: hits for m, hits in found.items() if m not in ALLOWLIST}
    assert not new, "read by field name (use attributes, bench.results.value/figure/columns): " + "; ".join(
        f"bench/{m}:{line} [{key!r}]" for m, hits in new.items() for line, key in hits[:5])
    clean = sorted(set(ALLOWLIST) - set(found))
    assert not clean, f"migrated: remove from ALLOWLIST in tests/test_results_door.py: {', '.join(clean)}"


def test_the_scan_catches_digging_and_leaves_other_dicts_alone():
    names = field_names()
    caught = offences('a = r["images_per_s"]\nb = rec["latency_ms"]["p50"]\nc = rec.get("server")\n', names)
    assert sorted(key for _, key in caught) == ["images_per_s", "latency_ms", "p50", "server"]
    assert offences('d["images_per_s"] = 1\nx = sample["width"]\ny = env.get("gpu")\nz = row["label"]\n', names) == []
