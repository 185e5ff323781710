"""The local executor: every cell in this process, each group's model loaded once."""

from __future__ import annotations

from pathlib import Path

from bench.results import Record
from bench.results.cell import Cell
from bench.run.runner import RunConfig, run_cells


class LocalExecutor:
    def run(self, config: RunConfig, cells: list[Cell], out: Path, *, quiet: bool) -> list[Record]:
        return run_cells(config, cells, out, quiet=quiet)
