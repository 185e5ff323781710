"""Overlap: the Prefetcher prepares batch k+1 while batch k runs; stage times stay honest."""

from __future__ import annotations

import threading
import time

import pytest
from scenario_fakes import SleepPipeline

from bench.accuracy.data import synthetic_smoke
from bench.accuracy.prefetch import Prefetcher
from bench.accuracy.tasks import get_task
from bench.backends.base import GenerationSettings
from bench.backends.transformers.pipeline import TransformersPipeline
from bench.core.measure import CpuClock, RepetitionPolicy
from bench.scenarios import ScenarioInput, ServerSettings, get_scenario

PREPARE_S = EXECUTE_S = 0.08  # sleeps release the GIL, as image decoding and waiting on a GPU do


def test_items_come_back_in_order_prepared_one_ahead_on_another_thread():
    threads, started = set(), []

    def prepare(item: int) -> int:
        threads.add(threading.current_thread().name)
        started.append(item)
        return item * 10

    with Prefetcher(prepare, iter(range(5))) as prefetcher:
        first = next(prefetcher)
        deadline = time.monotonic() + 10
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert started == [0, 1]  # item 1 is prepared while the caller holds item 0, and nothing further
        assert [first, *prefetcher] == [0, 10, 20, 30, 40]
    assert threads and all(name.startswith("prefetch") for name in threads)


def test_an_error_while_preparing_reaches_the_caller():
    def prepare(item: int) -> int:
        if item == 1:
            raise ValueError("corrupt image 1")
        return item

    with Prefetcher(prepare, iter(range(3))) as prefetcher:
        assert next(prefetcher) == 0
        with pytest.raises(ValueError, match="corrupt image 1"):
            next(prefetcher)


def test_wall_time_is_the_max_not_the_sum_of_the_stages():
    """Six batches whose two halves take 80 ms each: in line ~960 ms, overlapped ~560 ms."""
    prepare_s, execute_s = [], []

    def prepare(item: int) -> int:
        t = time.perf_counter()
        time.sleep(PREPARE_S)
        prepare_s.append(time.perf_counter() - t)
        return item

    start = time.perf_counter()
    with Prefetcher(prepare, iter(range(6))) as prefetcher:
        for _ in prefetcher:
            t = time.perf_counter()
            time.sleep(EXECUTE_S)
            execute_s.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    stages = sum(prepare_s) + sum(execute_s)  # each stage's own time, as measured where it ran
    assert wall >= sum(execute_s)
    assert wall < 0.75 * stages, (wall, stages)  # in line it would be >= stages


def fake_pipeline(prepare_s: float = PREPARE_S, execute_s: float = EXECUTE_S) -> SleepPipeline:
    """Known service times on the real clock: prepare (per batch) and execute each sleep."""
    return SleepPipeline(prepare_s, execute_s, per_image=False)


@pytest.mark.parametrize("prefetch", [False, True])
def test_offline_throughput_comes_from_wall_time_when_prefetching(prefetch):
    fake = fake_pipeline()
    policy = RepetitionPolicy(warmup=1, min_iterations=6, min_duration_s=0.0, max_iterations=6, cv_threshold=1.0)
    m = get_scenario("offline").measure(ScenarioInput(fake, synthetic_smoke(4), 2, policy, energy_idle_s=0.0,
                                                      prefetch=prefetch))
    assert m.iterations == 6
    own_work = 2 / (PREPARE_S + EXECUTE_S)  # images/s if the two halves ran one after the other
    assert m.stages_ms.preprocess >= PREPARE_S * 1000 / 2  # each stage keeps its own time
    if prefetch:
        assert m.throughput.images_per_s == pytest.approx(12 / m.throughput.wall_s)
        assert m.throughput.images_per_s > 1.35 * own_work
        assert any(name.startswith("prefetch") for name in fake.threads)
        # a batch's requests wait from the start of its preparation: its own work and the batch before it
        assert min(m.samples_ms) >= (PREPARE_S + EXECUTE_S) * 1000
        assert "preparation" in m.latency_basis
    else:
        assert m.throughput.images_per_s < 1.05 * own_work
        assert fake.threads == {threading.current_thread().name}


def test_a_server_prepares_each_request_as_it_arrives():
    """20 requests at 10/s (the seeded Poisson pattern), 70 ms to prepare and 40 ms to execute one. In
    line a request needs 110 ms of a 100 ms mean gap: the queue grows. Prepared at arrival on another
    thread, the two stages overlap and the model keeps up: mean latency measured 173 vs 305 ms here."""
    from bench.scenarios.server import serve

    means = {}
    for prefetch in (False, True):
        fake = fake_pipeline(prepare_s=0.07, execute_s=0.04)
        settings = ServerSettings(qps=10.0, max_queue_delay_ms=0.0, min_duration_s=2.0, min_requests=8)
        policy = RepetitionPolicy(warmup=0, min_iterations=1, min_duration_s=0.0, max_iterations=1,
                                  cv_threshold=1.0)
        run = ScenarioInput(fake, synthetic_smoke(4), 1, policy, energy_idle_s=0.0, server=settings,
                            prefetch=prefetch)
        served = serve(run, 10.0)
        assert served.n_requests == 20 and set(fake.batch_sizes) == {1}
        assert any(name.startswith("prefetch") for name in fake.threads) == prefetch
        means[prefetch] = sum(served.latencies_ms) / served.n_requests
        assert min(served.latencies_ms) >= 110.0  # a request still waits its own preparation and execution
    assert means[True] < 0.75 * means[False], means


def test_a_prepared_batch_executes_to_the_same_outputs(tiny_loaded):
    """prepare on another thread (own processor copy) + execute == run_batch, with honest stage times."""
    generation = GenerationSettings(num_beams=1, max_new_tokens=4, forced=True)
    inline = TransformersPipeline(tiny_loaded, get_task("<OD>"), generation, device="cpu", dtype="fp32", clock=CpuClock())
    ahead = TransformersPipeline(tiny_loaded, get_task("<OD>"), generation, device="cpu", dtype="fp32", clock=CpuClock(),
                     preprocess="device", prefetch=True)
    assert ahead.preprocessor.tokens.processor is not tiny_loaded.processor  # a thread gets its own tokenizer
    samples = synthetic_smoke(4)
    batches = iter([samples[:2], samples[2:]])
    with Prefetcher(ahead.prepare, batches) as prefetcher:
        results = [ahead.execute(prepared) for prepared in prefetcher]
    expected = [inline.run_batch(samples[:2]), inline.run_batch(samples[2:])]
    for got, want in zip(results, expected, strict=True):
        assert got.overlapped and not want.overlapped
        assert got.new_tokens == want.new_tokens == [4, 4]
        assert got.stages_ms["preprocess"] > 0
        assert got.batch_ms == pytest.approx(sum(got.stages_ms[s] for s in ("preprocess", "ttft", "decode",
                                                                               "postprocess")) * 2, rel=0.02)
        assert got.started_s < got.finished_s


@pytest.mark.parametrize("preprocess", ["host", "device"])
def test_requests_prepared_one_by_one_collate_into_the_batch(tiny_loaded, preprocess):
    """A server prepares each request as it arrives; collated, they equal the batch prepared at once."""
    import torch

    from bench.accuracy.data import synthetic_smoke

    pipeline = TransformersPipeline(tiny_loaded, get_task("<CAPTION_TO_PHRASE_GROUNDING>"),
                        GenerationSettings(num_beams=1, max_new_tokens=2, forced=True), device="cpu", dtype="fp32",
                        clock=CpuClock(), preprocess=preprocess)
    samples = synthetic_smoke(3)
    whole = pipeline.prepare(samples)
    assert (whole.inputs["attention_mask"] == 0).any()  # prompts of different lengths: padding is exercised
    parts = [pipeline.prepare([s]) for s in samples]
    collated = pipeline.collate(parts)
    assert collated.samples == samples
    for key in ("input_ids", "attention_mask", "pixel_values"):
        assert torch.equal(collated.inputs[key], whole.inputs[key]), key
    assert collated.prepare_ms == pytest.approx(sum(p.prepare_ms for p in parts))
    assert collated.started_s == parts[0].started_s
    assert pipeline.execute(collated).new_tokens == [2, 2, 2]
