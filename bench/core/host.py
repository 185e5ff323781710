"""The host's CPU settings and state: torch's thread count per cell, the load, the frequency governor.

A CPU figure depends on more than the cell's settings: how many threads torch runs (the ``threads``
axis), how busy the machine was (a run on a loaded 2-core machine read a p50 of 75 s where idle gave
3.7 s) and how the kernel clocks the cores. The run records all three so a reader can tell a slow
setting from a busy machine. Readers take their source as a parameter, so tests pass fakes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.core.inputs import BOUNDS

# The threads axis's default: leave torch's own choice (one thread per physical core, or
# OMP_NUM_THREADS when set); the record says the number it used.
THREADS_DEFAULT = "auto"
BUSY_FRACTION = 0.5  # a 1-minute load above this fraction of the usable cores is a busy machine
CPUFREQ = Path("/sys/devices/system/cpu")

LoadReader = Callable[[], tuple[float, float, float]]


class BusyHostWarning(UserWarning):
    """The run started on a busy machine: a fact about the host, not about the sweep's input."""


def usable_cores() -> int:
    """The cores this process may run on (containers, taskset), else all of the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parse_threads(value: Any) -> int | str:
    """A threads axis value: ``auto`` or an integer >= 1 (from the command line or TOML)."""
    if value == THREADS_DEFAULT:
        return value
    try:
        number = int(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    bound = BOUNDS["threads"]  # more than any machine's cores by far: a typo, and OpenMP would start them
    if not bound.accepts(number):
        raise UsageError(f"bad threads value {value!r}; accepted: {THREADS_DEFAULT} or {bound.describe()}")
    return number


def oversubscribed(threads: list[int | str], cores: int) -> list[int]:
    """Thread counts above the usable cores: allowed (oversubscription is worth measuring), warned."""
    return [t for t in threads if isinstance(t, int) and t > cores]


@contextlib.contextmanager
def torch_threads(threads: int | str) -> Iterator[int]:
    """Run with ``threads`` intra-op threads (``auto``: torch's current setting), restored after;
    yields the number in use."""
    import torch

    before = torch.get_num_threads()
    if threads != THREADS_DEFAULT:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def load_average(read: LoadReader = os.getloadavg) -> list[float] | None:
    """The 1, 5 and 15-minute load averages, or None where the system has none."""
    try:
        return [round(float(v), 2) for v in read()]
    except OSError:
        return None


def host_load(read: LoadReader = os.getloadavg, cores: int | None = None) -> dict[str, Any]:
    """``env.json``'s ``host_load`` at the start of a run; ``end`` is filled in when it finishes."""
    return {"cores": cores or usable_cores(), "start": load_average(read), "end": None}


def busy(load: dict[str, Any] | None, when: str = "start") -> bool:
    """Whether the 1-minute load at ``when`` was above half the cores (records are untrusted: False
    when it cannot be read)."""
    if not isinstance(load, dict):
        return False
    reading, cores = load.get(when), load.get("cores")
    if not (isinstance(reading, list) and reading and isinstance(reading[0], (int, float))
            and isinstance(cores, int) and cores > 0):
        return False
    return reading[0] > BUSY_FRACTION * cores


def busy_warning(load: dict[str, Any]) -> str | None:
    """The one warning line for a run that starts on a busy machine, or None."""
    if not busy(load):
        return None
    return (f"the machine is busy: load {load['start'][0]:.2f} on {load['cores']} cores; figures may be slow "
            "and unstable")


def describe_load(load: Any) -> str | None:
    """``host_load`` in a few words for the report (env.json is untrusted: None when not readable)."""
    def one_minute(when: str) -> float | None:
        reading = load.get(when)
        ok = isinstance(reading, list) and reading and isinstance(reading[0], (int, float))
        return float(reading[0]) if ok and not isinstance(reading[0], bool) else None

    if not isinstance(load, dict) or (start := one_minute("start")) is None:
        return None
    end = one_minute("end")
    text = f"1-min load {start:.2f} at start" + (f", {end:.2f} at end" if end is not None else "")
    when = [w for w in ("start", "end") if busy(load, w)]
    return f"{text}, on {load.get('cores')} cores" + (f" (busy at {' and '.join(when)})" if when else "")


def governor(root: Path = CPUFREQ) -> dict[str, Any]:
    """The CPU frequency governor (one name, or ``cpuN=name`` pairs when cores differ), or None and why."""
    found = {}
    for path in sorted(root.glob("cpu[0-9]*/cpufreq/scaling_governor"), key=lambda p: int(p.parts[-3][3:])):
        try:
            found[path.parts[-3]] = path.read_text().strip()
        except OSError:
            continue
    if not found:
        return {"governor": None, "reason": f"not readable: no {root}/cpu*/cpufreq/scaling_governor (a VM or "
                                            "container without cpufreq)"}
    names = set(found.values())
    text = names.pop() if len(names) == 1 else ", ".join(f"{cpu}={name}" for cpu, name in found.items())
    return {"governor": text, "reason": None}
