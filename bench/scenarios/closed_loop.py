"""The closed loop that single-stream and offline both run: the next batch starts when the last ends.

Warm-up batches, then batches until the repetition policy is satisfied and every image has been
seen once (so accuracy covers the whole subset). A batch of N images is N requests that all arrive
when it starts and all complete when it ends, so each request's latency is the batch's wall time
(first preprocess to last postprocess): one latency sample per batch, shared by its N requests.

With ``prefetch`` the next batch is prepared on a background thread while the current one runs: a
batch's requests then wait from the start of its preparation to its completion (which includes
waiting for the batch before it), and throughput is images / wall time, since the stages overlap.
"""

from __future__ import annotations

from bench.accuracy.prefetch import Prefetcher
from bench.backends.base import BatchResult
from bench.results import Throughput
from bench.scenarios.base import (
    FirstAnswers,
    Measurement,
    ScenarioInput,
    Tracking,
    batch_figures,
    stats,
    token_figures,
)

LATENCY_BASIS = ("request latency = the batch's wall time, first preprocess to last postprocess (each of its "
                 "{n} image(s) waits all of it); one sample per batch")
PREFETCH_LATENCY_BASIS = ("request latency = from the start of the batch's preparation (ahead, on a background "
                          "thread) to its completion, waiting for the batch before it included (each of its {n} "
                          "image(s) waits all of it); one sample per batch")


def closed_loop(run: ScenarioInput) -> Measurement:
    """Measure batches back to back; every raw sample is kept."""
    policy, timer = run.policy, run.timer
    batches = run.batches(run.samples, run.batch_size)
    prefetcher = Prefetcher(run.pipeline.prepare, batches) if run.prefetch else None

    def next_result() -> BatchResult:
        if prefetcher is not None:
            return run.pipeline.execute(next(prefetcher))
        return run.pipeline.run_batch(next(batches))

    try:
        for _ in range(policy.warmup):
            next_result()
        results: list[BatchResult] = []
        first = FirstAnswers()
        with Tracking(run.device, run.energy_idle_s) as tracking:
            start = timer.now()
            while policy.should_continue(len(results), timer.now() - start) or not first.covers(run.samples):
                result = next_result()
                results.append(result)
                first.add(result)
            wall_s = timer.now() - start
    finally:
        if prefetcher is not None:
            prefetcher.close()
    n_images = sum(len(r.samples) for r in results)
    # overlapping batches: only the wall time says how long they took together
    busy_s = wall_s if prefetcher is not None else sum(r.batch_ms for r in results) / 1000.0
    time_per_image, stages, tokens = batch_figures(results, policy.cv_threshold)
    request_ms = [(r.finished_s - r.started_s) * 1000.0 if r.overlapped else r.batch_ms for r in results]
    latency = stats(request_ms, policy.cv_threshold)
    memory, energy = tracking.fields(n_images, run.weights_bytes)
    per_token, decode_tokens_per_s = token_figures(results)
    return Measurement(
        samples_ms=request_ms,
        latency=latency,
        time_per_image=time_per_image,
        stages_ms=stages,
        throughput=Throughput(images_per_s=n_images / busy_s, tokens_per_s=sum(tokens) / busy_s, wall_s=wall_s,
                              decode_tokens_per_s=decode_tokens_per_s),
        memory=memory,
        energy=energy,
        gen_tokens_mean=sum(tokens) / len(tokens),
        iterations=len(results),
        latency_basis=(PREFETCH_LATENCY_BASIS if prefetcher is not None else LATENCY_BASIS).format(n=run.batch_size),
        answers=first.answers,
        texts=first.texts,
        unstable=latency.unstable,
        per_token_ms=per_token,
    )

