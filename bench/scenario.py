"""What is measured for a cell: warm-up, then batches until the repetition policy is satisfied.

MLPerf's two scenarios map onto the batch size: ``single-stream`` (batch 1, latency percentiles)
and ``offline`` (batch > 1, throughput in images/s and generated tokens/s). Every batch also yields
answers; the first answer for each image is the one scored, so accuracy covers every image once.
Trackers (memory, energy) wrap the measured iterations only, not the warm-up.

With ``prefetch`` the next batch is prepared on a background thread (``bench.prefetch``) while the
current one runs; stage times stay each stage's own, and throughput is images / wall time.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from bench.data import Sample
from bench.measure import (
    RepetitionPolicy,
    energy_field,
    energy_tracker,
    memory_field,
    memory_trackers,
    summarize,
)
from bench.pipeline import STAGES, BatchResult, Pipeline
from bench.prefetch import Prefetcher


def scenario_name(batch_size: int) -> str:
    return "single-stream" if batch_size == 1 else "offline"


@dataclass
class Measurement:
    """Everything a cell measured, before it becomes a record."""

    samples_ms: list[float]
    stages_ms: dict[str, float]
    latency: dict[str, Any]
    throughput: dict[str, float]
    memory: dict[str, Any]
    energy: dict[str, Any]
    gen_tokens_mean: float
    iterations: int
    answers: dict[int, Any] = field(default_factory=dict)
    texts: dict[int, str] = field(default_factory=dict)
    unstable: bool = False


def _batches(samples: list[Sample], batch_size: int):
    """Endless batches cycling through the samples in order (a batch may wrap around)."""
    i = 0
    while True:
        yield [samples[(i + k) % len(samples)] for k in range(batch_size)]
        i = (i + batch_size) % len(samples)


def measure(pipeline: Pipeline, samples: list[Sample], batch_size: int, policy: RepetitionPolicy,
            device: str, weights_bytes: int | None, energy_idle_s: float = 1.0,
            prefetch: bool = False) -> Measurement:
    """Run warm-up and measured batches; every raw per-image sample is kept."""
    batches = _batches(samples, batch_size)
    if prefetch:
        prefetcher = Prefetcher(pipeline.prepare, batches)
        try:
            return _measure(lambda: pipeline.execute(next(prefetcher)), samples, batch_size, policy, device,
                            weights_bytes, energy_idle_s, wall_throughput=True)
        finally:
            prefetcher.close()
    return _measure(lambda: pipeline.run_batch(next(batches)), samples, batch_size, policy, device, weights_bytes,
                    energy_idle_s, wall_throughput=False)


def _measure(next_batch, samples: list[Sample], batch_size: int, policy: RepetitionPolicy, device: str,
             weights_bytes: int | None, energy_idle_s: float, wall_throughput: bool) -> Measurement:
    for _ in range(policy.warmup):
        next_batch()
    memory = memory_trackers(device)
    energy = energy_tracker(device, idle_s=energy_idle_s)
    energy.start()  # measures idle power first, before the memory spans start
    for tracker in memory:
        tracker.start()
    results: list[BatchResult] = []
    seen: dict[int, Any] = {}
    texts: dict[int, str] = {}
    wall_start = time.perf_counter()
    while policy.should_continue(len(results), time.perf_counter() - wall_start) or len(seen) < len(samples):
        result = next_batch()
        results.append(result)
        for sample, text, answer in zip(result.samples, result.texts, result.answers, strict=True):
            if sample.image_id not in seen:
                seen[sample.image_id] = answer
                texts[sample.image_id] = text
    wall_s = time.perf_counter() - wall_start
    for tracker in memory:
        tracker.stop()
    energy.stop()
    n_images = len(results) * batch_size
    samples_ms = [r.end_to_end_ms for r in results]
    stats = summarize(samples_ms, policy.cv_threshold)
    stages = {s: statistics.median(r.stages_ms[s] for r in results) for s in STAGES}
    tokens = [c for r in results for c in r.new_tokens]
    # prefetched batches overlap, so only the wall time says how long they took together
    total_batch_s = wall_s if wall_throughput else sum(r.batch_ms for r in results) / 1000.0
    return Measurement(
        samples_ms=samples_ms,
        stages_ms=stages,
        latency=stats.to_dict(),
        throughput={"images_per_s": n_images / total_batch_s, "tokens_per_s": sum(tokens) / total_batch_s,
                    "wall_s": wall_s},
        memory=memory_field([t.result() for t in memory] + [energy.result()], weights_bytes),
        energy=energy_field(energy.result(), n_images),
        gen_tokens_mean=statistics.fmean(tokens),
        iterations=len(results),
        answers=seen,
        texts=texts,
        unstable=stats.unstable,
    )
