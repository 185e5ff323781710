"""Sweeps end to end on the tiny checkpoint: contained failures, validation, skipped cells, the DataFrame API."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import write_sweep

from bench import cli, runner, store, sweep
from bench.errors import UsageError

FAILURES = {
    "<CAPTION>": (RuntimeError("boom in the decoder"), "error"),
    "<OD>": (MemoryError("cannot allocate 12 GiB"), "oom"),
    "<OCR>": (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
}


@pytest.fixture(scope="module")
def failed_run(tiny_checkpoint, tmp_path_factory):
    """One CLI run where three of four cells fail inside the cell path; the fourth is measured for real."""
    tmp = tmp_path_factory.mktemp("failed")
    sweep_file = write_sweep(tmp / "s.toml", tiny_checkpoint, tasks=[*FAILURES, "<DETAILED_CAPTION>"])
    real_run_cell = runner.run_cell
    freed = []

    def injected(config, cell, loaded, out):
        if cell.task in FAILURES:
            raise FAILURES[cell.task][0]
        return real_run_cell(config, cell, loaded, out)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "run_cell", injected)
        mp.setattr(runner, "free_memory", lambda: freed.append(1))
        code = cli.main(["run", "--sweep", str(sweep_file), "--out", str(tmp / "run"), "--quiet"])
    return code, tmp / "run", len(freed)


def test_failures_become_records_and_the_sweep_goes_on(failed_run):
    code, run, freed = failed_run
    assert code == 1
    records = {r["task"]: r for r in store.read_records(run)}
    assert len(records) == 4
    for task, (exc, status) in FAILURES.items():
        assert records[task]["status"] == status
        assert records[task]["error"] == f"{type(exc).__name__}: {exc}"
        assert records[task]["latency_ms"] is None
    ok = records["<DETAILED_CAPTION>"]
    assert ok["status"] == "ok" and ok["error"] is None and ok["latency_ms"]["n"] == 2
    assert freed >= len(FAILURES)  # memory is freed after every failed cell


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--variants", "huge"], "'huge'"),
        (["--tasks", "<NOPE>"], "'<NOPE>'"),
        (["--dtypes", "fp8"], "'fp8'"),
        (["--devices", "tpu"], "'tpu'"),
        (["--dataset", "no-such-set"], "'no-such-set'"),
        (["--attn", "flash9"], "'flash9'"),
        (["--batch-sizes", "0"], "batch size 0"),
        (["--batch-sizes", "two"], "'two'"),
        (["--num-beams", "0"], "num_beams 0"),
        (["--sweep", "no-such-sweep"], "'no-such-sweep'"),
    ],
)
def test_invalid_values_exit_2_naming_the_value_before_anything_runs(args, named, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "--limit", "2", "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "accepted" in err[0]
    assert not (out / store.RESULTS).exists()


def test_bad_sweep_files_exit_2_naming_the_problem(tmp_path, capsys):
    broken = tmp_path / "broken.toml"
    broken.write_text("variants = [base\n")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("batchsize = [1]\n")
    for path, named in (
        (broken, "invalid TOML"),
        (unknown, "'batchsize'"),
        (tmp_path / "missing.toml", "missing"),
    ):
        assert cli.main(["run", "--sweep", str(path), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0] and str(path) in err[0]
    assert not (tmp_path / "run" / store.RESULTS).exists()


def _cpu_has(*flags: str) -> bool:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return any(f in text.split() for f in flags)


def test_unsupported_settings_become_skipped_records_with_the_reason(tiny_checkpoint, tmp_path):
    import torch

    if torch.cuda.is_available() or _cpu_has("avx512_fp16", "amx_fp16"):
        pytest.skip("this machine runs CUDA or CPU fp16 natively")
    sweep_file = write_sweep(tmp_path / "s.toml", tiny_checkpoint, devices=["cpu", "cuda"], dtypes=["fp16"])
    assert cli.main(["run", "--sweep", str(sweep_file), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    records = {r["device"]: r for r in store.read_records(tmp_path / "run")}
    assert {r["status"] for r in records.values()} == {"skipped"}
    assert "CUDA is not available" in records["cuda"]["error"]
    assert "fp16" in records["cpu"]["error"] and "avx512_fp16" in records["cpu"]["error"]


def test_load_flattens_records_into_a_dataframe(failed_run):
    _, run, _ = failed_run
    frame = store.load(run)
    records = store.read_records(run)
    assert len(frame) == len(records)
    assert {"cell_id", "status", "latency_ms.p50", "throughput.images_per_s", "settings.quant"} <= set(
        frame.columns
    )
    by_id = frame.set_index("cell_id")
    for r in records:
        p50 = by_id.loc[r["cell_id"], "latency_ms.p50"]
        assert pd.isna(p50) if r["latency_ms"] is None else p50 == r["latency_ms"]["p50"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_round_trips(failed_run, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    _, run, _ = failed_run
    frame = store.load(run)
    path = store.export(run, tmp_path / f"results{suffix}")
    back = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(back.columns) == list(frame.columns)
    for column in ("cell_id", "status", "task", "error", "latency_ms.p50", "batch_size"):
        pd.testing.assert_series_equal(back[column], frame[column], check_dtype=False)
    decoded = [json.loads(v) if isinstance(v, str) else None for v in back["samples_ms"]]
    assert decoded == list(frame["samples_ms"])


def test_export_refuses_an_unknown_suffix(failed_run, tmp_path):
    with pytest.raises(UsageError, match=r"'\.xlsx'.*accepted: \.csv, \.parquet"):
        store.export(failed_run[1], tmp_path / "results.xlsx")


def test_python_api_returns_the_same_frame(tiny_checkpoint, tmp_path):
    if not hasattr(sweep, "run"):
        pytest.skip("bench.sweep.run(config_or_name, out, **overrides) -> DataFrame is not there yet")
    sweep_file = write_sweep(tmp_path / "s.toml", tiny_checkpoint)
    frame = sweep.run(str(sweep_file), tmp_path / "run", quiet=True)
    pd.testing.assert_frame_equal(frame, store.load(tmp_path / "run"))
    assert list(frame["status"]) == ["ok"]
