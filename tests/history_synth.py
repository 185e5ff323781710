"""Synthetic histories built from real records, with noise drawn at the CV measured on this machine.

The templates are the records of the smoke baseline as recorded on this machine kind (a frozen copy
of ``reports/baselines/smoke-cpu``, read through ``bench.results.store``: base and large, <CAPTION> and <OD>,
3 samples per cell, sample CVs 3.0-8.7% as measured). Each synthetic run draws:

- a run-level factor exp(N(0, DRIFT_SD)) shared by every cell of the run (the machine's state that
  day: clocks, neighbours, page cache), with DRIFT_SD = 3%;
- per cell, the template's number of samples, each exp(N(0, s)) around the template's median times
  that factor, s = sqrt(log(1 + cv^2)) from the template's own ``latency_ms.cv``.

Together they give per-run medians whose run-to-run shifts reach the +-14% measured on this machine
(see ``aa_shifts``). ``python tests/history_synth.py`` prints the detection and false-alarm rates
docs/history.md quotes.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from bench.regression.history.entries import Entry, MachineClass, machine_from_env
from bench.results import Record, store

BASELINE = Path(__file__).resolve().parent / "fixtures" / "schema1-smoke-cpu"
"""A frozen copy of reports/baselines/smoke-cpu as recorded (which a refreshed baseline replaces)."""
DRIFT_SD = 0.03
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def templates() -> tuple[list[dict], dict]:
    records = [r.to_dict() for r in store.latest_by_cell(store.records(BASELINE)).values()]  # JSON to vary
    return [{k: v for k, v in r.items() if k != "examples"} for r in records], store.read_env(BASELINE)


def _run(
    templates_: list[dict], rng: np.random.Generator, factor: float, drift_sd: float, samples: int | None
) -> list[dict]:
    level = factor * math.exp(rng.normal(0, drift_sd))
    out = []
    for template in templates_:
        record = copy.deepcopy(template)
        base = float(np.median(template["samples_ms"]))
        s = math.sqrt(math.log(1 + template["latency_ms"]["cv"] ** 2))
        drawn = base * level * np.exp(rng.normal(0, s, samples or len(template["samples_ms"])))
        record["samples_ms"] = drawn.tolist()
        record["latency_ms"].update(
            p50=float(np.median(drawn)),
            p90=float(np.quantile(drawn, 0.9)),
            mean=float(drawn.mean()),
            cv=float(drawn.std(ddof=1) / drawn.mean()),
            n=len(drawn),
        )
        record["memory"]["peak_rss_bytes"] = int(
            template["memory"]["peak_rss_bytes"] * (1 + rng.normal(0, 0.002))
        )
        out.append(record)
    return out


def history(
    n_runs: int,
    seed: int,
    *,
    step_at: int | None = None,
    step: float = 1.25,
    outlier_at: int | None = None,
    outlier: float = 1.5,
    drift_sd: float = DRIFT_SD,
    samples: int | None = None,
    machine: MachineClass | None = None,
    tag: str = "",
) -> list[Entry]:
    """``n_runs`` runs, oldest first: latency x``step`` from run ``step_at`` on, x``outlier`` at one run;
    ``samples`` per cell instead of the template's count (3)."""
    recs, env = templates()
    machine = machine or machine_from_env(env)
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(n_runs):
        factor = (step if step_at is not None and i >= step_at else 1.0) * (
            outlier if i == outlier_at else 1.0
        )
        records = _run(recs, rng, factor, drift_sd, samples)
        commit = hashlib.sha1(f"{tag}{seed}-{i}".encode()).hexdigest()
        entries.append(
            Entry(
                run_id=hashlib.sha256(f"{tag}{seed}-{i}-{machine.id}".encode()).hexdigest(),
                commit=commit,
                date=(START + timedelta(hours=i)).isoformat(),
                dirty=False,
                source={"kind": "run-dir", "path": f"synthetic/{seed}/{i}"},
                machine=machine,
                env=env,
                records=[typed(r) for r in records],
            )
        )
    return entries


def typed(record: dict) -> Record:
    """A synthetic record's JSON through the one door (every one is well formed)."""
    found = Record.from_dict(record)
    assert found is not None, record
    return found


@contextlib.contextmanager
def as_json(entry: Entry) -> Iterator[list[dict]]:
    """The entry's records as JSON dicts to change in place (a run made slower, a cell failed); typed again after."""
    records = [r.to_dict() for r in entry.records]
    yield records
    entry.records = [typed(r) for r in records]


def write(entries: list[Entry], directory: Path) -> Path:
    """The entries as a history directory (what `history add` would have written)."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        (directory / entry.file_name()).write_text(entry.to_json())
    return directory


def aa_shifts(seeds: int = 200) -> np.ndarray:
    """|median ratio - 1| between consecutive no-change runs, over cells and seeds."""
    from bench.regression.history.detect import point

    out = []
    for seed in range(seeds):
        runs = history(2, seed)
        for a, b in zip(runs[0].records, runs[1].records, strict=True):
            out.append(abs(math.exp(point(1, b, "latency_p50").x - point(0, a, "latency_p50").x) - 1))
    return np.array(out)


def rates(
    seeds: int = 1000, n_runs: int = 20, samples: int | None = None, step: float = 1.25
) -> dict[str, float]:
    """The rates docs/history.md quotes: per history (any cell) and per cell (latency_p50)."""
    from bench.regression.history.detect import check, steps

    n_cells = len(templates()[0])
    at = n_runs // 2
    counts = dict.fromkeys(
        ("step_h", "step_c", "slow_h", "slow_c", "fa_h", "fa_rows", "rows", "fstep_h", "outlier_h"), 0
    )
    for seed in range(seeds):
        h = history(n_runs, seed, step_at=at, step=step, samples=samples)
        cells = {
            s.cell_id
            for s in steps(h)
            if s.index == at and s.metric == "latency_p50" and s.verdict == "regressed"
        }
        counts["step_h"] += bool(cells)
        counts["step_c"] += len(cells)
        result = check(history(n_runs, seed, step_at=n_runs - 1, step=step, samples=samples))
        counts["slow_h"] += result.regressed
        counts["slow_c"] += sum(r.metric == "latency_p50" and r.verdict == "regressed" for r in result.rows)
        h = history(n_runs, seed, samples=samples)
        result = check(h)
        counts["fa_h"] += result.regressed
        counts["fa_rows"] += sum(r.verdict == "regressed" for r in result.rows)
        counts["rows"] += len(result.rows)
        counts["fstep_h"] += bool(steps(h))
        counts["outlier_h"] += bool(steps(history(n_runs, seed, outlier_at=at, samples=samples)))
    return {
        f"x{step:g} step found at its commit, per history": counts["step_h"] / seeds,
        f"x{step:g} step found at its commit, per cell (p50)": counts["step_c"] / (seeds * n_cells),
        f"x{step:g} newest run fails check, per history": counts["slow_h"] / seeds,
        f"x{step:g} newest run flagged, per cell (p50)": counts["slow_c"] / (seeds * n_cells),
        "no change: check fails, per history": counts["fa_h"] / seeds,
        "no change: regressed rows, per row": counts["fa_rows"] / max(1, counts["rows"]),
        "no change: any step, per history": counts["fstep_h"] / seeds,
        "x1.5 outlier mid-history: any step, per history": counts["outlier_h"] / seeds,
    }


if __name__ == "__main__":
    import sys

    shifts = aa_shifts()
    print(
        f"A/A run-to-run |shift| of the median: p50 {np.median(shifts):.1%}, p95 {np.quantile(shifts, 0.95):.1%}, "
        f"max {shifts.max():.1%}"
    )
    n_seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    for n_samples, factor in ((None, 1.25), (None, 1.2), (None, 1.5), (32, 1.25), (32, 1.15)):
        print(f"\n{n_samples or 'template (3)'} samples per cell, {n_seeds} seeds:")
        for name, value in rates(n_seeds, samples=n_samples, step=factor).items():
            print(f"  {name}: {value:.4f}")
