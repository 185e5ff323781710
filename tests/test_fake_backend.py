"""The backend seam holds for a runtime with its own engine: ``tests/fake_backend`` (numpy, three of the
six stages, no transformers model) plus one ``BACKENDS`` entry runs through sweep, record, report and
compare, with nothing else changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_backend.backend import FakeBackend

from bench import cli
from bench.backends.base import STAGES
from bench.backends.registry import BACKENDS
from bench.results import store


@pytest.fixture
def fake(monkeypatch) -> FakeBackend:
    backend = FakeBackend()
    monkeypatch.setitem(BACKENDS, backend.name, backend)  # the one registry line
    return backend


def _sweep(path: Path, batch_sizes: str = "[1, 2]") -> Path:
    path.write_text("\n".join([
        'name = "fake"', 'variants = ["base"]', 'tasks = ["<CAPTION>"]', f"batch_sizes = {batch_sizes}", "num_beams = [1]",
        'backends = ["fake"]', 'weights = "random"', 'dataset = "synthetic-smoke"', "limit = 2",
        "max_new_tokens = 4", "energy_idle_s = 0.0", "examples = 1",
        "[repetition]", "warmup = 1", "min_iterations = 3", "max_iterations = 3", "min_duration_s = 0.0",
    ]) + "\n")
    return path


def test_a_backend_with_its_own_engine_runs_through_sweep_report_and_compare(fake, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "--sweep", str(_sweep(tmp_path / "fake.toml")), "--out", str(out), "--quiet"]) == 0
    records = store.records(out)
    assert [(r.status, r.backend, r.batch_size, r.scenario) for r in records] == [
        ("ok", "fake", 1, "single-stream"), ("ok", "fake", 2, "offline")]
    for r in records:
        assert set(r.stages_ms.to_dict()) == set(fake.stages)  # only the stages this backend times
        assert r.extra.backend_info == {"engine": "numpy", "vocab": 64}
        assert r.extra.roofline is None  # it counts no vision FLOPs: no roofline, never a made-up one
        assert r.gen_tokens_mean == 4 and r.weights == "random" and r.checkpoint == "fake:base"
        assert r.latency_ms.p50 > 0 and r.throughput.images_per_s > 0
        assert r.timing.image_processor is None
        assert all(text.startswith("t") for text in r.extra.texts.values())  # what the engine generated

    assert cli.main(["report", str(out)]) == 0
    assert "fake" in (out / "report.html").read_text()
    capsys.readouterr()
    assert cli.main(["compare", str(out), str(out), "--markdown", str(tmp_path / "summary.md")]) == 0
    assert " 0 regressed" in capsys.readouterr().out
    assert json.loads((out / "env.json").read_text())["sweep"]["backends"] == ["fake"]


def test_without_its_registry_entry_the_fake_backend_is_refused(tmp_path, capsys):
    assert cli.main(["run", "--sweep", str(_sweep(tmp_path / "fake.toml")), "--out", str(tmp_path / "run")]) == 2
    assert "unknown backend 'fake'" in capsys.readouterr().err


def test_a_backend_that_times_other_stages_than_it_declares_fails_its_cell(monkeypatch, tmp_path):
    backend = FakeBackend()
    backend.stages = STAGES  # declares all six, times three
    monkeypatch.setitem(BACKENDS, backend.name, backend)
    out = tmp_path / "run"
    assert cli.main(["run", "--sweep", str(_sweep(tmp_path / "fake.toml", "[1]")), "--out", str(out), "--quiet"]) == 1
    [record] = store.records(out)
    assert record.status == "error" and record.error == (
        "RuntimeError: backend fake timed stages preprocess, decode, postprocess; it declares "
        "preprocess, vision, ttft, per_token, decode, postprocess")
