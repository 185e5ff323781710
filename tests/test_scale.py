"""bench.tools.scale's synthetic runs (not the benchmark itself, which is ``nox -s scale``): built from a real
run's typed records, every record written is read back by the store and by the history, axes as asked and
timings scaled."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import shutil
import sys
from pathlib import Path

import pytest

from bench.regression.history import entries
from bench.results import Record, samples, store
from bench.tools import scale

# a real tiny run with single-stream, offline and server cells (docs: the predicted-capacity evidence)
SOURCE = Path(__file__).resolve().parents[1] / "reports/evidence/predicted-capacity-quiet/runs/a-p90"


@pytest.fixture(scope="module")
def source():
    return scale.templates(SOURCE)


def test_templates_are_one_ok_record_per_scenario_without_examples(source, tmp_path):
    templates, env = source
    assert set(templates) == {"single-stream", "offline", "server"}
    assert all(t.status == "ok" and t.scenario == s and t.examples == () for s, t in templates.items())
    assert env == store.read_env(SOURCE)
    lacking = tmp_path / "lacking"
    lacking.mkdir()
    shutil.copy(SOURCE / store.ENV, lacking / store.ENV)
    store.append(lacking, templates["offline"])
    with pytest.raises(SystemExit, match="no ok record of scenario single-stream, server"):
        scale.templates(lacking)


def test_a_synthetic_record_has_its_axes_and_timings_times_the_factor(source):
    server = source[0]["server"]
    cell = scale.Synthetic(machine=2, variant="large", task="<OD>", dtype="bf16", batch_size=8, backend="openvino",
                           scenario="server", num_beams=5)
    made = scale.synth_record(server, cell, 2.0)
    assert (made.variant, made.task, made.dtype, made.batch_size, made.backend, made.scenario, made.num_beams) == (
        "large", "<OD>", "bf16", 8, "openvino", "server", 5)
    assert made.latency_ms.p50 == pytest.approx(2 * server.latency_ms.p50)
    assert made.latency_ms.n == server.latency_ms.n  # counts stay
    assert made.throughput.images_per_s == pytest.approx(server.throughput.images_per_s / 2)
    assert made.capacity_qps == pytest.approx(server.capacity_qps / 2)
    assert list(samples(made)) == pytest.approx([2 * v for v in samples(server)])
    assert made.cell_id != scale.synth_record(server, dataclasses.replace(cell, machine=3), 2.0).cell_id
    assert Record.from_dict(made.to_dict()) == made  # what is written is what every reader reads


def test_write_runs_splits_cells_over_machines_and_every_record_is_read_back(source, tmp_path):
    templates, env = source
    dirs = scale.write_runs(templates, env, 40, tmp_path, seed=1)
    assert [d.name for d in dirs] == [f"machine-{m + 1}" for m in range(scale.MACHINES)]
    read = [r for d in dirs for r in store.records(d)]
    assert len(read) == 40 and len({r.cell_id for r in read}) == 40
    chosen = scale.cells(40)
    assert sorted((r.variant, r.task, r.scenario, r.batch_size) for r in read) == sorted(
        (c.variant, c.task, c.scenario, c.batch_size) for c in chosen)


def test_cells_draw_the_same_settings_as_shuffling_the_whole_product(monkeypatch):
    monkeypatch.setattr(scale, "AXES", {"variant": ["base", "large"], "task": ["<OD>"], "dtype": ["fp32", "fp16", "bf16"],
                                        "batch_size": [1, 2, 4, 8], "backend": ["openvino"], "scenario": ["server"],
                                        "num_beams": [3]})
    monkeypatch.setattr(scale, "MACHINES", 2)
    product = [scale.Synthetic(m, v, "<OD>", d, b, "openvino", "server", 3)
               for m, v, d, b in itertools.product(range(2), *[scale.AXES[a] for a in ("variant", "dtype", "batch_size")])]
    random.Random(7).shuffle(product)
    assert scale.cells(10, seed=7) == product[:10]
    every = scale.cells(48, seed=7)
    assert every == product  # all of it when n is its size
    with pytest.raises(SystemExit, match="49 cells asked for; accepted: at most 48"):
        scale.cells(49)


def test_write_history_writes_entries_the_history_reads(source, tmp_path):
    templates, env = source
    history = scale.write_history(templates, env, 3, 5, tmp_path / "history")
    loaded = entries.load(history)
    assert len(loaded) == 3 and all(len(e.records) == 5 for e in loaded)
    assert all(entries.DROPPED_FIELDS[0] not in r for p in history.glob("run-*.json")
               for r in json.loads(p.read_text())["records"])
    assert len({e.date for e in loaded}) == 3


def test_the_growth_exponent_is_the_slope_from_the_smallest_size_to_the_largest():
    assert scale.exponent([(1000, 2.0), (10_000, 20.0)]) == pytest.approx(1.0)
    assert scale.exponent([(1000, 2.0), (3000, 5.0), (100_000, 200.0)]) == pytest.approx(1.0)
    assert scale.growth({"report": [{"cells": 10, "seconds": 1.0, "cpu_seconds": 1.0},
                                    {"cells": 100, "seconds": 100.0, "cpu_seconds": 10.0}],
                         "compare": [], "export_csv": [], "export_parquet": []}) == {
        "report (seconds)": 2.0, "report (cpu_seconds)": 1.0, "compare (seconds)": None,
        "compare (cpu_seconds)": None, "export_csv (seconds)": None, "export_csv (cpu_seconds)": None,
        "export_parquet (seconds)": None, "export_parquet (cpu_seconds)": None}


def test_unknown_commands_are_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        scale.main(["--commands", "report,plot"])
    assert exc.value.code == 2 and "accepted: a comma-separated subset of report" in capsys.readouterr().err


def test_a_command_s_peak_memory_is_its_own_not_the_tool_s(tmp_path):
    """The tool holds large synthetic runs while it times commands: a command's peak RSS must not count them."""
    held = bytearray(300 * 2**20)
    held[::4096] = b"x" * len(held[::4096])  # touched: resident in this process
    small = scale.timed([sys.executable, "-c", "pass"], tmp_path)
    big = scale.timed([sys.executable, "-c", "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
                      tmp_path)
    assert small["exit_code"] == 0 and big["exit_code"] == 0
    assert small["peak_rss_mib"] < 100 < 200 <= big["peak_rss_mib"] < 300
    assert big["cpu_seconds"] >= 0 and big["seconds"] > 0
    failed = scale.timed([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path)
    assert failed["exit_code"] == 3
    with pytest.raises(RuntimeError, match="could not run"):
        scale.timed(["/nonexistent/command"], tmp_path)
    del held
