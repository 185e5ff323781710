"""Offline (MLPerf): all requests are there at the start; batches run back to back.

What it answers: the throughput of a device (images/s, tokens/s) at a batch size. Each image of a
batch of N waits the whole batch, so its request latency is the batch's wall time, N times the
amortised ``time_per_image_ms``. Offline cells are judged on throughput; their latency is reported
so that nobody mistakes the amortised figure for what a request waits.
"""

from __future__ import annotations

from bench.scenarios.base import Measurement, ScenarioInput
from bench.scenarios.closed_loop import closed_loop
from bench.scenarios.traits import ScenarioTraits


class Offline:
    name = "offline"
    measures = "batches back to back: throughput; latency = the batch's wall time (every image waits all of it)"
    traits = ScenarioTraits(
        reads="throughput", statistic="p90", meets_bound=False, latency_per="batch", closed_loop=True,
        prefetch=("the next batch prepared on a background thread while this one runs; throughput = images / wall "
                  "time; stage times are each stage's own, so they overlap"))

    def cell_problem(self, batch_size: int) -> str | None:
        return None

    def measure(self, run: ScenarioInput) -> Measurement:
        return closed_loop(run)
