"""Server (MLPerf-style): single-image requests arrive at random times; a dynamic batcher serves them.

What it answers: at a given load (requests per second), what do requests wait, p50 to p99, queueing
included; and with ``qps = "auto"``, the highest load whose chosen percentile (p99) stays within a bound
(``bench.scenarios.capacity``).

- Arrivals: a Poisson process at the target rate, generated ahead from a seed (so the load generator
  cannot lag and a run is reproducible). ``n`` requests are placed in a window of ``n / qps``
  seconds: exponential gaps, scaled so the window holds exactly ``n`` (a Poisson process conditioned
  on its count), which makes the offered rate exactly the target.
- Dynamic batcher, one model (``bench.scenarios.batcher``): whenever the model is free, it takes the
  waiting requests, up to the cell's batch size. With fewer waiting than that, it waits for more until
  the oldest waiting request has waited ``max_queue_delay_ms`` (or no more requests will come), then
  takes what is there.
- Per request: latency = completion (``run_batch`` returned, after the device synchronised) minus its
  *scheduled* arrival, so queueing and any lag of the server count.
- Validity, MLPerf's rules (LoadGen ``results.cc``): the schedule lasted ``min_duration_s``, the run
  served ``min_requests``, and, with a latency bound, early stopping passes for the chosen percentile
  (``bench.core.stats.early_stopping_met``). Each run is sized to the requests early stopping needs with
  none over the bound; one that cannot be that long within ``max_duration_s`` says so.
- Reported, never judged: scheduled QPS (requests / the schedule's window: the offered rate), completed
  QPS (requests / the last completion) and achieved QPS (requests / ``duration_s``, the window or the
  last dispatch, whichever is later; the cell's ``images_per_s``).
- With ``prefetch``, each request is prepared (decode, tokens, pixels, copy) at its scheduled arrival by
  a pool of ``prep_workers`` threads, while the model serves earlier requests; at dispatch the batch is
  collated from the prepared requests (waiting for any not ready yet) and executed. Latency keeps its
  meaning.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.accuracy.prefetch import ScheduledPreparer
from bench.backends.base import BatchResult
from bench.core.errors import UsageError
from bench.core.measure import summarize
from bench.core.stats import early_stopping_estimate, early_stopping_met, percentile_ci, queries_needed
from bench.results import CurveStep, EarlyStopping, LoadGen, Throughput, plausibility
from bench.results import Server as ServerTable
from bench.results.server_settings import percentile_name
from bench.scenarios import capacity, predict
from bench.scenarios.base import (
    FirstAnswers,
    Measurement,
    ScenarioInput,
    ServerSettings,
    Tracking,
    batch_figures,
    per_image_ms,
    run_batches,
    stats,
    token_figures,
)
from bench.scenarios.batcher import Batcher
from bench.scenarios.traits import ScenarioTraits

KEPT_UP = 0.95  # achieved / target QPS above which a run kept up (the search's stop rule only; not validity)
PERCENTILE_CI = 0.95  # confidence of server.percentile_ci_ms and of the curve's intervals
EXTENSIONS = 2  # how often a load is run again, longer, for the requests its over-bound count needs
MIN_STEP_BATCHES = 5  # a step's batches of one size that stand for that size in its re-prediction
QUEUE_SLACK_S = 0.001  # a wait this much past the batching delay is queueing (not the timer's own lateness)
LATENCY_BASIS = ("request latency = completion - scheduled arrival (Poisson schedule), queueing included; "
                 "one sample per request")


def arrival_schedule(qps: float, n: int, seed: int) -> np.ndarray:
    """``n`` arrival times (s, ascending) of a Poisson process at ``qps``, conditioned on ``n`` arrivals in
    ``n / qps`` seconds: exponential gaps, the ``n + 1``-th closing the window, scaled to its length."""
    gaps = np.random.default_rng(seed).exponential(1.0, n + 1)
    return np.cumsum(gaps)[:n] * ((n / qps) / gaps.sum())


def run_size(qps: float, settings: ServerSettings, n_samples: int, at_least: int = 0) -> tuple[int, str | None]:
    """How many requests a run at ``qps`` has, and why it is too short (None: long enough).

    Enough for the minimum count and duration, for early stopping with none over the bound (or with the
    count over it that an earlier run at this load saw: ``at_least``), and to show every image once; at
    most ``max_requests`` and ``qps x max_duration_s``."""
    needed = max(settings.requests_needed(), math.ceil(qps * settings.min_duration_s), at_least)
    fits = min(settings.max_requests, math.floor(qps * settings.max_duration_s))
    if needed > fits:
        return max(1, fits), (f"a run needs {needed} requests (min_requests, min_duration_s and "
                              f"{_percentile_words(settings)}), which at {qps:.4g} QPS do not fit max_duration_s "
                              f"{settings.max_duration_s:g} s and max_requests {settings.max_requests}")
    return min(max(needed, n_samples), fits), None


def _percentile_words(settings: ServerSettings) -> str:
    return f"early stopping for p{settings.latency_percentile * 100:g} at {settings.confidence:g} confidence"


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
    latency_percentile: float = 0.99
    confidence: float = 0.99
    too_short: str | None = None  # why the run could not be as long as its percentile needs
    valid: bool = True
    invalid_reason: str | None = None
    loadgen: LoadGen | None = None  # LoadGen's verdict and figures, when it generated the load
    # the rate the load generator's schedule offered, when it is not the target by construction (LoadGen's
    # scheduled samples per second: its schedule is its own)
    offered_qps: float | None = None
    final: bool = False  # a capacity's final run (``ServerSettings.final_min_duration_s``)
    # the capacity predicted again from this run's own batch times (a predicted search's guide; None: not made)
    repredicted_qps: float | None = None
    latencies_ms: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.latencies_ms = ((self.completions_s - self.arrivals_s) * 1000.0).tolist()

    @property
    def n_requests(self) -> int:
        return len(self.arrivals_s)

    @property
    def duration_s(self) -> float:
        """From the window's start to its end or to the last request's dispatch, whichever is later."""
        return max(self.scheduled_s, float(self.dispatches_s.max()))

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
    def scheduled_s(self) -> float:
        """The schedule's window: ``n`` arrivals at the offered rate."""
        return self.n_requests / self.scheduled_qps

    @property
    def scheduled_qps(self) -> float:
        """The offered rate: requests / the schedule's window (the builtin's: the target, by construction;
        LoadGen's: its scheduled samples per second, which can fall short of the target)."""
        return self.offered_qps if self.offered_qps else self.target_qps

    @property
    def completed_qps(self) -> float:
        """Requests / the last completion (LoadGen's "completed samples per second" counts the same way)."""
        return self.n_requests / self.wall_s

    @property
    def achieved_qps(self) -> float:
        """Requests / ``duration_s`` (reported as the cell's ``images_per_s``; never a validity rule)."""
        return self.n_requests / self.duration_s

    @property
    def kept_up(self) -> bool:
        """The server took requests in about as fast as they came: the capacity search reads a slow
        fastest request as an unreachable bound only then (a backlog delays every request)."""
        return self.achieved_qps >= self.target_qps * KEPT_UP

    @property
    def overlatency(self) -> int | None:
        """Requests over the latency bound (None without one)."""
        if self.latency_bound_ms is None:
            return None
        return sum(1 for v in self.latencies_ms if v > self.latency_bound_ms)

    def requests_to_pass(self) -> int | None:
        """The requests early stopping needs for the count over the bound this run saw, when the run failed
        only for being shorter than that while its percentile is within the bound (a longer run at the same
        load can pass); None otherwise."""
        es = self.early_stopping()
        if es.met is not False or self.too_short or self.percentile_ms > (self.latency_bound_ms or 0.0):
            return None
        return es.queries_needed if es.queries_needed is not None and es.queries_needed > self.n_requests else None

    @property
    def percentile_ms(self) -> float:
        """The chosen percentile (``latency_percentile``) of request latency."""
        return self.percentile(self.latency_percentile * 100)

    def percentile_ci_ms(self) -> list[float] | None:
        """The chosen percentile's 95% interval (order statistics), or None when too few. 95%, like the
        record's other intervals: a two-sided 99% interval of p90 would need more than the 44 requests
        that early stopping sizes a p90 run to."""
        ci = percentile_ci(sorted(self.latencies_ms), self.latency_percentile, PERCENTILE_CI)
        return list(ci) if ci else None

    def early_stopping(self) -> EarlyStopping:
        """``server.early_stopping``: MLPerf's rule applied to this run (docs/scenarios.md)."""
        k = self.overlatency
        return EarlyStopping(
            percentile=self.latency_percentile, confidence=self.confidence, queries=self.n_requests, overlatency=k,
            queries_needed=queries_needed(k or 0, self.latency_percentile, self.confidence),
            estimate_ms=early_stopping_estimate(sorted(self.latencies_ms), self.latency_percentile, self.confidence),
            met=None if k is None else early_stopping_met(self.n_requests, k, self.latency_percentile,
                                                          self.confidence))

    @property
    def batch_size_mean(self) -> float:
        return statistics.fmean(len(r.samples) for r in self.results)

    def service_ms(self) -> tuple[float | None, int | None]:
        """How fast the machine served at this load: the median batch time of the most common batch size,
        and that size (with batching the sizes follow the load, so loads compare only at the same size)."""
        if not self.results:
            return None, None
        size, _ = Counter(len(r.samples) for r in self.results).most_common(1)[0]
        return statistics.median(r.batch_ms for r in self.results if len(r.samples) == size), size

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    def step(self) -> CurveStep:
        """This run as one point of a latency-vs-QPS curve (``server.curve``)."""
        ci = self.percentile_ci_ms() or [None, None]
        service_ms, service_batch = self.service_ms()
        return CurveStep(target_qps=self.target_qps, achieved_qps=self.achieved_qps,
                         scheduled_qps=self.scheduled_qps, completed_qps=self.completed_qps,
                         p50=self.percentile(50), p90=self.percentile(90), p99=self.percentile(99),
                         percentile_ms=self.percentile_ms, ci_lo_ms=ci[0], ci_hi_ms=ci[1],
                         overlatency=self.overlatency, n_requests=self.n_requests,
                         batch_size_mean=self.batch_size_mean, service_ms=service_ms,
                         service_batch_size=service_batch, repredicted_qps=self.repredicted_qps,
                         final=self.final, valid=self.valid,
                         invalid_reason=self.invalid_reason)

    def server_field(self, curve: list[CurveStep], bracket: list[float | None] | None = None) -> ServerTable:
        """The record's ``server`` table (through ``from_dict``: a figure that is not finite is None)."""
        return ServerTable.from_dict({"target_qps": self.target_qps, "achieved_qps": self.achieved_qps,
                "scheduled_qps": self.scheduled_qps, "completed_qps": self.completed_qps,
                "n_requests": self.n_requests, "duration_s": self.duration_s, "max_batch_size": self.max_batch_size,
                "max_queue_delay_ms": self.max_queue_delay_ms, "batch_size_mean": self.batch_size_mean,
                "latency_bound_ms": self.latency_bound_ms, "latency_percentile": self.latency_percentile,
                "percentile_ms": self.percentile_ms, "percentile_ci_ms": self.percentile_ci_ms(),
                "early_stopping": self.early_stopping().to_dict(), "capacity_bracket": bracket, "valid": self.valid,
                "invalid_reason": self.invalid_reason, "curve": [step.to_dict() for step in curve]})


def judge(run: ServerRun, settings: ServerSettings) -> ServerRun:
    """Set ``valid`` and ``invalid_reason`` by MLPerf's rules (module docstring)."""
    reasons = []
    if run.too_short:
        reasons.append(run.too_short)
    if run.n_requests < settings.min_requests:
        reasons.append(f"{run.n_requests} requests < the minimum {settings.min_requests}")
    if run.scheduled_s < settings.min_duration_s * (1 - 1e-9):
        reasons.append(f"ran {run.scheduled_s:.1f} s < the minimum {settings.min_duration_s:g} s")
    es = run.early_stopping()
    if es.met is False and not run.too_short:
        reasons.append(f"early stopping not met: {es.overlatency} of {run.n_requests} requests over the bound "
                       f"{settings.latency_bound_ms:g} ms; p{run.latency_percentile * 100:g} at "
                       f"{run.confidence:g} confidence needs {es.queries_needed} requests with that many over "
                       f"(p{run.latency_percentile * 100:g} {run.percentile_ms:.1f} ms)")
    run.valid = not reasons
    run.invalid_reason = "; ".join(reasons) or None
    return run


def prep_workers(settings: ServerSettings, batch_size: int, prepare_ms: float, service_ms: float) -> int:
    """How many threads prepare requests: the setting, or with ``auto`` enough that preparation keeps up
    with the model at its fastest (a full batch per service time), with one to spare:
    ceil(preparation of one request x batch size / service of a full batch) + 1, at most the batch size
    (preparing more than one batch at once gains nothing) and at least 1."""
    if settings.prep_workers != "auto":
        return int(settings.prep_workers)
    if service_ms <= 0:
        return batch_size
    return max(1, min(batch_size, math.ceil(prepare_ms * batch_size / service_ms) + 1))


def serve(run: ScenarioInput, qps: float, first: FirstAnswers | None = None, workers: int = 1,
          at_least: int = 0) -> ServerRun:
    """Serve one Poisson schedule at ``qps`` with the dynamic batcher (at least ``at_least`` requests);
    returns the judged run. With prefetch, ``workers`` threads prepare the requests as they arrive."""
    settings = run.server
    assert settings is not None
    samples, timer, batch_size = run.samples, run.timer, run.batch_size
    size, too_short = run_size(qps, settings, len(samples), at_least)
    arrivals = arrival_schedule(qps, size, settings.seed)
    n, batcher = len(arrivals), Batcher(batch_size, settings.max_queue_delay_ms / 1000.0)
    dispatches, completions = np.empty(n), np.empty(n)
    results: list[BatchResult] = []
    waiting: deque[int] = deque()
    arrived = done = 0
    start = timer.now()
    due = start + arrivals  # absolute times, compared with the timer's own readings (no rounding gap)
    preparer = None
    if run.prefetch:  # each request prepared at its arrival, while the model serves earlier ones
        preparer = ScheduledPreparer(run.pipeline.prepare, [[samples[k % len(samples)]] for k in range(n)],
                                     due.tolist(), timer.sleep_until, workers)
    try:
        while done < n:
            now = timer.now()
            while arrived < n and due[arrived] <= now:
                waiting.append(arrived)
                arrived += 1
            if not waiting:
                timer.sleep_until(due[arrived])
                continue
            deadline = batcher.wait_until(len(waiting), due[waiting[0]], more_coming=arrived < n)
            if deadline is not None and now < deadline:  # a fuller batch, not past the oldest one's deadline
                timer.sleep_until(min(deadline, due[arrived]))
                continue
            taken = batcher.take(waiting)
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
                           settings.latency_bound_ms, settings.latency_percentile, settings.confidence, too_short),
                 settings)


def _search_flags(served: list[ServerRun], curve: list[CurveStep], bracket: list, capacity_qps: float | None,
                  ceiling: float) -> list[dict[str, str]]:
    """The plausibility flags of a capacity search: above its own offline ceiling, a curve that is not
    monotone, or a speed that changed between the bracket's two ends."""
    signed = any(s.final and s.valid for s in served)  # the valid end is then a final run
    ends = [next((s.step() for s in served if s.target_qps == bracket[0] and s.valid
                  and (s.final or not signed)), None),
            next((s.step() for s in served if s.target_qps == bracket[1] and not s.valid), None)]
    return [f for f in (
        plausibility.capacity_above_offline(capacity_qps, ceiling, "the search's own offline ceiling"),
        plausibility.curve_not_monotone(curve),
        plausibility.bracket_speed_changed(*ends) if all(ends) else None) if f]


def _workers(settings: ServerSettings, run: ScenarioInput, warmed: Sequence[BatchResult]) -> int:
    """Preparation threads for this cell (1 without prefetch): sized from the warm-up's in-line batches,
    which show the preparation and the service of a full batch apart; without a warm-up, the batch size
    (at most the CPU count)."""
    if not run.prefetch:
        return 1
    if settings.prep_workers == "auto" and not warmed:
        return max(1, min(run.batch_size, os.cpu_count() or 1))
    prepare_ms = statistics.median(r.stages_ms.get("preprocess", 0.0) for r in warmed) if warmed else 0.0
    batch_ms = statistics.median(r.batch_ms for r in warmed) if warmed else 0.0
    return prep_workers(settings, run.batch_size, prepare_ms, batch_ms - prepare_ms * run.batch_size)


def offline_images_per_s(run: ScenarioInput, batches: int) -> tuple[float, list[BatchResult]]:
    """A quick closed-loop throughput at the cell's batch size: the ceiling of the capacity search
    (prefetching as the cell does: then images / wall time, since batches overlap), and its batches."""
    results, seconds = run_batches(run.pipeline, run.batches(run.samples, run.batch_size), batches,
                                   prefetch=run.prefetch, now=run.timer.now)
    return sum(len(r.samples) for r in results) / seconds, results


def batch_service_ms(result: BatchResult, prefetch: bool) -> float:
    """What a batch costs the server's model: its wall time, less its preparation when requests are
    prepared at their arrival (prefetch) rather than at dispatch."""
    return result.batch_ms - (result.stages_ms["preprocess"] * len(result.samples) if prefetch else 0.0)


def probe_times(run: ScenarioInput, measured: Sequence[BatchResult], batches: int) -> dict[int, list[float]]:
    """Batch times (ms) per size from the cell's own batches: the ceiling's, after the warm-up, at the cell's
    batch size, plus ``batches`` batches of one after one more to warm that size up, when the cell's is
    larger (partial batches are common at light load)."""
    times = {run.batch_size: [batch_service_ms(r, run.prefetch) for r in measured]}
    if run.batch_size > 1:
        ones, _ = run_batches(run.pipeline, run.batches(run.samples, 1), batches + 1, prefetch=False,
                              now=run.timer.now)
        times[1] = [batch_service_ms(r, run.prefetch) for r in ones[1:]]
    return times


def _predict(run: ScenarioInput, times: dict[int, list[float]]) -> predict.Prediction:
    settings = run.server
    assert settings is not None and settings.latency_bound_ms is not None
    return predict.predict_capacity(times, bound_ms=settings.latency_bound_ms, percentile=settings.latency_percentile,
                                    max_batch=run.batch_size, max_queue_delay_ms=settings.max_queue_delay_ms,
                                    seed=settings.seed)


def predicted_start(run: ScenarioInput, times: dict[int, list[float]]) -> tuple[predict.Prediction, str]:
    """The capacity predicted from the cell's probe batch times (``probe_times``), and where the search starts:
    "predicted" or, without a predicted rate that meets the bound or at which a run can be as long as its
    percentile needs, "ceiling"."""
    prediction = _predict(run, times)
    assert run.server is not None
    usable = prediction.qps is not None and run_size(prediction.qps, run.server, len(run.samples))[1] is None
    return prediction, "predicted" if usable else "ceiling"


def step_times(run: ScenarioInput, probed: dict[int, list[float]], served: ServerRun) -> dict[int, list[float]]:
    """The batch times a re-prediction uses: a step's own at each size it ran ``MIN_STEP_BATCHES`` times or
    more (the machine's speed during the step), the probe's at the other sizes scaled to that speed (the
    ratio of medians at the size both have, the step's most common)."""
    seen: dict[int, list[float]] = {}
    for result in served.results:
        seen.setdefault(len(result.samples), []).append(batch_service_ms(result, run.prefetch))
    common = [size for size in seen if size in probed]
    scale = 1.0
    if common:
        size = max(common, key=lambda k: len(seen[k]))
        scale = statistics.median(seen[size]) / statistics.median(probed[size])
    times = {size: [t * scale for t in v] for size, v in probed.items()}
    return times | {size: v for size, v in seen.items() if len(v) >= MIN_STEP_BATCHES}


def _service_unstable(results: Sequence[BatchResult], cv_threshold: float) -> bool:
    """Noise of the machine, judged on per-image service times of the most common batch size: request
    latencies vary by design here (queueing), and batch sizes vary with the load."""
    modal, _ = Counter(len(r.samples) for r in results).most_common(1)[0]
    times = [per_image_ms(r) for r in results if len(r.samples) == modal]
    return len(times) > 1 and summarize(times, cv_threshold).unstable


class Server:
    """The server scenario; ``serve`` runs one load (subclasses change the load generator, not the rest)."""

    name = "server"
    measures = ("Poisson arrivals at a target QPS, dynamic batching up to the batch size: latency = completion - "
                "scheduled arrival (queueing included); qps auto finds the capacity under a p99 bound")
    traits = ScenarioTraits(
        reads="capacity", statistic="p99", meets_bound=True, latency_per="request", closed_loop=False,
        prefetch=("each request prepared on a background thread at its arrival, batched at dispatch; stage times are "
                  "each stage's own, so they overlap"), percentile_from="latency_percentile")

    def cell_problem(self, batch_size: int) -> str | None:
        return None

    def serve(self, run: ScenarioInput, qps: float, first: FirstAnswers, workers: int = 1) -> ServerRun:
        """One load, judged. A run whose percentile is within the bound but that is too short for the count
        over the bound it saw (MLPerf's early stopping asks more requests as more exceed: p90 needs 44 with
        none over, 64 with one) runs again at the same load, sized to that count, at most ``EXTENSIONS``
        times while it fits ``max_duration_s`` and ``max_requests``: a step never fails for being short.
        The same for every load generator: each runs one load in ``serve_once``."""
        served = self.serve_once(run, qps, first, workers)
        for _ in range(EXTENSIONS):
            needed = served.requests_to_pass()
            if needed is None or run_size(qps, run.server, len(run.samples), needed)[1]:
                break
            served = self.serve_once(run, qps, first, workers, at_least=needed)
        return served

    def serve_once(self, run: ScenarioInput, qps: float, first: FirstAnswers, workers: int = 1,
                   at_least: int = 0) -> ServerRun:
        """One run at ``qps`` of at least ``at_least`` requests, judged (the builtin Poisson schedule)."""
        return serve(run, qps, first, workers, at_least)

    def _search(self, run: ScenarioInput, first: FirstAnswers, workers: int, extra: dict[str, Any]) -> tuple:
        """The capacity search of ``qps = "auto"``: (tracking, representative run, every run, curve, capacity,
        bracket, plausibility flags); its record in ``extra["capacity_search"]``."""
        settings, policy = run.server, run.policy
        probe_batches = max(2, min(policy.min_iterations, 5))
        began = run.timer.now()
        ceiling, probed_batches = offline_images_per_s(run, probe_batches)  # before the trackers, like the warm-up
        prediction, start, probed = None, "ceiling", {}
        if settings.search_start == "predicted":
            probed = probe_times(run, probed_batches, probe_batches)
            prediction, start = predicted_start(run, probed)
        start_qps = prediction.qps if start == "predicted" and prediction is not None else None
        run.note(f"capacity search from {start_qps or ceiling:.4g} QPS ("
                 + (f"{predict.Prediction.BASIS}; " if start_qps else "")
                 + f"offline throughput at batch {run.batch_size}: {ceiling:.4g})")

        def step(qps: float, final: bool = False) -> ServerRun:
            at = dataclasses.replace(run, server=settings.final(qps)) if final else run
            served = self.serve(at, qps, first, workers)
            served.final = final
            if start_qps is not None and not final:  # the next step's guide (bench.scenarios.capacity)
                served.repredicted_qps = _predict(run, step_times(run, probed, served)).qps
            verdict = "valid" if served.valid else f"invalid: {served.invalid_reason}"
            run.note(f"{qps:.4g} QPS{' (final run)' if final else ''}: {served.n_requests} requests, "
                     f"{percentile_name(served.latency_percentile)} {served.percentile_ms:.0f} ms; {verdict}")
            return served

        bracketed: list[float] = []  # when the short search's bracket closed: the first final run starts

        def final(qps: float) -> ServerRun:
            if not bracketed:
                bracketed.append(run.timer.now() - began)
            return step(qps, final=True)

        with Tracking(run.device, run.energy_idle_s) as tracking:
            found = capacity.search(step, ceiling, settings.latency_bound_ms, max_qps=settings.max_qps,
                                    start_qps=start_qps, final_at=final, repredict=lambda s: s.repredicted_qps)
        search_s = run.timer.now() - began
        served = found.steps
        main = found.representative
        curve, capacity_qps, bracket = [s.step() for s in served], found.capacity_qps, list(found.bracket)
        extra["capacity_search"] = {
            "ceiling_qps": ceiling, "precision": capacity.PRECISION, "stop": found.stop_reason,
            "final_min_duration_s": settings.final_min_duration_s,
            "seed": settings.seed,
            "ceiling_from": f"offline throughput at batch {run.batch_size}, {probe_batches} batches in-cell",
            "start": start, "start_qps": found.steps[0].target_qps, "search_s": search_s,
            "bracket_s": bracketed[0] if bracketed else search_s,
            "prediction": None if prediction is None else {**dataclasses.asdict(prediction),
                                                           "basis": predict.Prediction.BASIS}}
        flags = _search_flags(served, curve, bracket, capacity_qps, ceiling)
        return tracking, main, served, curve, capacity_qps, bracket, flags

    def measure(self, run: ScenarioInput) -> Measurement:
        settings = run.server
        if settings is None:
            raise UsageError("the server scenario needs [server] settings; accepted: --server-qps Q or auto")
        policy = run.policy
        warm = run.batches(run.samples, run.batch_size)
        warmed = [run.pipeline.run_batch(next(warm)) for _ in range(policy.warmup)]
        workers = _workers(settings, run, warmed)
        first = FirstAnswers()
        extra: dict[str, Any] = {"prep_workers": workers} if run.prefetch else {}
        flags: list[dict[str, str]] = []
        bracket = None
        if settings.qps == "auto":
            tracking, main, served, curve, capacity_qps, bracket, flags = self._search(run, first, workers, extra)
        else:
            with Tracking(run.device, run.energy_idle_s) as tracking:
                main = self.serve(run, float(settings.qps), first, workers)
            served, curve, capacity_qps = [main], [], None
        n_images = sum(s.n_requests for s in served)
        time_per_image, stages, tokens = batch_figures(main.results, policy.cv_threshold)
        unstable = _service_unstable(main.results, policy.cv_threshold)
        # judged on service times; latency_ms.cv describes the queueing
        latency = stats(main.latencies_ms, policy.cv_threshold, unstable=unstable)
        memory, energy = tracking.fields(n_images, run.weights_bytes)
        per_token, decode_tokens_per_s = token_figures(main.results)
        return Measurement(
            samples_ms=main.latencies_ms,
            latency=latency,
            time_per_image=time_per_image,
            stages_ms=stages,
            throughput=Throughput(images_per_s=main.achieved_qps, tokens_per_s=sum(tokens) / main.duration_s,
                                  wall_s=main.wall_s, decode_tokens_per_s=decode_tokens_per_s),
            memory=memory,
            energy=energy,
            gen_tokens_mean=sum(tokens) / len(tokens),
            iterations=len(main.results),
            latency_basis=LATENCY_BASIS,
            answers=first.answers,
            texts=first.texts,
            unstable=unstable,
            server=main.server_field(curve, bracket),
            capacity_qps=capacity_qps,
            extra=extra,
            per_token_ms=per_token,
            loadgen=main.loadgen,
            flags=flags,
        )
