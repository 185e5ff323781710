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

import contextlib
import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.data import Sample
from bench.errors import UsageError
from bench.measure import (
    RepetitionPolicy,
    Tracker,
    energy_field,
    energy_tracker,
    memory_field,
    memory_trackers,
    summarize,
)
from bench.pipeline import STAGES, BatchResult
from bench.prefetch import Prefetcher
from bench.stats import queries_needed

TIME_PER_IMAGE_BASIS = "batch wall time / images in the batch (amortised; not what a request waits)"


class BatchRunner(Protocol):
    """What a scenario drives: ``bench.pipeline.Pipeline``, or a fake with a known service time."""

    def run_batch(self, samples: list[Sample]) -> BatchResult: ...


class Timer(Protocol):
    """Host time in seconds. The server scenario schedules requests on it; tests pass a virtual one."""

    def now(self) -> float: ...

    def sleep_until(self, t: float) -> None: ...


class HostTimer:
    """The real clock: ``perf_counter`` and ``sleep``. A request's completion is when ``run_batch``
    returns, which is after the batch's device synchronisation (see ``bench.pipeline``)."""

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


def _setting(default: Any, *, identity: bool | str = True) -> Any:
    return field(default=default, metadata={"identity": identity})


PERCENTILE_DEFAULT = 0.99


@dataclass(frozen=True)
class ServerSettings:
    """The server scenario's settings (TOML ``[server]``; CLI ``--server-qps`` and friends).

    Fields marked ``identity`` say what is measured and are part of the cell id (``"unless-default"``:
    only when not the default, so cell ids from before the setting existed stay valid); the others say
    how long, how sure and with which random schedule, like the repetition policy, and are not.
    """

    qps: float | str | None = _setting(None)  # requests per second, or "auto": the capacity search
    max_queue_delay_ms: float = _setting(5.0)  # how long the batcher waits for a fuller batch
    latency_bound_ms: float | None = _setting(None)  # bound on the chosen percentile (required with "auto")
    latency_percentile: float = _setting(PERCENTILE_DEFAULT, identity="unless-default")  # judged on this one
    confidence: float = _setting(0.99, identity=False)  # early stopping's confidence (MLPerf: 0.99)
    min_duration_s: float = _setting(10.0, identity=False)
    max_duration_s: float = _setting(600.0, identity=False)  # a run needing longer is refused or invalid
    min_requests: int = _setting(8, identity=False)
    max_requests: int = _setting(100_000, identity=False)  # bounds the arrivals generated ahead
    # threads preparing requests as they arrive (with prefetch): a number, or "auto" (sized from the
    # measured preparation and service times, bench.scenarios.server.prep_workers)
    prep_workers: int | str = _setting("auto", identity=False)
    seed: int = _setting(0, identity=False)

    def __post_init__(self) -> None:
        qps = self.qps
        if isinstance(qps, str) and qps != "auto":
            with contextlib.suppress(ValueError):  # not a number: refused below, as given
                object.__setattr__(self, "qps", float(qps))
        if self.qps is None:
            raise UsageError("the server scenario needs a target load; accepted: --server-qps Q (requests/s) "
                             "or --server-qps auto with --latency-bound-ms B (or qps in the sweep's [server])")
        if self.qps != "auto" and not (_number(self.qps) and math.isfinite(self.qps) and self.qps > 0):
            raise UsageError(f"bad server qps {qps!r}; accepted: a finite number > 0 or auto")
        if self.qps == "auto" and self.latency_bound_ms is None:
            raise UsageError("--server-qps auto needs a latency bound: the capacity is the highest load whose "
                             "chosen percentile stays within it; accepted: --latency-bound-ms B (or "
                             "latency_bound_ms in [server])")
        checks = (("max_queue_delay_ms", self.max_queue_delay_ms, 0), ("min_duration_s", self.min_duration_s, 0),
                  ("min_requests", self.min_requests, 1), ("max_requests", self.max_requests, 1),
                  ("max_duration_s", self.max_duration_s, 0))
        for name, value, low in checks:
            if not _number(value) or not math.isfinite(value) or value < low:
                raise UsageError(f"bad server {name} {value!r}; accepted: a finite number >= {low}")
        for name in ("latency_percentile", "confidence"):
            value = getattr(self, name)
            if not _number(value) or not 0 < value < 1:
                raise UsageError(f"bad server {name} {value!r}; accepted: a number between 0 and 1, e.g. 0.99")
        if self.prep_workers != "auto" and not (isinstance(self.prep_workers, int) and not isinstance(
                self.prep_workers, bool) and self.prep_workers >= 1):
            raise UsageError(f"bad server prep_workers {self.prep_workers!r}; accepted: an integer >= 1 or auto")
        if self.latency_bound_ms is not None and not (_number(self.latency_bound_ms) and self.latency_bound_ms > 0
                                                      and math.isfinite(self.latency_bound_ms)):
            raise UsageError(f"bad latency bound {self.latency_bound_ms!r} ms; accepted: a finite number > 0")
        self._check_run_length()

    def _check_run_length(self) -> None:
        """Refuse a run that cannot fit ``max_requests`` and ``max_duration_s`` (before any arrival exists)."""
        if self.min_duration_s > self.max_duration_s:
            raise UsageError(f"server min_duration_s {self.min_duration_s:g} > max_duration_s "
                             f"{self.max_duration_s:g}; accepted: min_duration_s <= max_duration_s")
        needed = self.requests_needed()
        if needed > self.max_requests:
            raise UsageError(f"server runs need {needed} requests (min_requests, or early stopping for "
                             f"p{self.latency_percentile * 100:g} at {self.confidence:g} confidence), over max_requests "
                             f"{self.max_requests}; accepted: a larger max_requests or a lower --latency-percentile")
        if self.qps == "auto":
            return
        qps = float(self.qps)  # type: ignore[arg-type]
        if qps * self.min_duration_s > self.max_requests:
            raise UsageError(f"server qps {qps:g} for min_duration_s {self.min_duration_s:g} s needs "
                             f"{math.ceil(qps * self.min_duration_s)} requests, over max_requests {self.max_requests}; "
                             f"accepted: qps <= {self.max_requests / self.min_duration_s:g}, or a larger max_requests")
        if needed / qps > self.max_duration_s:
            raise UsageError(f"at {qps:g} QPS the {needed} requests a run needs take {needed / qps:.0f} s, over "
                             f"max_duration_s {self.max_duration_s:g}; accepted: qps >= "
                             f"{needed / self.max_duration_s:.3g}, a larger max_duration_s or a lower "
                             "--latency-percentile")

    def requests_needed(self) -> int:
        """The fewest requests of any run: ``min_requests``, and with a bound what early stopping needs
        with none over it (``bench.stats.queries_needed``)."""
        if self.latency_bound_ms is None:
            return self.min_requests
        return max(self.min_requests, queries_needed(0, self.latency_percentile, self.confidence))

    @property
    def max_qps(self) -> float:
        """The highest load whose minimum duration fits ``max_requests`` (the capacity search stays below)."""
        return self.max_requests / self.min_duration_s if self.min_duration_s > 0 else math.inf

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ServerSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UsageError(f"unknown server setting(s) {sorted(unknown)}; accepted: {sorted(known)}")
        return cls(**values)

    def identity(self) -> dict[str, Any]:
        """The settings that say what is measured (part of the cell id)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("identity") is True
                or (f.metadata.get("identity") == "unless-default" and getattr(self, f.name) != f.default)}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    # prepare ahead on a background thread (bench.prefetch): the next batch (closed loop) or each request
    # as it arrives (server); the pipeline then needs prepare/execute/collate besides run_batch
    prefetch: bool = False


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
    flags: list[dict[str, str]] = field(default_factory=list)  # the record's flags (bench.plausibility)


class Scenario(Protocol):
    """One way of presenting requests to the model; registered in ``bench.scenarios.SCENARIOS``."""

    name: str
    measures: str  # one line: what it measures and what latency means in it

    def cell_problem(self, batch_size: int) -> str | None:
        """Why this scenario makes no cell at this batch size (None: it does)."""
        ...

    def measure(self, run: ScenarioInput) -> Measurement: ...


class Tracking:
    """Memory and energy trackers around the measured part of a cell (never its warm-up)."""

    def __init__(self, device: str, idle_s: float) -> None:
        self.memory: list[Tracker] = memory_trackers(device)
        self.energy: Tracker = energy_tracker(device, idle_s=idle_s)

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
        return (memory_field([t.result() for t in self.memory] + [energy], weights_bytes),
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
    """Amortised time-per-image statistics, stage medians and generated-token counts of some batches."""
    time_per_image = summarize([per_image_ms(r) for r in results], cv_threshold).to_dict()
    stages = {s: statistics.median(r.stages_ms[s] for r in results) for s in STAGES}
    tokens = [c for r in results for c in r.new_tokens]
    return time_per_image, stages, tokens
