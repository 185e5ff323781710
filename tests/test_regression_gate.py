"""The regression gate on the real pipeline: quiet on A/A, and it catches an injected 25% slowdown."""

from __future__ import annotations

import statistics

import pytest

from bench import store
from bench.backends.transformers.pipeline import INJECT_DELAY_ENV
from bench.compare import compare_dirs
from bench.runner import run_cells
from bench.sweep import SweepConfig, expand

SAMPLES = 32  # the gate's power needs ~32 samples per cell at 10% noise (docs/regression.md)


def _run(tiny_checkpoint, out):
    config = SweepConfig(variants=["custom"], model_path=str(tiny_checkpoint), weights="pretrained",
                         tasks=["<CAPTION>"], num_beams=[1], max_new_tokens=4, limit=4, energy_idle_s=0.0,
                         repetition={"warmup": 2, "min_iterations": SAMPLES, "max_iterations": SAMPLES})
    run_cells(config, expand(config), out, quiet=True)
    (record,) = store.read_records(out)
    assert record["status"] == "ok"
    return record


@pytest.mark.slow
def test_aa_never_regresses_and_a_25_percent_slowdown_always_does(tiny_checkpoint, tmp_path, monkeypatch):
    # The first run in a process measured ~13% slower than the following ones here (lazy initialisation,
    # allocator growth); a baseline is never the first run of a cold process, so neither is this one.
    _run(tiny_checkpoint, tmp_path / "process-warm-up")
    for attempt in range(5):
        a = _run(tiny_checkpoint, tmp_path / f"a{attempt}")
        _run(tiny_checkpoint, tmp_path / f"b{attempt}")
        comparison = compare_dirs(tmp_path / f"a{attempt}", tmp_path / f"b{attempt}")
        assert not comparison.regressed, comparison.to_table()

        delay_ms = 0.25 * statistics.median(a["samples_ms"])
        monkeypatch.setenv(INJECT_DELAY_ENV, f"{delay_ms:.3f}")
        slow = _run(tiny_checkpoint, tmp_path / f"slow{attempt}")
        monkeypatch.delenv(INJECT_DELAY_ENV)
        assert slow["timing"]["injected_preprocess_delay_ms"] == pytest.approx(delay_ms, abs=1e-3)
        comparison = compare_dirs(tmp_path / f"a{attempt}", tmp_path / f"slow{attempt}")
        verdicts = {row.metric: row.verdict for row in comparison.rows}
        assert comparison.regressed and verdicts["latency_p50"] == "regressed", comparison.to_table()
