"""The GPU-oriented axes in sweeps: preprocess, prefetch, compile modes, and CUDA out-of-memory."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from sweep_helpers import write_sweep

from bench import cli
from bench.results import store
from bench.run import runner, sweep

OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.50 GiB is free."


def test_cuda_oom_at_a_batch_size_is_skipped_naming_the_memory(tiny_checkpoint, tmp_path, monkeypatch):
    sweep_file = write_sweep(tmp_path / "s.toml", tiny_checkpoint, batch_sizes=[1, 2, 4])
    real_run_cell = runner.run_cell
    tried = []

    def injected(config, cell, loaded, out, **kwargs):
        tried.append(cell.batch_size)
        if cell.batch_size >= 2:
            raise torch.cuda.OutOfMemoryError(OOM)
        return real_run_cell(config, cell, loaded, out, **kwargs)

    monkeypatch.setattr(runner, "run_cell", injected)
    monkeypatch.setattr(runner, "cuda_memory", lambda device: (int(1.5 * 2**30), 80 * 2**30))
    assert cli.main(["run", "--sweep", str(sweep_file), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    records = {r.batch_size: r for r in store.records(tmp_path / "run")}
    assert records[1].status == "ok"
    assert records[2].status == "skipped"
    assert records[2].error == ("CUDA out of memory at batch size 2: tried to allocate 2.00 GiB more; the device "
                                   "has 80.0 GiB in all, 1.5 GiB free after the failure")
    assert records[4].status == "skipped"
    assert records[4].error.startswith("not tried: batch size 4 > 2, which ran out of CUDA memory")
    assert tried == [1, 2]  # a larger batch with the same settings is not attempted


def test_cuda_oom_without_a_readable_device_still_names_the_allocation():
    reason = runner.cuda_oom_reason("cuda", 128, torch.cuda.OutOfMemoryError(OOM))
    assert reason.startswith("CUDA out of memory at batch size 128: tried to allocate 2.00 GiB more; ")
    assert reason.endswith("device capacity unknown") or "GiB in all" in reason


def test_device_preprocess_prefetch_and_graphs_on_cpu(tiny_checkpoint, tmp_path):
    sweep_file = write_sweep(tmp_path / "s.toml", tiny_checkpoint, batch_sizes=[2])
    out = tmp_path / "run"
    args = ["run", "--sweep", str(sweep_file), "--out", str(out), "--quiet", "--cache", "static",
            "--compile", "false,graphs", "--compile-vision", "false", "--preprocess", "host,device",
            "--prefetch", "true"]
    assert cli.main(args) == 0
    records = store.records(out)
    assert len({r.cell_id for r in records}) == 4
    skipped = [r for r in records if r.status == "skipped"]
    ok = [r for r in records if r.status == "ok"]
    assert {r.compile for r in skipped} == {"graphs"} and len(skipped) == 2
    assert all("CUDA only" in r.error for r in skipped)
    assert {r.settings.preprocess for r in ok} == {"host", "device"}
    for r in ok:
        assert r.settings.prefetch is True and r.compile is False
        assert "background thread" in r.timing.prefetch
        n_images = r.timing.iterations * r.batch_size
        assert r.throughput.images_per_s == pytest.approx(n_images / r.throughput.wall_s)
        assert r.stages_ms.preprocess > 0
    device = next(r for r in ok if r.settings.preprocess == "device")
    assert device.timing.preprocess.startswith("uint8 images copied")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--compile", "maybe"], "'maybe'"),
        (["--compile-vision", "fast"], "'fast'"),
        (["--preprocess", "gpu"], "'gpu'"),
        (["--prefetch", "perhaps"], "'perhaps'"),
    ],
)
def test_bad_values_of_the_new_axes_exit_2(args, named, tmp_path, capsys):
    assert cli.main(["run", "--limit", "1", "--out", str(tmp_path / "run"), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "accepted" in err[0]


def test_a_toml_sweep_takes_the_new_axes(tiny_checkpoint, tmp_path):
    path = write_sweep(tmp_path / "s.toml", tiny_checkpoint, compile=[False, True, "graphs"],
                       compile_vision=["graphs"], preprocess=["device"], prefetch=[True, False])
    config = sweep.load_sweep(str(path))
    sweep.validate(config)
    cells = sweep.expand(config)
    assert len(cells) == 6 and {c.compile for c in cells} == {False, True, "graphs"}
    assert all(c.compile_vision == "graphs" and c.preprocess == "device" for c in cells)
    bad = write_sweep(tmp_path / "bad.toml", tiny_checkpoint, compile=["sometimes"])
    with pytest.raises(sweep.UsageError, match="unknown compile 'sometimes'; accepted: false, true, graphs"):
        sweep.validate(sweep.load_sweep(str(bad)))


def test_cell_ids_of_earlier_runs_are_unchanged_by_the_new_axes():
    """At their defaults the new axes leave every id as it was before them (ids computed by the code
    before this change, schema 2, for the smoke sweep in random mode)."""
    config = dataclasses.replace(sweep.load_sweep("smoke"), weights="random")
    cells = sweep.expand(config)
    assert sorted(c.cell_id for c in cells) == ["2c7a6abede8643af", "32d34e968d47cff0", "341b1cbca0f0129d",
                                                "8076fe2f70702fac"]
    for axis, value in (("preprocess", "device"), ("prefetch", True), ("compile_vision", True), ("compile", "graphs"),
                        ("threads", 1)):
        assert dataclasses.replace(cells[0], **{axis: value}).cell_id != cells[0].cell_id


def test_single_stream_with_prefetch_is_skipped_saying_why(tiny_checkpoint, tmp_path):
    sweep_file = write_sweep(tmp_path / "s.toml", tiny_checkpoint, batch_sizes=[1], prefetch=[True])
    assert cli.main(["run", "--sweep", str(sweep_file), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    (record,) = store.records(tmp_path / "run")
    assert record.scenario == "single-stream" and record.status == "skipped"
    assert "single-stream sends a request only when the last completed" in record.error
