"""Sweeps end to end on the tiny checkpoint: contained failures, validation, skipped cells, the DataFrame API."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import write_sweep

from bench import cli
from bench.core import host
from bench.core.errors import UsageError
from bench.results import store
from bench.run import runner, sweep

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

    def injected(config, cell, loaded, out, **kwargs):
        if cell.task in FAILURES:
            raise FAILURES[cell.task][0]
        return real_run_cell(config, cell, loaded, out, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "run_cell", injected)
        mp.setattr(runner, "free_memory", lambda: freed.append(1))
        code = cli.main(["run", "--sweep", str(sweep_file), "--out", str(tmp / "run"), "--quiet"])
    return code, tmp / "run", len(freed)


def test_failures_become_records_and_the_sweep_goes_on(failed_run):
    code, run, freed = failed_run
    assert code == 1
    records = {r.task: r for r in store.records(run)}
    assert len(records) == 4
    for task, (exc, status) in FAILURES.items():
        assert records[task].status == status
        assert records[task].error == f"{type(exc).__name__}: {exc}"
        assert records[task].latency_ms is None
    ok = records["<DETAILED_CAPTION>"]
    assert ok.status == "ok" and ok.error is None and ok.latency_ms.n == 2
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
        (["--batch-sizes", "0"], "bad batch_sizes value 0"),
        (["--batch-sizes", "two"], "'two'"),
        (["--num-beams", "0"], "bad num_beams value 0"),
        (["--threads", "0"], "threads value '0'"),
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
    records = {r.device: r for r in store.records(tmp_path / "run")}
    assert {r.status for r in records.values()} == {"skipped"}
    assert "CUDA is not available" in records["cuda"].error
    assert "fp16" in records["cpu"].error and "avx512_fp16" in records["cpu"].error


def test_load_flattens_records_into_a_dataframe(failed_run):
    _, run, _ = failed_run
    frame = store.load(run)
    records = store.records(run)
    assert len(frame) == len(records)
    assert {"cell_id", "status", "latency_ms.p50", "throughput.images_per_s", "settings.quant"} <= set(
        frame.columns
    )
    by_id = frame.set_index("cell_id")
    for r in records:
        p50 = by_id.loc[r.cell_id, "latency_ms.p50"]
        assert pd.isna(p50) if r.latency_ms is None else p50 == r.latency_ms.p50


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


def _hand_made_run(run_dir: Path, cells: list[dict]) -> Path:
    for i, changes in enumerate(cells):
        store.append(run_dir, store.Record(**{
            "cell_id": f"c{i}", "variant": "base", "checkpoint": "tiny", "weights": "random", "task": "<CAPTION>",
            "dataset": "synthetic-smoke", "n_images": 2, "device": "cpu", "dtype": "fp32", "batch_size": 1,
            "attn": "sdpa", "compile": False, "num_beams": 1, "max_new_tokens": 4, **changes}))
    return run_dir


def test_a_frame_made_in_chunks_equals_one_made_whole(tmp_path, monkeypatch):
    """``load`` makes ``LOAD_CHUNK`` rows a frame at a time: columns a later chunk adds, and dtypes that only
    the whole column settles (ints beside a missing value), come out as one frame of every row gives them."""
    run = _hand_made_run(tmp_path / "run", [
        {"samples_ms": [1.0, 2.0]}, {"throughput": {"images_per_s": 3}}, {"status": "error", "error": "boom"},
        {"accuracy": {"cider": 12.5}, "throughput": {"images_per_s": 2.5}}, {"compile": "graphs"}])
    whole = store.load(run)
    monkeypatch.setattr(store, "LOAD_CHUNK", 2)
    chunked = store.load(run)
    pd.testing.assert_frame_equal(chunked, whole)
    assert list(chunked.columns) == list(whole.columns) and "accuracy.cider" in chunked.columns


def test_parquet_holds_a_column_of_mixed_values_as_the_csv_writes_it(tmp_path):
    pytest.importorskip("pyarrow")
    run = _hand_made_run(tmp_path / "run", [{"compile": False}, {"compile": "graphs"}, {"compile": True}])
    back = pd.read_parquet(store.export(run, tmp_path / "results.parquet"))
    as_csv = pd.read_csv(store.export(run, tmp_path / "results.csv"), dtype=str)
    assert list(back["compile"]) == list(as_csv["compile"]) == ["False", "graphs", "True"]


def test_export_refuses_an_unknown_suffix(failed_run, tmp_path):
    with pytest.raises(UsageError, match=r"'\.xlsx'.*accepted: \.csv, \.parquet"):
        store.export(failed_run[1], tmp_path / "results.xlsx")


def test_python_api_returns_the_same_frame(tiny_checkpoint, tmp_path):
    if not hasattr(sweep, "run"):
        pytest.skip("bench.run.sweep.run(config_or_name, out, **overrides) -> DataFrame is not there yet")
    sweep_file = write_sweep(tmp_path / "s.toml", tiny_checkpoint)
    frame = sweep.run(str(sweep_file), tmp_path / "run", quiet=True)
    pd.testing.assert_frame_equal(frame, store.load(tmp_path / "run"))
    assert list(frame["status"]) == ["ok"]


# --- CPU settings and host state, token-level figures ------------------------------------------------


def test_threads_make_one_cell_per_value_and_are_checked(tiny_checkpoint, tmp_path):
    config = sweep.load_sweep(str(write_sweep(tmp_path / "s.toml", tiny_checkpoint, threads=[1, 2])))
    cells = sweep.expand(config)
    assert [c.threads for c in cells] == [1, 2] and len({c.cell_id for c in cells}) == 2
    assert "threads1" in cells[0].label
    assert sweep.override(config, threads="auto,3").threads == ["auto", 3]
    with pytest.raises(UsageError, match=r"bad threads = 1; accepted: a list of"):
        sweep.load_sweep(str(write_sweep(tmp_path / "t.toml", tiny_checkpoint, threads=1)))
    with pytest.raises(UsageError, match=r"bad threads value 0; accepted: auto or an integer >= 1"):
        sweep.validate(sweep.load_sweep(str(write_sweep(tmp_path / "u.toml", tiny_checkpoint, threads=[0]))))
    too_many = host.usable_cores() + 1
    with pytest.warns(UserWarning, match=rf"threads {too_many} > the {too_many - 1} usable cores: the cells "
                                         "oversubscribe the CPU"):
        sweep.validate(sweep.override(config, threads=str(too_many)))


@pytest.fixture(scope="module")
def busy_run(tiny_checkpoint, tmp_path_factory):
    """One cell at 1 thread, started on a (fake) busy machine that has calmed down by the end."""
    tmp = tmp_path_factory.mktemp("busy")
    config = sweep.load_sweep(str(write_sweep(tmp / "s.toml", tiny_checkpoint, threads=[1])))
    readings = iter([(1.5 * host.usable_cores(), 1.0, 1.0), (0.25, 0.5, 1.0)])
    with pytest.warns(host.BusyHostWarning, match="the machine is busy: load") as caught:
        sweep.run_sweep(config, tmp / "run", quiet=True, loadavg=lambda: next(readings))
    busy = [w for w in caught if "busy" in str(w.message)]
    return tmp / "run", busy


def test_env_json_records_the_host_load_at_start_and_end_and_one_busy_warning(busy_run):
    run, warned = busy_run
    env = store.read_env(run)
    assert env["host_load"] == {"cores": host.usable_cores(), "start": [1.5 * host.usable_cores(), 1.0, 1.0],
                                "end": [0.25, 0.5, 1.0]}
    assert len(warned) == 1 and f"on {host.usable_cores()} cores; figures may be slow" in str(warned[0].message)
    assert set(env["cpu_governor"]) == {"governor", "reason"}


def test_a_resume_records_its_own_host_load(busy_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(busy_run[0], run)
    config = sweep.SweepConfig(**store.read_env(run)["sweep"])
    readings = iter([(0.1, 0.1, 0.1), (0.2, 0.2, 0.2)])
    sweep.run_sweep(config, run, resume=True, quiet=True, loadavg=lambda: next(readings))
    env = store.read_env(run)
    assert env["host_load"]["start"][1] == 1.0  # the first session's, kept
    assert env["resumes"][-1]["host_load"]["start"] == [0.1, 0.1, 0.1]
    assert env["resumes"][-1]["host_load"]["end"] == [0.2, 0.2, 0.2]


def test_every_ok_record_has_the_token_level_figures_and_the_threads_used(busy_run):
    (record,) = store.records(busy_run[0])
    assert record.status == "ok" and record.settings.threads == 1
    assert record.throughput.decode_tokens_per_s is None or record.throughput.decode_tokens_per_s > 0
    per_token = record.per_token_ms
    assert set(per_token.to_dict()) == {"p50", "p90", "p99", "n", "basis"} and per_token.n >= 0
    assert record.timing.load_s > 0 and record.timing.first_call_ms > 0
    roof = record.extra.roofline
    assert roof.matmul_gflops_per_s == max(roof.matmul_gflops_before, roof.matmul_gflops_after)
    assert isinstance(record.to_dict()["flags"], list)
    frame = store.load(busy_run[0])  # flattened for notebooks
    assert {"per_token_ms.p50", "throughput.decode_tokens_per_s", "timing.load_s", "timing.first_call_ms",
            "settings.threads", "flags"} <= set(frame.columns)


def test_the_report_shows_the_busy_run_and_the_token_columns(busy_run, tmp_path):
    from bench.report.report import build_report

    html = build_report([busy_run[0]], tmp_path / "r.html").read_text()
    assert '<th>host load</th><td class="suspect">1-min load' in html and "(busy at start" in html
    assert ">decode tok/s</th>" in html and "load s / first call ms" in html
    assert "bad reference" not in html
    record = store.records(busy_run[0])[0].to_dict()
    record["flags"] = [{"code": "roofline-bad-reference", "message": "1.36x the reference"}]
    record["extra"]["roofline"]["fraction"] = None
    flagged = tmp_path / "flagged"
    store.append(flagged, store.Record.from_dict(record))
    store.write_env(flagged, store.read_env(busy_run[0]))
    assert "bad reference" in build_report([flagged], tmp_path / "f.html").read_text()  # the all-cells data block


def test_records_without_the_new_fields_still_load_and_bad_flags_are_skipped(busy_run, tmp_path):
    record = store.records(busy_run[0])[0].to_dict()
    old = {k: v for k, v in record.items() if k not in ("flags", "per_token_ms")}
    old["throughput"] = {k: v for k, v in record["throughput"].items() if k != "decode_tokens_per_s"}
    old["timing"] = {k: v for k, v in record["timing"].items() if k not in ("load_s", "first_call_ms", "cold")}
    bad = {**record, "cell_id": "bad", "flags": ["not a table"]}
    (tmp_path / store.RESULTS).write_text("\n".join(json.dumps(r) for r in (old, bad)) + "\n")
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        records = store.records(tmp_path)
    assert [r.cell_id for r in records] == [record["cell_id"]]
    with pytest.warns(UserWarning):
        assert len(store.load(tmp_path)) == 1
