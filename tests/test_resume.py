"""Resume retries failed cells only; a plain re-run into a used directory is refused.

Kills at random points, torn writes and concurrent runs: tests/test_faults.py."""

from __future__ import annotations

import re

from sweep_helpers import write_sweep

from bench import cli
from bench.results import store
from bench.run import runner


def test_resume_reruns_failed_cells_only_and_a_plain_rerun_is_refused(
    tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    sweep_file = write_sweep(tmp_path / "s.toml", tiny_checkpoint, tasks=["<CAPTION>", "<OD>"])
    out = tmp_path / "run"
    args = ["run", "--sweep", str(sweep_file), "--out", str(out), "--quiet"]
    real_run_cell = runner.run_cell

    def flaky(config, cell, loaded, out_dir, **kwargs):
        if cell.task == "<OD>":
            raise RuntimeError("transient failure")
        return real_run_cell(config, cell, loaded, out_dir, **kwargs)

    monkeypatch.setattr(runner, "run_cell", flaky)
    assert cli.main(args) == 1
    monkeypatch.undo()
    assert cli.main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main([*args, "--resume"]) == 0
    history = [(r.task, r.status) for r in store.records(out)]
    assert history == [("<CAPTION>", "ok"), ("<OD>", "error"), ("<OD>", "ok")]
    assert {r.status for r in store.latest_by_cell(store.records(out)).values()} == {"ok"}


def test_a_run_stopped_mid_cell_keeps_what_it_printed_in_progress_log(tiny_checkpoint, tmp_path, monkeypatch):
    """A long cell (a capacity search) prints its steps as they end; stopped before the cell's record is
    written, the run directory still holds them, timestamped, beside the cells that ended."""
    sweep_file = write_sweep(tmp_path / "s.toml", tiny_checkpoint, tasks=["<CAPTION>", "<OD>"])
    out = tmp_path / "run"
    real_run_cell = runner.run_cell
    step = "0.25 QPS: 64 requests, p90 900 ms; valid"

    def stopped(config, cell, loaded, out_dir, note=lambda line: None, **kwargs):
        if cell.task == "<OD>":
            note(step)
            raise KeyboardInterrupt
        return real_run_cell(config, cell, loaded, out_dir, note=note, **kwargs)

    monkeypatch.setattr(runner, "run_cell", stopped)
    assert cli.main(["run", "--sweep", str(sweep_file), "--out", str(out), "--quiet"]) == 130
    assert [r.task for r in store.records(out)] == ["<CAPTION>"]
    lines = (out / store.PROGRESS).read_text().splitlines()
    assert len(lines) == 2 and "ok" in lines[0] and "<CAPTION>" in lines[0] and lines[1].endswith(step)
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} ", line) for line in lines)
