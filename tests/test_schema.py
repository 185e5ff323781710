"""Version-1 run directories (the committed smoke baseline was written before request latency) are read
converted to schema 2, labelled; pairing one with a version-2 run, or resuming one, is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import cli
from bench.core.errors import UsageError
from bench.regression.compare import compare_dirs
from bench.report import report
from bench.results import store
from bench.results.schema import SCHEMA_VERSION
from bench.run import sweep

# a copy of reports/baselines/smoke-cpu as committed before schema 2 (the baseline itself gets regenerated)
V1_RUN = Path(__file__).parent / "fixtures" / "schema1-smoke-cpu"


def _raw(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / store.RESULTS).read_text().splitlines() if line.strip()]


def _write(run: Path, records: list[dict]) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / store.RESULTS).write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


@pytest.fixture
def v1(tmp_path) -> Path:
    """The schema-1 smoke baseline plus one offline batch-4 cell made from its first record."""
    run = tmp_path / "v1"
    shutil.copytree(V1_RUN, run)
    records = _raw(run)
    assert {r["schema"] for r in records} == {1}
    offline = {**records[0], "cell_id": "offline-v1-cell", "batch_size": 4, "scenario": "offline"}
    return _write(run, [*records, offline])


def test_a_v1_directory_is_read_in_the_v2_meaning_and_labelled(v1):
    raw = {r["cell_id"]: r for r in _raw(v1)}
    records = [r.to_dict() for r in store.records(v1)]  # compared key by key with the stored v1 JSON
    assert len(records) == len(raw)
    for r in records:
        old = raw[r["cell_id"]]
        batch = old["batch_size"]
        assert r["schema"] == SCHEMA_VERSION and r["extra"]["converted_from_schema"] == 1
        assert r["time_per_image_ms"] == old["latency_ms"]  # the v1 figure was the amortised one
        for key in ("mean", "std", "p50", "p90", "p99", "ci95_low", "ci95_high"):
            assert r["latency_ms"][key] == pytest.approx(batch * old["latency_ms"][key])
        assert r["latency_ms"]["n"] == old["latency_ms"]["n"] and r["latency_ms"]["cv"] == old["latency_ms"]["cv"]
        assert r["samples_ms"] == pytest.approx([batch * s for s in old["samples_ms"]])
        assert r["server"] is None and r["capacity_qps"] is None
        assert "converted from schema 1" in r["timing"]["latency"] and r["timing"]["stages_basis"]
    offline = next(r for r in records if r["cell_id"] == "offline-v1-cell")
    assert offline["latency_ms"]["p50"] == pytest.approx(4 * offline["time_per_image_ms"]["p50"])


def test_load_export_and_report_read_a_v1_directory(v1, tmp_path):
    frame = store.load(v1)
    assert (frame["extra.converted_from_schema"] == 1).all()
    assert (frame["latency_ms.p50"] >= frame["time_per_image_ms.p50"]).all()
    exported = store.export(v1, tmp_path / "x.csv").read_text()
    assert "time_per_image_ms.p50" in exported.splitlines()[0]
    assert report.build_report([v1], tmp_path / "r.html").is_file()


def test_compare_pairs_v1_with_v1_but_refuses_v1_with_v2(v1, tmp_path, capsys):
    comparison = compare_dirs(v1, v1)
    assert comparison.rows and not comparison.regressed
    v2 = [{**r, "schema": 2, "cell_id": r["cell_id"] + "-v2", "extra": {}} for r in (r.to_dict() for r in store.records(v1))]
    current = _write(tmp_path / "v2", v2)
    with pytest.raises(UsageError, match="schema-1"):
        compare_dirs(v1, current)
    assert cli.main(["compare", str(v1), str(current)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "baseline" in err[0] and "accepted" in err[0]


def test_resuming_a_v1_directory_is_refused(v1, tiny_checkpoint, tmp_path):
    from sweep_helpers import write_sweep

    config = sweep.load_sweep(str(write_sweep(tmp_path / "s.toml", tiny_checkpoint)))
    with pytest.raises(UsageError, match="schema-1"):
        sweep.run_sweep(config, v1, resume=True, quiet=True)


def test_an_unknown_schema_is_refused_naming_it(tmp_path):
    run = _write(tmp_path / "future", [{"cell_id": "x", "schema": 3, "status": "ok"}])
    with pytest.raises(UsageError, match="schema 3"):
        store.records(run)
