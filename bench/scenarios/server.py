"""Server (MLPerf-style): single-image requests arrive at random times; a dynamic batcher serves them.

What it answers: at a given load (requests per second), what do requests wait, p50 to p99, queueing
included; and with ``qps = "auto"``, the highest load whose p99 stays within a bound
(``bench.scenarios.capacity``).

- Arrivals: a Poisson process at the target rate, generated ahead from a seed (so the load generator
  cannot lag and a run is reproducible). ``n`` requests are placed in a window of ``n / qps``
  seconds: exponential gaps, scaled so the window holds exactly ``n`` (a Poisson process conditioned
  on its count), which makes the offered rate exactly the target.
- Dynamic batcher, one model: whenever the model is free, it takes the waiting requests, up to the
  cell's batch size. With fewer waiting than that, it waits for more until the oldest waiting request
  has waited ``max_queue_delay_ms`` (or no more requests will come), then takes what is there.
- Per request: latency = completion (``run_batch`` returned, after the device synchronised) minus its
  *scheduled* arrival, so queueing and any lag of the server count.
- Validity (MLPerf's rules, sizes configurable): at least ``min_requests`` requests over at least
  ``min_duration_s``; achieved QPS no more than 5% below the target; p99 within ``latency_bound_ms``
  when one is given. Achieved QPS = requests / ``duration_s``, the time until the window's end or until
  the server took the last request into a batch, whichever is later: a server that keeps up takes each
  request soon after it arrives; one that falls behind takes the last one late. (Counting to the last
  *completion* instead would charge one service time to every run, which a short CPU run cannot afford.)
- With ``prefetch``, each request is prepared (decode, tokens, pixels, copy) on a background thread at
  its scheduled arrival, while the model serves earlier requests; at dispatch the batch is collated from
  the prepared requests (waiting for any not ready yet) and executed. Latency keeps its meaning.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.backends.transformers.pipeline import BatchResult
from bench.errors import UsageError
from bench.measure import summarize
from bench.prefetch import ScheduledPreparer
from bench.scenarios import capacity
from bench.scenarios.base import (
    FirstAnswers,
    Measurement,
    ScenarioInput,
    ServerSettings,
    Tracking,
    batch_figures,
    per_image_ms,
    run_batches,
)

QPS_TOLERANCE = 0.05  # achieved QPS may fall at most this far below the target (MLPerf: the run kept up)
QUEUE_SLACK_S = 0.001  # a wait this much past the batching delay is queueing (not the timer's own lateness)
LATENCY_BASIS = ("request latency = completion - scheduled arrival (Poisson schedule), queueing included; "
                 "one sample per request")


def arrival_schedule(qps: float, n: int, seed: int) -> np.ndarray:
    """``n`` arrival times (s, ascending) of a Poisson process at ``qps``, conditioned on ``n`` arrivals in
    ``n / qps`` seconds: exponential gaps, the ``n + 1``-th closing the window, scaled to its length."""
    gaps = np.random.default_rng(seed).exponential(1.0, n + 1)
    return np.cumsum(gaps)[:n] * ((n / qps) / gaps.sum())


def n_requests(qps: float, settings: ServerSettings, n_samples: int) -> int:
    """Enough requests for the minimum count, the minimum duration, and to show every image once."""
    return max(settings.min_requests, math.ceil(qps * settings.min_duration_s), n_samples)


@dataclass
class ServerRun:
    """One run of the server at one target load, judged against the validity rules."""

    target_qps: float
    arrivals_s: np.ndarray
    dispatches_s: np.ndarray  # when each request was taken into a batch
    completions_s: np.ndarray
    results: list[BatchResult]
    max_batch_size: int
    max_queue_delay_ms: float
    latency_bound_ms: float | None
    valid: bool = True
    invalid_reason: str | None = None
    latencies_ms: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.latencies_ms = ((self.completions_s - self.arrivals_s) * 1000.0).tolist()

    @property
    def n_requests(self) -> int:
        return len(self.arrivals_s)

    @property
    def duration_s(self) -> float:
        """From the window's start to its end or to the last request's dispatch, whichever is later."""
        return max(self.n_requests / self.target_qps, float(self.dispatches_s.max()))

    @property
    def wall_s(self) -> float:
        """From the window's start to the last completion."""
        return float(self.completions_s.max())

    @property
    def queued(self) -> int:
        """Requests that waited for a busy model, beyond the batcher's own wait for a fuller batch."""
        waits = self.dispatches_s - self.arrivals_s
        return int(np.sum(waits > self.max_queue_delay_ms / 1000.0 + QUEUE_SLACK_S))

    @property
    def achieved_qps(self) -> float:
        return self.n_requests / self.duration_s

    @property
    def kept_up(self) -> bool:
        """The server took the requests in as fast as they came (MLPerf's rule: within QPS_TOLERANCE)."""
        return self.achieved_qps >= self.target_qps * (1 - QPS_TOLERANCE)

    @property
    def batch_size_mean(self) -> float:
        return statistics.fmean(len(r.samples) for r in self.results)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    def step(self) -> dict[str, Any]:
        """This run as one point of a latency-vs-QPS curve (``server.curve``)."""
        return {"target_qps": self.target_qps, "achieved_qps": self.achieved_qps, "p50": self.percentile(50),
                "p90": self.percentile(90), "p99": self.percentile(99), "n_requests": self.n_requests,
                "batch_size_mean": self.batch_size_mean, "valid": self.valid, "invalid_reason": self.invalid_reason}

    def server_field(self, curve: list[dict[str, Any]]) -> dict[str, Any]:
        return {"target_qps": self.target_qps, "achieved_qps": self.achieved_qps, "n_requests": self.n_requests,
                "duration_s": self.duration_s, "max_batch_size": self.max_batch_size,
                "max_queue_delay_ms": self.max_queue_delay_ms, "batch_size_mean": self.batch_size_mean,
                "latency_bound_ms": self.latency_bound_ms, "valid": self.valid,
                "invalid_reason": self.invalid_reason, "curve": curve}


def judge(run: ServerRun, settings: ServerSettings) -> ServerRun:
    """Set ``valid`` and ``invalid_reason`` by the rules in the module docstring."""
    reasons = []
    if run.n_requests < settings.min_requests:
        reasons.append(f"{run.n_requests} requests < the minimum {settings.min_requests}")
    if run.duration_s < settings.min_duration_s:
        reasons.append(f"ran {run.duration_s:.1f} s < the minimum {settings.min_duration_s:g} s")
    if not run.kept_up:
        reasons.append(f"achieved {run.achieved_qps:.3g} QPS, more than {QPS_TOLERANCE:.0%} below the target "
                       f"{run.target_qps:.3g} (the server fell behind)")
    p99 = run.percentile(99)
    if settings.latency_bound_ms is not None and p99 > settings.latency_bound_ms:
        reasons.append(f"p99 {p99:.1f} ms > the bound {settings.latency_bound_ms:g} ms")
    run.valid = not reasons
    run.invalid_reason = "; ".join(reasons) or None
    return run


def serve(run: ScenarioInput, qps: float, first: FirstAnswers | None = None) -> ServerRun:
    """Serve one Poisson schedule at ``qps`` with the dynamic batcher; returns the judged run."""
    settings = run.server
    assert settings is not None
    samples, timer, batch_size = run.samples, run.timer, run.batch_size
    arrivals = arrival_schedule(qps, n_requests(qps, settings, len(samples)), settings.seed)
    n, delay_s = len(arrivals), settings.max_queue_delay_ms / 1000.0
    dispatches, completions = np.empty(n), np.empty(n)
    results: list[BatchResult] = []
    waiting: deque[int] = deque()
    arrived = done = 0
    start = timer.now()
    due = start + arrivals  # absolute times, compared with the timer's own readings (no rounding gap)
    preparer = None
    if run.prefetch:  # each request prepared at its arrival, while the model serves earlier ones
        preparer = ScheduledPreparer(run.pipeline.prepare, [[samples[k % len(samples)]] for k in range(n)],
                                     due.tolist(), timer.sleep_until)
    try:
        while done < n:
            now = timer.now()
            while arrived < n and due[arrived] <= now:
                waiting.append(arrived)
                arrived += 1
            if not waiting:
                timer.sleep_until(due[arrived])
                continue
            if len(waiting) < batch_size and arrived < n:
                deadline = due[waiting[0]] + delay_s
                if now < deadline:  # wait for a fuller batch, but not past the oldest request's deadline
                    timer.sleep_until(min(deadline, due[arrived]))
                    continue
            taken = [waiting.popleft() for _ in range(min(batch_size, len(waiting)))]
            dispatches[taken] = now - start
            if preparer is not None:
                result = run.pipeline.execute(run.pipeline.collate(preparer.take(taken)))
            else:
                result = run.pipeline.run_batch([samples[k % len(samples)] for k in taken])
            completions[taken] = timer.now() - start
            done += len(taken)
            results.append(result)
            if first is not None:
                first.add(result)
    finally:
        if preparer is not None:
            preparer.close()
    return judge(ServerRun(qps, arrivals, dispatches, completions, results, batch_size, settings.max_queue_delay_ms,
                           settings.latency_bound_ms), settings)


def offline_images_per_s(run: ScenarioInput, batches: int) -> float:
    """A quick closed-loop throughput at the cell's batch size: the ceiling of the capacity search
    (prefetching as the cell does: then images / wall time, since batches overlap)."""
    results, seconds = run_batches(run.pipeline, run.batches(run.samples, run.batch_size), batches,
                                   prefetch=run.prefetch, now=run.timer.now)
    return sum(len(r.samples) for r in results) / seconds


def _service_unstable(results: Sequence[BatchResult], cv_threshold: float) -> bool:
    """Noise of the machine, judged on per-image service times of the most common batch size: request
    latencies vary by design here (queueing), and batch sizes vary with the load."""
    modal, _ = Counter(len(r.samples) for r in results).most_common(1)[0]
    times = [per_image_ms(r) for r in results if len(r.samples) == modal]
    return len(times) > 1 and summarize(times, cv_threshold).unstable


class Server:
    name = "server"
    measures = ("Poisson arrivals at a target QPS, dynamic batching up to the batch size: latency = completion - "
                "scheduled arrival (queueing included); qps auto finds the capacity under a p99 bound")

    def cell_problem(self, batch_size: int) -> str | None:
        return None

    def measure(self, run: ScenarioInput) -> Measurement:
        settings = run.server
        if settings is None:
            raise UsageError("the server scenario needs [server] settings; accepted: --server-qps Q or auto")
        policy = run.policy
        warm = run.batches(run.samples, run.batch_size)
        for _ in range(policy.warmup):
            run.pipeline.run_batch(next(warm))
        first = FirstAnswers()
        extra: dict[str, Any] = {}
        if settings.qps == "auto":
            probe_batches = max(2, min(policy.min_iterations, 5))
            ceiling = offline_images_per_s(run, probe_batches)  # before the trackers start, like the warm-up
            with Tracking(run.device, run.energy_idle_s) as tracking:
                found = capacity.search(lambda q: serve(run, q, first), ceiling, settings.latency_bound_ms)
            served = found.steps
            main = found.representative
            curve, capacity_qps = [s.step() for s in served], found.capacity_qps
            extra["capacity_search"] = {
                "ceiling_qps": ceiling, "precision": capacity.PRECISION, "stop": found.stop_reason,
                "seed": settings.seed,
                "ceiling_from": f"offline throughput at batch {run.batch_size}, {probe_batches} batches in-cell"}
        else:
            with Tracking(run.device, run.energy_idle_s) as tracking:
                main = serve(run, float(settings.qps), first)
            served, curve, capacity_qps = [main], [], None
        n_images = sum(s.n_requests for s in served)
        time_per_image, stages, tokens = batch_figures(main.results, policy.cv_threshold)
        latency = summarize(main.latencies_ms, policy.cv_threshold).to_dict()
        unstable = _service_unstable(main.results, policy.cv_threshold)
        latency["unstable"] = unstable  # judged on service times; latency_ms.cv describes the queueing
        memory, energy = tracking.fields(n_images, run.weights_bytes)
        return Measurement(
            samples_ms=main.latencies_ms,
            latency=latency,
            time_per_image=time_per_image,
            stages_ms=stages,
            throughput={"images_per_s": main.achieved_qps, "tokens_per_s": sum(tokens) / main.duration_s,
                        "wall_s": main.wall_s},
            memory=memory,
            energy=energy,
            gen_tokens_mean=sum(tokens) / len(tokens),
            iterations=len(main.results),
            latency_basis=LATENCY_BASIS,
            answers=first.answers,
            texts=first.texts,
            unstable=unstable,
            server=main.server_field(curve),
            capacity_qps=capacity_qps,
            extra=extra,
        )
