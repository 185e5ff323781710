"""The question the report answers, stated once: request latency at percentile P within a bound, for a
demand, planned with utilisation headroom, behind an optional quality gate and accuracy floor. Light (no
record reading): the ``report`` command's flags take their defaults from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.inputs import check_bound
from bench.results.server_settings import PERCENTILE_DEFAULT, percentile_name

MAX_UTILISATION_DEFAULT = 0.8
"""Plan devices at most this busy: a queue at 100% utilisation never drains."""

__all__ = ["MAX_UTILISATION_DEFAULT", "PERCENTILE_DEFAULT", "Question", "percentile_name"]


@dataclass(frozen=True)
class Question:
    """What a buyer asks: request latency at ``percentile`` within ``bound_ms`` for ``demand_qps`` images/s,
    planned at ``max_utilisation`` of each device's capacity, with an optional quality gate (share of the
    fp32 reference accuracy) and accuracy floor (on the task's headline metric)."""

    bound_ms: float | None = None
    percentile: float = PERCENTILE_DEFAULT
    demand_qps: float | None = None
    max_utilisation: float = MAX_UTILISATION_DEFAULT
    quality_gate: float | None = None
    accuracy_floor: float | None = None

    def __post_init__(self) -> None:
        """Each value within its range in ``bench.core.inputs.BOUNDS`` (one line naming it, exit 2)."""
        for name, value in (("latency_bound_ms", self.bound_ms), ("latency_percentile", self.percentile),
                            ("demand_qps", self.demand_qps), ("max_utilisation", self.max_utilisation),
                            ("quality_gate", self.quality_gate), ("accuracy_floor", self.accuracy_floor)):
            if value is not None:
                check_bound(name, value)

    @property
    def statistic(self) -> str:
        return percentile_name(self.percentile)

    @property
    def text(self) -> str:
        bound = f"request latency {self.statistic} ≤ {self.bound_ms:g} ms" if self.bound_ms else \
            f"no latency bound (request latency {self.statistic} shown)"
        gate = f"; quality ≥ {self.quality_gate:.0%} of the fp32 reference" if self.quality_gate else ""
        return f"{bound}; planned at ≤ {self.max_utilisation:.0%} utilisation{gate}"
