"""Fakes for driving scenarios deterministically: a virtual timer and a pipeline of known service time."""

from __future__ import annotations

from collections.abc import Callable

from bench.backends.transformers.pipeline import STAGES, BatchResult
from bench.data import Sample
from bench.measure import RepetitionPolicy
from bench.scenarios import ScenarioInput, ServerSettings


class VirtualTimer:
    """Time that moves only when the fake model works or the scenario sleeps."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep_until(self, t: float) -> None:
        self.t = max(self.t, t)


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
        return BatchResult(stages, batch_ms / n, batch_ms, [4] * n, [f"text {s.image_id}" for s in samples],
                           [f"answer {s.image_id}" for s in samples], list(samples))


SAMPLES = [Sample(image_id=i, width=32, height=32) for i in range(4)]
POLICY = RepetitionPolicy(warmup=0, min_iterations=20, min_duration_s=0.0, max_iterations=20, cv_threshold=0.1)


def scenario_input(service_s: Callable[[int], float], batch_size: int = 1,
                   server: ServerSettings | None = None) -> tuple[ScenarioInput, FakePipeline]:
    timer = VirtualTimer()
    pipeline = FakePipeline(timer, service_s)
    run = ScenarioInput(pipeline, SAMPLES, batch_size, POLICY, energy_idle_s=0.0, server=server, timer=timer)
    return run, pipeline
