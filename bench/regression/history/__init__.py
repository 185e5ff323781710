"""Regression tracking over time: a history of runs per machine class, a CI gate on the newest run,
step detection over the whole history, and a trend report (docs/history.md).

- ``entries``: the store (one JSON file per run; run directories and pytest-benchmark files);
- ``detect``: ``check`` (the newest run against its class's recent runs) and ``steps``;
- ``trends``: the self-contained HTML trend report.

The functions ``run_*`` are the ``florence2-bench history`` commands; they return the exit code.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.core.inputs import check_bound
from bench.core.paths import write_output
from bench.regression import comparison, gates
from bench.regression.history.detect import Step, check, steps
from bench.regression.history.entries import Entry, MachineClass, add, load
from bench.regression.history.levels import K_BASELINE

__all__ = ["Entry", "MachineClass", "Step", "add", "check", "load", "steps", "steps_table"]

STEP_COLUMNS = (
    "cell",
    "metric",
    "first commit after",
    "date",
    "before",
    "after",
    "change",
    "size",
    "verdict",
)


def steps_table(found: list[Step], entries: list[Entry]) -> str:
    """Fixed-width text: per machine class, each step with the first commit after it."""
    classes = list(dict.fromkeys(e.machine for e in entries))
    lines = [f"{len(found)} step(s) in {len(entries)} run(s), {len(classes)} machine class(es)"]
    for machine in classes:
        mine = sorted((s for s in found if s.machine == machine), key=lambda s: (s.label, s.metric, s.index))
        runs = sum(e.machine == machine for e in entries)
        lines += ["", f"class {machine.id}: {machine.label} ({runs} run(s))"]
        if not mine:
            lines.append("  no step")
            continue
        body = [
            [
                s.label,
                s.metric,
                s.commit[:12],
                s.date[:19],
                comparison.value_text(s.metric, s.before),
                comparison.value_text(s.metric, s.after),
                s.change_text(),
                f"{s.z:.1f} se",
                s.verdict,
            ]
            for s in mine
        ]
        widths = [max(len(row[i]) for row in [list(STEP_COLUMNS), *body]) for i in range(len(STEP_COLUMNS))]
        for row in [list(STEP_COLUMNS), ["-" * w for w in widths], *body]:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _no_cycle_scans() -> Iterator[None]:
    """The cyclic garbage collector off while a command runs, on again after. A history's records are plain
    JSON (no reference cycle); a 1,000-run history of 100 cells is millions of objects, which the collector
    would scan again each time the heap grows by a quarter: about a third of the commands' CPU time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _without_cycle_scans(command: Callable[..., int]) -> Callable[..., int]:
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> int:
        with _no_cycle_scans():
            return command(*args, **kwargs)

    return run


def _thresholds(fail_on: str | None) -> dict[str, float] | None:
    return gates.parse_fail_on(fail_on) if fail_on else None


def run_add(source: Path, history: Path, commit: str | None = None, date: str | None = None) -> int:
    entry, new = add(Path(source), Path(history), commit=commit, date=date)
    where = entry.path.name if entry.path else "?"
    if new:
        print(
            f"added {source} as {where}: commit {entry.short}, {entry.date}, {len(entry.records)} cell(s), "
            f"class {entry.machine.id} ({entry.machine.label})"
        )
    else:
        print(f"already in the history as {where} (run {entry.run_id[:16]}): nothing changed")
    return 0


@_without_cycle_scans
def run_check(
    history: Path,
    fail_on: str | None = None,
    markdown: Path | None = None,
    k: int | None = None,
    fail_on_inconclusive: bool = False,
) -> int:
    """Judge the newest run; 1 when a metric regressed beyond threshold and noise, or a cell now fails;
    with ``fail_on_inconclusive``, 2 when nothing regressed but a change beyond the threshold is within
    the noise band (``comparison.exit_code``)."""
    k = K_BASELINE if k is None else k
    check_bound("baseline_runs", k, "bad --baseline-runs")
    thresholds = _thresholds(fail_on)
    result = check(load(Path(history)), thresholds, k=k)
    print(result.to_table(), end="")
    if markdown is not None:
        write_output(markdown, result.to_markdown())
    if not result.judged and not result.building:  # a verdict over nothing is no pass (exit 2)
        raise UsageError(result.nothing_judged() + "; accepted: a newest run with judgeable values")
    return comparison.exit_code(result, fail_on_inconclusive)


@_without_cycle_scans
def run_steps(history: Path, fail_on: str | None = None) -> int:
    entries = load(Path(history))
    print(steps_table(steps(entries, _thresholds(fail_on)), entries), end="")
    return 0


@_without_cycle_scans
def run_report(history: Path, out: Path, fail_on: str | None = None, title: str | None = None) -> int:
    from bench.regression.history.trends import build_trends

    path = build_trends(Path(history), Path(out), _thresholds(fail_on), title=title)
    print(f"trend report: {path}")
    return 0
