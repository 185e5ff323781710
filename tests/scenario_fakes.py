"""Fakes for driving scenarios: a virtual timer and a pipeline of known service time (deterministic), and a
pipeline of known sleeps on the real clock (for the threads that prepare requests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from bench.accuracy.data import Sample
from bench.backends.base import STAGES, BatchResult, Prepared
from bench.core.measure import RepetitionPolicy
from bench.scenarios import ScenarioInput, ServerSettings


class VirtualTimer:
    """Time that moves only when the fake model works or the scenario sleeps."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep_until(self, t: float) -> None:
        self.t = max(self.t, t)


FAKE_TOKENS = 4  # new tokens per image: the first from ttft, then one per decoding step


class FakePipeline:
    """A model whose batch of b images takes exactly ``service_s(b)`` seconds of virtual time."""

    def __init__(self, timer: VirtualTimer, service_s: Callable[[int], float]) -> None:
        self.timer, self.service_s = timer, service_s
        self.batch_sizes: list[int] = []

    def run_batch(self, samples: list[Sample]) -> BatchResult:
        n = len(samples)
        batch_ms = self.service_s(n) * 1000.0
        self.timer.t += batch_ms / 1000.0
        self.batch_sizes.append(n)
        stages = {s: batch_ms / n / len(STAGES) for s in STAGES}
        steps = [stages["decode"] * n / (FAKE_TOKENS - 1)] * (FAKE_TOKENS - 1)  # the decode stage, step by step
        return BatchResult(stages, batch_ms / n, batch_ms, [FAKE_TOKENS] * n, [f"text {s.image_id}" for s in samples],
                           [f"answer {s.image_id}" for s in samples], list(samples), step_ms=steps)


SAMPLES = [Sample(image_id=i, width=32, height=32) for i in range(4)]
POLICY = RepetitionPolicy(warmup=0, min_iterations=20, min_duration_s=0.0, max_iterations=20, cv_threshold=0.1)


def scenario_input(service_s: Callable[[int], float], batch_size: int = 1,
                   server: ServerSettings | None = None) -> tuple[ScenarioInput, FakePipeline]:
    timer = VirtualTimer()
    pipeline = FakePipeline(timer, service_s)
    run = ScenarioInput(pipeline, SAMPLES, batch_size, POLICY, energy_idle_s=0.0, server=server, timer=timer)
    return run, pipeline


class SleepPipeline:
    """Known times on the real clock, for threads: preparing costs ``prepare_s`` per image, executing a
    batch ``execute_s`` whatever its size (a device that serves a batch in the time of one image). Sleeps
    release the GIL, as image decoding and waiting on a GPU do, so prepared requests overlap."""

    def __init__(self, prepare_s: float, execute_s: float, *, per_image: bool = True) -> None:
        self.prepare_s, self.execute_s, self.per_image = prepare_s, execute_s, per_image
        self.threads: set[str] = set()
        self.batch_sizes: list[int] = []

    def prepare(self, samples: list[Sample]) -> Prepared:
        """Sleeps ``prepare_s`` per image (``per_image``) or per batch."""
        started = time.perf_counter()
        self.threads.add(threading.current_thread().name)
        time.sleep(self.prepare_s * (len(samples) if self.per_image else 1))
        return Prepared(list(samples), {}, (time.perf_counter() - started) * 1000, started)

    def collate(self, parts: list[Prepared]) -> Prepared:
        return Prepared([s for p in parts for s in p.samples], {}, sum(p.prepare_ms for p in parts),
                        min(p.started_s for p in parts))

    def execute(self, prepared: Prepared, overlapped: bool = True) -> BatchResult:
        """``overlapped``: prepared ahead while the previous batch ran (as the real pipeline marks it)."""
        t = time.perf_counter()
        time.sleep(self.execute_s)
        execute_ms = (time.perf_counter() - t) * 1000
        n = len(prepared.samples)
        self.batch_sizes.append(n)
        batch_ms = prepared.prepare_ms + execute_ms
        stages = {s: 0.0 for s in STAGES} | {"preprocess": prepared.prepare_ms / n, "ttft": execute_ms / n}
        return BatchResult(stages, batch_ms / n, batch_ms, [1] * n, ["t"] * n, ["a"] * n, prepared.samples,
                           prepared.started_s, time.perf_counter(), overlapped=overlapped)

    def run_batch(self, samples: list[Sample]) -> BatchResult:
        return self.execute(self.prepare(samples), overlapped=False)
