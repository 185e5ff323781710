"""The regression gate on the real pipeline: quiet on A/A, and it catches an injected 25% slowdown.

A benchmark (``nox -s benchmarks``), not a unit test: two runs of the real pipeline differ by whatever the
machine did between them, so on a shared, busy machine an A/A pair can honestly differ by 30% and the gate
is right to say so. The unit suite proves the gate's statistics on synthetic samples
(``tests/test_compare.py``); this checks them against the real pipeline's noise where the machine is quiet,
and prints the ratios it measured.
"""

from __future__ import annotations

import statistics
import time

import pytest

from bench.backends.transformers.pipeline import TransformersPipeline
from bench.regression.compare import compare_dirs
from bench.results import store
from bench.run.runner import run_cells
from bench.run.sweep import SweepConfig, expand

SAMPLES = 32  # the gate's power needs ~32 samples per cell at 10% noise (docs/regression.md)


def _run(checkpoint, out):
    config = SweepConfig(variants=["custom"], model_path=str(checkpoint), weights="pretrained",
                         tasks=["<CAPTION>"], num_beams=[1], max_new_tokens=4, limit=4, energy_idle_s=0.0,
                         repetition={"warmup": 2, "min_iterations": SAMPLES, "max_iterations": SAMPLES})
    run_cells(config, expand(config), out, quiet=True)
    (record,) = store.records(out)
    assert record.status == "ok"
    return record


def _slower_preprocessing(monkeypatch, delay_s: float) -> None:
    """Each batch's preprocessing takes ``delay_s`` longer: the slowdown injected through the pipeline's
    own seam (its preprocess step), nowhere in the product code."""
    original = TransformersPipeline.preprocess

    def slow(self, samples):
        time.sleep(delay_s)
        return original(self, samples)

    monkeypatch.setattr(TransformersPipeline, "preprocess", slow)


def _p50_ratio(comparison) -> str:
    return ", ".join(f"{row.metric} x{row.ratio:.3f}" for row in comparison.rows if row.metric == "latency_p50")


@pytest.mark.slow
def test_aa_never_regresses_and_a_25_percent_slowdown_always_does(pretrained_tiny_checkpoint, tmp_path):
    # The first run in a process measured ~13% slower than the following ones here (lazy initialisation,
    # allocator growth); a baseline is never the first run of a cold process, so neither is this one.
    _run(pretrained_tiny_checkpoint, tmp_path / "process-warm-up")
    for attempt in range(5):
        a = _run(pretrained_tiny_checkpoint, tmp_path / f"a{attempt}")
        _run(pretrained_tiny_checkpoint, tmp_path / f"b{attempt}")
        comparison = compare_dirs(tmp_path / f"a{attempt}", tmp_path / f"b{attempt}")
        print(f"A/A {attempt}: {_p50_ratio(comparison)}")
        assert not comparison.regressed, comparison.to_table()

        with pytest.MonkeyPatch.context() as patch:
            _slower_preprocessing(patch, 0.25 * statistics.median(a.samples_ms) / 1000.0)
            _run(pretrained_tiny_checkpoint, tmp_path / f"slow{attempt}")
        comparison = compare_dirs(tmp_path / f"a{attempt}", tmp_path / f"slow{attempt}")
        print(f"A/slow {attempt}: {_p50_ratio(comparison)}")
        verdicts = {row.metric: row.verdict for row in comparison.rows}
        assert comparison.regressed and verdicts["latency_p50"] == "regressed", comparison.to_table()
