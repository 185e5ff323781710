"""Token-level figures: each decoding step timed (per-token latency), decode tokens/s, the cold first call."""

from __future__ import annotations

import pytest
from scenario_fakes import FAKE_TOKENS, scenario_input

from bench.accuracy.data import synthetic_smoke
from bench.accuracy.tasks import get_task
from bench.backends.base import STAGES, BatchResult, GenerationSettings
from bench.backends.transformers.pipeline import TransformersPipeline
from bench.core.measure import CpuClock
from bench.scenarios import ServerSettings, get_scenario
from bench.scenarios.base import token_figures


def _batch(step_ms: list[float], n: int, tokens: int, decode_ms: float) -> BatchResult:
    stages = {s: 0.0 for s in STAGES} | {"decode": decode_ms / n}  # per image, amortised
    return BatchResult(stages, 0.0, decode_ms, [tokens] * n, [""] * n, [None] * n, [None] * n, step_ms=step_ms)


def test_token_figures_known_answer():
    steps = [float(v) for v in range(1, 101)]  # 100 steps: 1..100 ms
    per_token, decode_tps = token_figures([_batch(steps[:50], 2, 51, 1275.0), _batch(steps[50:], 2, 51, 3775.0)])
    assert per_token.n == 100
    assert (per_token.p50, per_token.p90, per_token.p99) == pytest.approx((50.5, 90.1, 99.01))
    assert "up to 2" in per_token.basis and "not divided by the batch size" in per_token.basis
    # 2 batches x 2 images x 50 tokens after the first, over 1.275 + 3.775 s of decoding
    assert decode_tps == pytest.approx(200 / 5.05)


def test_no_decoding_step_gives_no_percentile_and_no_rate():
    per_token, decode_tps = token_figures([_batch([], 1, 1, 0.0)])
    assert per_token.n == 0 and per_token.p50 is None and decode_tps is None


def test_one_new_token_gives_no_decode_rate_even_with_a_decode_time():
    """``--max-new-tokens 1``: the decode stage still takes a moment (the stop check), but no token came
    after the first, so there is no decode rate: null, never 0.0 tokens/s."""
    per_token, decode_tps = token_figures([_batch([], 2, 1, 3.0), _batch([], 2, 1, 2.5)])
    assert decode_tps is None and per_token.n == 0


@pytest.mark.parametrize("scenario", ["single-stream", "offline", "server"])
def test_every_scenario_reports_the_per_token_distribution_and_decode_rate(scenario):
    batch = 1 if scenario == "single-stream" else 2
    server = ServerSettings(qps=2.0, min_duration_s=1.0) if scenario == "server" else None
    run, _ = scenario_input(lambda b: 0.06 * b, batch_size=batch, server=server)
    m = get_scenario(scenario).measure(run)
    # the fake's decode stage is a sixth of its service time, split evenly over FAKE_TOKENS - 1 steps
    step_ms = 60.0 / len(STAGES) / (FAKE_TOKENS - 1)
    assert m.per_token_ms.n > 0
    if scenario != "server":  # server batches vary in size: their steps do too
        step_ms *= batch
        assert m.per_token_ms.p50 == pytest.approx(step_ms) == pytest.approx(m.per_token_ms.p99)
    assert m.throughput.decode_tokens_per_s == pytest.approx(1000.0 / (60.0 / len(STAGES) / (FAKE_TOKENS - 1)))


@pytest.fixture(scope="module")
def forced_pipeline(tiny_loaded):
    generation = GenerationSettings(num_beams=1, max_new_tokens=6, forced=True)
    return TransformersPipeline(tiny_loaded, get_task("<CAPTION>"), generation, device="cpu", dtype="fp32", clock=CpuClock())


def test_the_pipeline_times_each_decoding_step_on_the_tiny_model(forced_pipeline):
    samples = synthetic_smoke()[:2]
    result = forced_pipeline.run_batch(samples)
    assert result.new_tokens == [6, 6]
    assert len(result.step_ms) == 5  # one step per token after the first, for the whole batch
    assert all(s > 0 for s in result.step_ms)
    decode_ms = result.stages_ms["decode"] * len(samples)
    assert sum(result.step_ms) <= decode_ms  # the steps lie inside the decode stage


def test_the_first_call_is_the_pipelines_first_batch_only(tiny_loaded):
    generation = GenerationSettings(num_beams=1, max_new_tokens=3, forced=True)
    pipeline = TransformersPipeline(tiny_loaded, get_task("<CAPTION>"), generation, device="cpu", dtype="fp32", clock=CpuClock())
    assert pipeline.first_call_ms is None
    first = pipeline.run_batch(synthetic_smoke()[:1])
    pipeline.run_batch(synthetic_smoke()[:1])
    assert pipeline.first_call_ms == first.batch_ms


class EventClock:
    """A clock with CUDA events' rules, on the host: marks are read only after a sync, which is counted."""

    def __init__(self) -> None:
        self.syncs, self.pending = 0, 0

    def mark(self) -> dict:
        import time

        self.pending += 1
        return {"t": time.perf_counter(), "synced": False, "clock": self}

    def sync(self) -> None:
        self.syncs += 1
        self.pending = 0

    def elapsed_ms(self, start: dict, end: dict) -> float:
        if self.pending:
            raise RuntimeError("event read before synchronisation")
        return (end["t"] - start["t"]) * 1000.0


def test_step_times_follow_the_device_clocks_rules_one_sync_per_batch(tiny_loaded):
    clock = EventClock()
    generation = GenerationSettings(num_beams=2, max_new_tokens=5, forced=True)
    pipeline = TransformersPipeline(tiny_loaded, get_task("<CAPTION>"), generation, device="cpu", dtype="fp32", clock=clock)
    result = pipeline.run_batch(synthetic_smoke()[:1])
    assert clock.syncs == 1  # the steps add marks, never a synchronisation
    assert len(result.step_ms) == 4 and all(s > 0 for s in result.step_ms)  # beam search: one mark per step
