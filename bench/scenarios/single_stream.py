"""Single-stream (MLPerf): one request at a time, the next sent when the last completes.

What it answers: how long one image takes when the device serves one user. Latency is the wall time
of a batch of one, first preprocess to last postprocess. Batch size 1 only: a single-stream cell is
made for batch size 1 and for no other size (``bench.run.sweep.expand``).
"""

from __future__ import annotations

from bench.scenarios.base import Measurement, ScenarioInput
from bench.scenarios.closed_loop import closed_loop
from bench.scenarios.traits import ScenarioTraits


class SingleStream:
    name = "single-stream"
    measures = "one request at a time (batch 1): latency = one image's wall time, no queueing"
    traits = ScenarioTraits(reads="latency", statistic="p90", meets_bound=True, latency_per="batch", closed_loop=True,
                            prefetch=None, no_prefetch="single-stream sends a request only when the last completed")

    def cell_problem(self, batch_size: int) -> str | None:
        return None if batch_size == 1 else f"single-stream sends one request at a time (batch {batch_size} asked)"

    def measure(self, run: ScenarioInput) -> Measurement:
        return closed_loop(run)
