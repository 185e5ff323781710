"""How a scenario's cells are judged and what their figures mean, declared once on the scenario.

Every reader of records (report, its charts and rows, compare, history, targets, the runner, the sweep)
asks a cell's ``ScenarioTraits`` (``bench.scenarios.traits_of(record)``, or ``get_scenario(name).traits``
for a cell) instead of testing the scenario's name, so a new scenario is judged right everywhere by
declaring its traits (docs/scenarios.md, "What a scenario declares").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from bench.core.numbers import is_number
from bench.results import Server
from bench.results.server_settings import percentile_name

READS = ("latency", "throughput", "capacity")
LATENCY_PER = ("request", "batch")


@dataclass(frozen=True)
class ScenarioTraits:
    """What a buyer reads off a scenario's cells, and what their latency and throughput are."""

    reads: str | None = field(metadata={"help": "the question a buyer asks of its cells: latency (of one request "
                                                "at a time), throughput, or capacity (the load sustained within a "
                                                "bound); None for a scenario this version does not know"})
    statistic: str = field(metadata={"help": "the request-latency percentile read and shown for its cells, and "
                                             "judged by a latency bound where one applies (p90, p99)"})
    meets_bound: bool = field(metadata={"help": "whether its cells can meet a request-latency bound (offline: "
                                                "never, every request waits for its whole batch)"})
    latency_per: str = field(metadata={"help": "request: one latency sample per request; batch: one per batch, "
                                               "its wall time, shared by the batch's requests"})
    closed_loop: bool = field(metadata={"help": "the next batch starts when the last ends, so throughput is the "
                                                "device's own rate; else requests arrive at an offered load (the "
                                                "[server] settings) and throughput is that load"})
    prefetch: str | None = field(metadata={"help": "how prefetched work is prepared (the record's timing.prefetch); "
                                                   "None: prefetch does not apply"})
    no_prefetch: str = field(default="", metadata={"help": "why prefetch does not apply (a skipped cell's reason)"})
    percentile_from: str | None = field(default=None, metadata={
        "help": "the key of the record's server table that sets the judged percentile (server.latency_percentile)"})

    def __post_init__(self) -> None:
        if self.reads is not None and self.reads not in READS:
            raise ValueError(f"reads {self.reads!r}; accepted: {', '.join(READS)} or None")
        if self.latency_per not in LATENCY_PER:
            raise ValueError(f"latency_per {self.latency_per!r}; accepted: {', '.join(LATENCY_PER)}")
        if (self.prefetch is None) == (not self.no_prefetch):
            raise ValueError("a scenario says how prefetched work is prepared or why prefetch does not apply")

    @property
    def bound_statistic(self) -> str | None:
        """The request-latency percentile a latency bound judges; None where no bound is ever met."""
        return self.statistic if self.meets_bound else None

    @property
    def throughput_from_latency(self) -> bool:
        """images/s = batch size x 1000 / a latency sample: one sample is a batch's wall time and batches run
        back to back (compare and history recompute throughput from the raw samples only then)."""
        return self.closed_loop and self.latency_per == "batch"

    def with_percentile(self, server: Server | None) -> ScenarioTraits:
        """These traits with the percentile the record's ``server`` table sets (where it sets one)."""
        value = getattr(server, self.percentile_from) if self.percentile_from and server is not None else None
        if not is_number(value) or not 0 < value < 1:
            return self
        return dataclasses.replace(self, statistic=percentile_name(value))


UNKNOWN = ScenarioTraits(reads=None, statistic="p90", meets_bound=False, latency_per="batch", closed_loop=True,
                         prefetch=None, no_prefetch="the scenario is unknown to this version")
"""A record's scenario this version does not know: shown as a closed loop (its latency p90, its throughput),
never within a bound, and never a headline."""
