"""Crash safety: a sweep killed with SIGKILL resumes to exactly one ok record per cell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sweep_helpers import write_sweep

from bench import cli, runner, store, sweep


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sigkill_mid_sweep_then_resume_records_every_cell_once(tiny_checkpoint, tmp_path):
    sweep_file = write_sweep(
        tmp_path / "s.toml",
        tiny_checkpoint,
        tasks=["<CAPTION>", "<OD>", "<OCR>"],
        batch_sizes=[1, 2],
        num_beams=[1, 2],
    )
    expected = {c.cell_id for c in sweep.expand(sweep.load_sweep(str(sweep_file)))}
    assert len(expected) == 12
    out = tmp_path / "run"
    results = out / store.RESULTS
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--sweep", str(sweep_file), "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while not _lines(results) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = [json.loads(line) for line in _lines(results)]
    assert 1 <= len(before) < len(expected)
    # a write torn by a crash: half of a line, no newline
    with results.open("a") as fh:
        fh.write(json.dumps(before[0])[:40])

    with pytest.warns(UserWarning, match="torn line"):
        assert cli.main(["run", "--sweep", str(sweep_file), "--out", str(out), "--resume", "--quiet"]) == 0
    after = [json.loads(line) for line in _lines(results)]  # every line parses: the torn tail was dropped
    counts = Counter(r["cell_id"] for r in after)
    assert set(counts) == expected and set(counts.values()) == {1}
    assert {r["status"] for r in after} == {"ok"}
    assert after[: len(before)] == before  # finished cells were kept, not re-run


def test_resume_reruns_failed_cells_only_and_a_plain_rerun_is_refused(
    tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    sweep_file = write_sweep(tmp_path / "s.toml", tiny_checkpoint, tasks=["<CAPTION>", "<OD>"])
    out = tmp_path / "run"
    args = ["run", "--sweep", str(sweep_file), "--out", str(out), "--quiet"]
    real_run_cell = runner.run_cell

    def flaky(config, cell, loaded, out_dir):
        if cell.task == "<OD>":
            raise RuntimeError("transient failure")
        return real_run_cell(config, cell, loaded, out_dir)

    monkeypatch.setattr(runner, "run_cell", flaky)
    assert cli.main(args) == 1
    monkeypatch.undo()
    assert cli.main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main([*args, "--resume"]) == 0
    history = [(r["task"], r["status"]) for r in store.read_records(out)]
    assert history == [("<CAPTION>", "ok"), ("<OD>", "error"), ("<OD>", "ok")]
    assert {r["status"] for r in store.latest_by_cell(store.read_records(out)).values()} == {"ok"}
