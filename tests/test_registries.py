"""One entry is one thing: a gate metric on a stored figure is one ``MetricSpec`` (compare, its threshold
flag and history's check read it), and a task is one ``Task`` in ``bench.accuracy.tasks.TASKS`` (its scoring and
the datasets that score it come with it)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench.accuracy import metrics
from bench.accuracy.data import DATASETS, synthetic_smoke
from bench.accuracy.tasks import TASKS, Task, get_task, tasks_of
from bench.regression import gates, values
from bench.regression.compare import compare_dirs
from bench.regression.gates import MetricSpec, parse_fail_on
from bench.regression.history import detect
from bench.results import Record, store

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
    spec = MetricSpec("decode_tokens_per_s", "ratio", True, 0.10, "tok/s", stored="throughput.decode_tokens_per_s")
    monkeypatch.setitem(gates.METRICS, spec.name, spec)  # the one line
    base, cur = _run(tmp_path / "base", 40.0), _run(tmp_path / "cur", 20.0)
    [row] = [r for r in compare_dirs(base, cur).rows if r.metric == spec.name]
    assert (row.baseline, row.current, row.ratio, row.verdict) == (40.0, 20.0, 0.5, "regressed")
    assert parse_fail_on("decode_tokens_per_s=60%")[spec.name] == 0.6  # its threshold flag
    [row] = [r for r in compare_dirs(base, cur, parse_fail_on("decode_tokens_per_s=60%")).rows if r.metric == spec.name]
    assert row.verdict == "unchanged"
    # history judges it, and checks its stored figure where every other gate metric's is checked
    record = store.records(cur)[0]
    assert spec.name in detect.metrics_of(record)
    bad = Record.from_dict({**record.to_dict(), "throughput": {"images_per_s": 10.0, "decode_tokens_per_s": -1.0}})
    assert detect.invalid_values(bad) == [
        "decode_tokens_per_s is -1.0: not a positive finite number"]


def test_the_stored_gate_figures_are_where_the_runner_writes_them():
    assert {m: s.stored for m, s in gates.METRICS.items() if s.stored} == {
        "latency_p50": "latency_ms.p50", "latency_p90": "latency_ms.p90", "throughput": "throughput.images_per_s"}
    record = store.Record.from_dict({"cell_id": "c", "status": "ok", "latency_ms": {"p50": 3.0, "p90": 4.0},
                                     "throughput": {"images_per_s": 5.0}})
    assert [values.point_value(record, m) for m in values.LATENCY_METRICS] == [3.0, 4.0, 5.0]
    with pytest.raises(KeyError):
        values.point_value(record, "latency_p99")  # not a gate metric until its MetricSpec says so


def test_a_task_added_to_TASKS_alone_gets_its_scoring_and_datasets(monkeypatch):
    short = dataclasses.replace(TASKS["<CAPTION>"], token="<SHORT_CAPTION>", prompt="Say it short.", random_tokens=8)
    monkeypatch.setitem(TASKS, short.token, short)  # the one entry
    assert metrics.headline_metric(short.token) == "cider" and metrics.task_metrics(short.token) == (
        "cider", "bleu4", "rouge_l")
    by_family = {name: short.token in tasks_of(spec) for name, spec in DATASETS.items()}
    assert by_family["synthetic-smoke"] and by_family["coco-karpathy-test"] and by_family["coco-val2017"]
    assert not any(found for name, found in by_family.items() if name.startswith("refcoco"))  # no captions there
    samples = synthetic_smoke(2)
    assert metrics.usable_samples(short.token, samples) == samples
    scored = metrics.score(short.token, samples, [s.captions[0] for s in samples], java=False)
    assert tuple(scored) == ("cider", "bleu4", "rouge_l") and scored["bleu4"] > 0
    assert get_task(short.token) is short


def test_an_incomplete_task_entry_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match=r"^task <X> names no scoring; accepted: a key of bench.accuracy.metrics.SCORINGS$"):
        Task("<X>", "Say it.", "pure_text", "text", 4, datasets=("captions",))
    with pytest.raises(ValueError, match=r"^task <X>: dataset families \['pets'\]; accepted: one or more of "
                                         r"captions, instances, referring, ocr, region_descriptions"):
        Task("<X>", "Say it.", "pure_text", "text", 4, scoring="captions", datasets=("pets",))
    with pytest.raises(ValueError, match=r"dataset families \[\]"):
        Task("<X>", "Say it.", "pure_text", "text", 4, scoring="captions")
    odd = Task("<ODD>", "Say it.", "pure_text", "text", 4, scoring="made_up", datasets=("captions",))
    monkeypatch.setitem(TASKS, odd.token, odd)
    with pytest.raises(ValueError, match=r"^task <ODD> is scored by 'made_up', which bench.accuracy.metrics.SCORINGS does "
                                         r"not have; accepted: captions, region_description, "):
        metrics.usable_samples(odd.token, synthetic_smoke(1))
