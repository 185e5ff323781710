"""Executors: where a sweep's cells run. One small interface, a registry, one module per executor.

An executor takes the cells still to run and must append each cell's record to the run directory
as it ends (``store.append``), so a crash loses at most the cell in flight and ``--resume`` works
the same whichever executor ran. Both run cells with ``bench.run.runner``.

- ``local``: in this process, group by group (``bench.run.executors.local``);
- ``ray``: one Ray task per model group, on a cluster (``bench.run.executors.ray``).

To add one: a class with ``run(config, cells, out, *, quiet) -> list[Record]`` and an entry in
``EXECUTORS``; ``--executor NAME`` then accepts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.core.errors import choice_error
from bench.results import Record
from bench.results.cell import Cell
from bench.run.executors.local import LocalExecutor
from bench.run.executors.ray import RayExecutor
from bench.run.runner import RunConfig


class Executor(Protocol):
    def run(self, config: RunConfig, cells: list[Cell], out: Path, *, quiet: bool) -> list[Record]:
        """Run ``cells``, appending each record to ``out`` as it ends; return the records written."""
        ...


@dataclass(frozen=True)
class ExecutorOptions:
    """Settings an executor may need (from the command line)."""

    ray_address: str | None = None


EXECUTORS: dict[str, Callable[[ExecutorOptions], Executor]] = {
    "local": lambda options: LocalExecutor(),
    "ray": lambda options: RayExecutor(options.ray_address),
}


def get_executor(name: str, options: ExecutorOptions | None = None) -> Executor:
    if name not in EXECUTORS:
        raise choice_error("executor", name, EXECUTORS)
    return EXECUTORS[name](options or ExecutorOptions())
