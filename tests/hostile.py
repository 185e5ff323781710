"""Builders of hostile files, shared by tests/test_faults.py and scripts/probe_hostile.py."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.results import store

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


def hostile_records(seed: int, baseline: Path, n: int = 30) -> list[dict[str, Any]]:
    """Records that pass the store's checks but carry garbage wherever the contract leaves room for it."""
    rng = random.Random(seed)
    weird = [None, 5, -1.5, "`|<b>&", [1, "a"], {"x": {"y": []}}, True, 1e308, [], {}, [[1]], "", -10**30]
    scalars = [None, 5, -1.5, "x`<b>", True, 1e308, float("nan"), float("inf"), -10**30, ""]
    lines = (baseline / store.RESULTS).read_text().splitlines()

    def mutate(node: Any, p: float, values: list) -> None:
        keys = list(node) if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else ()
        for k in keys:
            if rng.random() < p:
                node[k] = rng.choice(values)
            else:
                mutate(node[k], p, values)

    records = []
    for i in range(n):
        r = json.loads(rng.choice(lines))
        r["cell_id"] = f"hostile{i}"
        for example in r["examples"]:
            mutate(example, 0.3, weird)  # answers, sizes, file names, texts
        for key, value in r["extra"].items():
            if key in store.EXTRA_TABLES:  # a table (or null) by contract: garbage goes inside it only
                if isinstance(value, dict):
                    mutate(value, 0.3, scalars)
            elif rng.random() < 0.3:
                r["extra"][key] = rng.choice(weird)
        for key in (*store.SCALAR_TABLES, "extra"):
            if isinstance(r.get(key), dict):
                for k in list(r[key]):
                    if key == "extra" and k in store.EXTRA_TABLES:
                        continue  # a table or null by contract (above)
                    if not isinstance(r[key][k], (dict, list)) and rng.random() < 0.2:
                        r[key][k] = rng.choice(scalars)
        for key in ("variant", "task", "dtype", "device", "weights", "error", "checkpoint", "dataset"):
            if rng.random() < 0.15:
                r[key] = rng.choice(["`x|<b>\n", "", "a" * 300])
        if rng.random() < 0.2:
            r["samples_ms"] = [rng.choice([1e308, -5.0, 0.0, float("nan")]) for _ in range(3)]
        records.append(r)
    return records
