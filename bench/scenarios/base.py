"""The scenario seam: what a scenario is given, what it returns, and the parts all scenarios share.

A scenario decides *what is measured* for a cell (optimum-benchmark's split): how requests reach
the model, and so what "latency" means. It gets a ``ScenarioInput`` (a pipeline with ``run_batch``,
the samples, the batch size, the repetition policy, a host ``Timer``) and returns a ``Measurement``.
Nothing here knows about Florence-2: tests drive every scenario with a fake pipeline of known
service time and a virtual timer.

Latency always means *request latency*, what one request waits. ``time_per_image`` is the
amortised figure (batch wall time / images in the batch) and is always named so.
"""

from __future__ import annotations

import statistics
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bench.accuracy.data import Sample
from bench.accuracy.prefetch import Prefetcher
from bench.backends.base import STAGES, BatchResult
from bench.core.measure import RepetitionPolicy, summarize
from bench.core.trackers import (
    EnergyTracker,
    Tracker,
    energy_field,
    energy_tracker,
    memory_field,
    memory_trackers,
)
from bench.results import Energy, Memory, PerToken, Server, Stages, Stats, Throughput
from bench.results.server_settings import ServerSettings
from bench.scenarios.traits import ScenarioTraits

TIME_PER_IMAGE_BASIS = "batch wall time / images in the batch (amortised; not what a request waits)"
PER_TOKEN_BASIS = ("one sample per decoding step after the first token (the interval between consecutive next-token "
                   "logits), over the measured batches; a step makes one token for each image of its batch (up to "
                   "{n}), so this is what each image waits per token, not divided by the batch size")


class BatchRunner(Protocol):
    """What a scenario drives: a backend's ``bench.backends.base.Pipeline``, or a fake with a known service time."""

    def run_batch(self, samples: list[Sample]) -> BatchResult: ...


class Timer(Protocol):
    """Host time in seconds. The server scenario schedules requests on it; tests pass a virtual one."""

    def now(self) -> float: ...

    def sleep_until(self, t: float) -> None: ...


class HostTimer:
    """The real clock: ``perf_counter`` and ``sleep``. A request's completion is when ``run_batch``
    returns, which is after the batch's device synchronisation (``bench.backends.base.Pipeline``)."""

    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, t: float) -> None:
        delay = t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


# A source of batches for the closed-loop scenarios.
BatchSource = Callable[[Sequence[Sample], int], Iterator[list[Sample]]]


def cycle_batches(samples: Sequence[Sample], batch_size: int) -> Iterator[list[Sample]]:
    """Endless batches cycling through the samples in order (a batch may wrap around)."""
    i = 0
    while True:
        yield [samples[(i + k) % len(samples)] for k in range(batch_size)]
        i = (i + batch_size) % len(samples)


def run_batches(
    pipeline: BatchRunner, source: Iterator[list[Sample]], n: int, *, prefetch: bool, now: Callable[[], float]
) -> tuple[list[BatchResult], float]:
    """``n`` batches from ``source`` back to back, in line or prepared ahead by a ``Prefetcher`` (the
    pipeline then needs prepare/execute); returns their results and the seconds they took: the sum of
    their batch times in line, the wall time by ``now`` with prefetch (the batches overlap; it ends once
    the prefetcher has stopped)."""
    if not prefetch:
        results = [pipeline.run_batch(next(source)) for _ in range(n)]
        return results, sum(r.batch_ms for r in results) / 1000.0
    start = now()
    with Prefetcher(pipeline.prepare, source) as prefetcher:
        results = [pipeline.execute(next(prefetcher)) for _ in range(n)]
    return results, now() - start


@dataclass
class ScenarioInput:
    """Everything a scenario needs to measure one cell; the model is already loaded in ``pipeline``."""

    pipeline: BatchRunner
    samples: list[Sample]
    batch_size: int
    policy: RepetitionPolicy
    device: str = "cpu"
    weights_bytes: int | None = None
    energy_idle_s: float = 1.0
    server: ServerSettings | None = None
    timer: Timer = field(default_factory=HostTimer)
    batches: BatchSource = cycle_batches
    # prepare ahead on a background thread (bench.accuracy.prefetch): the next batch (closed loop) or each request
    # as it arrives (server); the pipeline then needs prepare/execute/collate besides run_batch
    prefetch: bool = False
    log_dir: Path | None = None  # where a load generator that writes its own logs (LoadGen) puts them
    note: Callable[[str], None] = field(default=lambda line: None)  # a line on a long measurement's progress


@dataclass
class Measurement:
    """Everything a cell measured, before it becomes a record (field names as in the record)."""

    samples_ms: list[float]  # raw request latencies
    latency: dict[str, Any]  # statistics of samples_ms (request latency)
    time_per_image: dict[str, Any]  # statistics of the amortised per-image times
    stages_ms: dict[str, float]
    throughput: dict[str, float]
    memory: dict[str, Any]
    energy: dict[str, Any]
    gen_tokens_mean: float
    iterations: int  # batches measured
    latency_basis: str  # how one request's latency was obtained (goes to ``timing.latency``)
    answers: dict[int, Any] = field(default_factory=dict)
    texts: dict[int, str] = field(default_factory=dict)
    unstable: bool = False
    server: dict[str, Any] | None = None
    capacity_qps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    per_token_ms: dict[str, Any] | None = None  # ``token_figures``
    loadgen: dict[str, Any] | None = None  # LoadGen's verdict and figures (``load_generator = "mlperf"``)
    flags: list[dict[str, str]] = field(default_factory=list)  # the record's flags (bench.results.plausibility)

    def tables(self) -> dict[str, Any]:
        """The record's fields this measurement fills, as typed tables (bench.results): the one place a
        scenario's figures become the record's."""
        return {"samples_ms": array("d", self.samples_ms), "latency_ms": Stats.from_dict(self.latency),
                "time_per_image_ms": Stats.from_dict(self.time_per_image), "stages_ms": Stages.from_dict(self.stages_ms),
                "throughput": Throughput.from_dict(self.throughput), "memory": Memory.from_dict(self.memory),
                "energy": Energy.from_dict(self.energy), "gen_tokens_mean": self.gen_tokens_mean,
                "unstable": self.unstable, "per_token_ms": PerToken.from_dict(self.per_token_ms),
                "server": Server.from_dict(self.server), "capacity_qps": self.capacity_qps}


class Scenario(Protocol):
    """One way of presenting requests to the model; registered in ``bench.scenarios.SCENARIOS``."""

    name: str
    measures: str  # one line: what it measures and what latency means in it
    traits: ScenarioTraits  # how its cells are judged and what their figures mean (bench.scenarios.traits)

    def cell_problem(self, batch_size: int) -> str | None:
        """Why this scenario makes no cell at this batch size (None: it does)."""
        ...

    def measure(self, run: ScenarioInput) -> Measurement: ...


class Tracking:
    """Memory and energy trackers around the measured part of a cell (never its warm-up)."""

    def __init__(self, device: str, idle_s: float) -> None:
        self.memory: list[Tracker] = memory_trackers(device)
        self.energy: EnergyTracker = energy_tracker(device, idle_s=idle_s)

    def __enter__(self) -> Tracking:
        self.energy.start()  # measures idle power first, before the memory spans start
        for tracker in self.memory:
            tracker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for tracker in self.memory:
            tracker.stop()
        self.energy.stop()

    def fields(self, n_images: int, weights_bytes: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The record's ``memory`` and ``energy`` fields."""
        energy = self.energy.result()
        return (memory_field([t.result() for t in self.memory] + [energy.memory()], weights_bytes),
                energy_field(energy, n_images))


class FirstAnswers:
    """The first answer for each image is the one scored, so accuracy covers every image once."""

    def __init__(self) -> None:
        self.answers: dict[int, Any] = {}
        self.texts: dict[int, str] = {}

    def add(self, result: BatchResult) -> None:
        for sample, text, answer in zip(result.samples, result.texts, result.answers, strict=True):
            if sample.image_id not in self.answers:
                self.answers[sample.image_id] = answer
                self.texts[sample.image_id] = text

    def covers(self, samples: Sequence[Sample]) -> bool:
        return all(s.image_id in self.answers for s in samples)


def per_image_ms(result: BatchResult) -> float:
    """The amortised time per image of one batch."""
    return result.batch_ms / len(result.samples)


def batch_figures(results: Sequence[BatchResult], cv_threshold: float) -> tuple[dict[str, Any], dict[str, float],
                                                                                  list[int]]:
    """Amortised time-per-image statistics, stage medians and generated-token counts of some batches.

    The stages are those every batch timed (a backend times its ``stages``, a subset of ``STAGES``)."""
    time_per_image = summarize([per_image_ms(r) for r in results], cv_threshold).to_dict()
    timed = [s for s in STAGES if all(s in r.stages_ms for r in results)]
    stages = {s: statistics.median(r.stages_ms[s] for r in results) for s in timed}
    tokens = [c for r in results for c in r.new_tokens]
    return time_per_image, stages, tokens


def token_figures(results: Sequence[BatchResult]) -> tuple[dict[str, Any], float | None]:
    """The per-token latency distribution (``per_token_ms``) and the decode phase's tokens/s of some
    batches: tokens after each image's first (which ttft makes) over the batches' decode time; None when
    no token came after the first (``max_new_tokens`` 1: there is no decode phase to rate, not a rate of 0)
    or the backend does not time decoding."""
    steps = [s for r in results for s in r.step_ms]
    quantiles = np.percentile(steps, [50, 90, 99]).tolist() if steps else [None] * 3
    batch = max((len(r.samples) for r in results), default=1)
    per_token = {"p50": quantiles[0], "p90": quantiles[1], "p99": quantiles[2], "n": len(steps),
                 "basis": PER_TOKEN_BASIS.format(n=batch)}
    decode_s = sum(r.stages_ms.get("decode", 0.0) * len(r.samples) for r in results) / 1000.0
    tokens = sum(sum(r.new_tokens) - len(r.new_tokens) for r in results)
    return per_token, (tokens / decode_s if decode_s > 0 and tokens > 0 else None)
