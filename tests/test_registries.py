"""One entry is one thing: a gate metric on a stored figure is one ``MetricSpec`` (compare, its threshold
flag and history's check read it), and a task is one ``Task`` in ``bench.tasks.TASKS`` (its scoring and
the datasets that score it come with it)."""

from __future__ import annotations

import numpy as np
import pytest

from bench import compare, store
from bench.compare import MetricSpec, compare_dirs, parse_fail_on
from bench.history import detect

SAMPLES = np.linspace(95.0, 105.0, 40)


def _run(run_dir, decode_tokens_per_s: float):
    store.append(run_dir, store.Record(
        cell_id="c", variant="base", checkpoint="tiny", weights="random", task="<CAPTION>",
        dataset="synthetic-smoke", n_images=2, device="cpu", dtype="fp32", batch_size=1, attn="sdpa",
        compile=False, num_beams=1, max_new_tokens=4, samples_ms=SAMPLES.tolist(),
        latency_ms={"p50": 100.0, "p90": 104.0},
        throughput={"images_per_s": 10.0, "decode_tokens_per_s": decode_tokens_per_s}))
    return run_dir


def test_a_gate_metric_on_a_stored_figure_is_one_metric_spec(monkeypatch, tmp_path):
    spec = MetricSpec("decode_tokens_per_s", "ratio", True, 0.10, "tok/s", stored=("throughput", "decode_tokens_per_s"))
    monkeypatch.setitem(compare.METRICS, spec.name, spec)  # the one line
    base, cur = _run(tmp_path / "base", 40.0), _run(tmp_path / "cur", 20.0)
    [row] = [r for r in compare_dirs(base, cur).rows if r.metric == spec.name]
    assert (row.baseline, row.current, row.ratio, row.verdict) == (40.0, 20.0, 0.5, "regressed")
    assert parse_fail_on("decode_tokens_per_s=60%")[spec.name] == 0.6  # its threshold flag
    [row] = [r for r in compare_dirs(base, cur, parse_fail_on("decode_tokens_per_s=60%")).rows if r.metric == spec.name]
    assert row.verdict == "unchanged"
    # history judges it, and checks its stored figure where every other gate metric's is checked
    record = store.read_records(cur)[0]
    assert spec.name in detect.metrics_of(record)
    bad = {**record, "throughput": {"images_per_s": 10.0, "decode_tokens_per_s": -1.0}}
    assert detect.invalid_values(bad) == [
        "decode_tokens_per_s is -1.0: not a positive finite number"]


def test_the_stored_gate_figures_are_where_the_runner_writes_them():
    assert {m: s.stored for m, s in compare.METRICS.items() if s.stored} == {
        "latency_p50": ("latency_ms", "p50"), "latency_p90": ("latency_ms", "p90"),
        "throughput": ("throughput", "images_per_s")}
    record = {"latency_ms": {"p50": 3.0, "p90": 4.0}, "throughput": {"images_per_s": 5.0}}
    assert [compare.point_value(record, m) for m in compare.LATENCY_METRICS] == [3.0, 4.0, 5.0]
    with pytest.raises(KeyError):
        compare.point_value(record, "latency_p99")  # not a gate metric until its MetricSpec says so
