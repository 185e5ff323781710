"""Builders of hostile files, shared by tests/test_faults.py and scripts/probe_hostile.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import store

ROOT = Path(__file__).resolve().parents[1]


def bench_env() -> dict[str, str]:
    """The environment of a ``python -m bench`` subprocess on this checkout (one thread: the machine is shared)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def bench_process(*args: object, **kwargs: Any) -> subprocess.Popen:
    """``python -m bench ARGS`` of this checkout, started (a test kills it or waits for it)."""
    return subprocess.Popen([sys.executable, "-m", "bench", *map(str, args)], env=bench_env(), cwd=ROOT, **kwargs)


def edit_records(run: Path, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> Path:
    """Rewrite every record of ``run``'s results.jsonl through ``change`` (None keeps the record as edited)."""
    lines = [json.loads(line) for line in (run / store.RESULTS).read_text().splitlines()]
    (run / store.RESULTS).write_text("".join(json.dumps(change(r) or r) + "\n" for r in lines))
    return run


def bench_json(folder: Path, **changes: Any) -> Path:
    """A pytest-benchmark JSON file in ``folder`` with ``changes`` at dotted keys (``benchmarks.0.stats.data``)."""
    data = {"machine_info": {"cpu": {"brand_raw": "cpu", "count": 2}}, "commit_info": {"id": "abc123"},
            "datetime": "2026-11-26T08:00:00Z",
            "benchmarks": [{"name": "test_x", "fullname": "t.py::test_x", "group": None,
                            "stats": {"median": 0.01, "mean": 0.01, "stddev": 0.001, "rounds": 3,
                                      "data": [0.01, 0.011, 0.009]}}]}
    for key, value in changes.items():
        target, (*head, last) = data, key.split(".")
        for part in head:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value
    path = folder / "bench.json"
    path.write_text(json.dumps(data))
    return path
