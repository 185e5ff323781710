"""The metric registry: every metric a scorer returns is declared once, and compare and report read it."""

from __future__ import annotations

import pytest
from test_compare import record, write_run

from bench.accuracy.metrics import METRICS, SCORINGS, TaskScoring, headline_metric, task_scoring
from bench.accuracy.tasks import TASKS
from bench.regression.compare import compare_dirs


def test_every_metric_a_task_produces_is_registered_and_headlines_are_its_first():
    produced = {name for scoring in SCORINGS.values() for name in scoring.metrics} | {"meteor", "spice"}
    assert produced <= set(METRICS)
    for task in TASKS:
        assert headline_metric(task) == task_scoring(task).metrics[0]
    assert headline_metric("<OD>") == "map" and headline_metric("<OCR>") == "cer"
    assert headline_metric("<NOT_A_TASK>") is None
    lower = {name for name, m in METRICS.items() if not m.higher_is_better}
    assert lower == {"cer", "wer"}


def test_a_task_entry_cannot_name_an_unregistered_metric():
    with pytest.raises(ValueError, match="not in the metric registry"):
        TaskScoring(("cider", "made_up"), lambda *a: {}, "text", lambda s: True)


def _verdicts(tmp_path, name: str, base: float, cur: float) -> dict[str, str]:
    samples = [100.0 + i % 5 for i in range(40)]
    b = write_run(tmp_path / f"b-{name}-{cur}", [record("<OCR>", samples, weights="pretrained", accuracy={name: base})])
    c = write_run(tmp_path / f"c-{name}-{cur}", [record("<OCR>", samples, weights="pretrained", accuracy={name: cur})])
    return {r.metric: r.verdict for r in compare_dirs(b, c).rows}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_compare_follows_each_metrics_direction(tmp_path, name):
    """A change of 5 points in the bad direction regresses, in the good direction improves."""
    higher = METRICS[name].higher_is_better
    worse, better = (45.0, 55.0) if higher else (55.0, 45.0)
    assert _verdicts(tmp_path, name, 50.0, worse)[f"accuracy.{name}"] == "regressed"
    assert _verdicts(tmp_path, name, 50.0, better)[f"accuracy.{name}"] == "improved"
    assert _verdicts(tmp_path, name, 50.0, 50.2)[f"accuracy.{name}"] == "unchanged"


def test_a_rise_in_cer_or_wer_is_a_regression_not_an_improvement(tmp_path):
    assert _verdicts(tmp_path, "cer", 10.0, 25.0)["accuracy.cer"] == "regressed"
    assert _verdicts(tmp_path, "wer", 30.0, 12.0)["accuracy.wer"] == "improved"


def test_an_unregistered_metric_gets_no_verdict(tmp_path):
    rows = {r.metric: r for r in compare_dirs(
        write_run(tmp_path / "b", [record("<OCR>", [100.0] * 10, weights="pretrained", accuracy={"mystery": 50.0})]),
        write_run(tmp_path / "c", [record("<OCR>", [100.0] * 10, weights="pretrained", accuracy={"mystery": 10.0})]),
    ).rows}
    assert rows["accuracy.mystery"].verdict == "not-comparable"
    assert "direction unknown" in rows["accuracy.mystery"].note

