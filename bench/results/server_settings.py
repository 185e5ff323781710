"""The server scenario's settings: what load it offers, and how long it runs (docs/scenarios.md, "Server").

Apart from the scenarios, which measure (``bench.scenarios``): a cell (``bench.results.cell``) carries these
settings and hashes their identity, and a cell sits below the scenarios in the import graph.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from bench.core.errors import UsageError
from bench.core.numbers import is_finite, is_number
from bench.core.stats import queries_needed


def _setting(default: Any, *, identity: bool | str = True) -> Any:
    return field(default=default, metadata={"identity": identity})


PERCENTILE_DEFAULT = 0.99


def percentile_name(q: float) -> str:
    """0.99 -> "p99", 0.999 -> "p99.9": how the page, the JSON, the records and the progress lines name a
    percentile (one spelling, so a capacity's "judged at" reads the same as the question's)."""
    return f"p{q * 100:.10g}"


# The length of a capacity's final runs (docs/scenarios.md, "Final runs"). At the saturation rate (rho = 1)
# an M/D/1 run of this length passes early stopping with probability below FALSE_ACCEPT_LIMIT, for p90 and
# p99, with a 143 ms service and a bound of 10 service times (tests/test_capacity_holds.py simulates it);
# MLPerf's own server minimum, 600 s, is the reference. The false accept shrinks with duration x service /
# bound^2.
FINAL_MIN_DURATION_S = 120.0
FALSE_ACCEPT_LIMIT = 0.05  # the stated figure: P(valid at rho = 1) below this at the default, p90 and p99
SEARCH_STARTS = ("predicted", "ceiling")


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
    # the capacity's final runs: at least this long, so a run at the saturation rate rarely passes
    final_min_duration_s: float = _setting(FINAL_MIN_DURATION_S, identity=False)
    max_duration_s: float = _setting(600.0, identity=False)  # a run needing longer is refused or invalid
    min_requests: int = _setting(8, identity=False)
    max_requests: int = _setting(100_000, identity=False)  # bounds the arrivals generated ahead
    # threads preparing requests as they arrive (with prefetch): a number, or "auto" (sized from the
    # measured preparation and service times, bench.scenarios.server.prep_workers)
    prep_workers: int | str = _setting("auto", identity=False)
    seed: int = _setting(0, identity=False)
    # where the capacity search starts: "predicted" (bench.scenarios.predict, from the cell's own batch times)
    # or "ceiling" (the offline throughput, halving down: the search before predictions)
    search_start: str = _setting("predicted", identity=False)

    def __post_init__(self) -> None:
        qps = self.qps
        if isinstance(qps, str) and qps != "auto":
            with contextlib.suppress(ValueError):  # not a number: refused below, as given
                object.__setattr__(self, "qps", float(qps))
        if self.qps is None:
            raise UsageError("the server scenario needs a target load; accepted: --server-qps Q (requests/s) "
                             "or --server-qps auto with --latency-bound-ms B (or qps in the sweep's [server])")
        if self.qps != "auto" and not (is_finite(self.qps) and self.qps > 0):
            raise UsageError(f"bad server qps {qps!r}; accepted: a finite number > 0 or auto")
        if self.qps == "auto" and self.latency_bound_ms is None:
            raise UsageError("--server-qps auto needs a latency bound: the capacity is the highest load whose "
                             "chosen percentile stays within it; accepted: --latency-bound-ms B (or "
                             "latency_bound_ms in [server])")
        checks = (("max_queue_delay_ms", self.max_queue_delay_ms, 0), ("min_duration_s", self.min_duration_s, 0),
                  ("final_min_duration_s", self.final_min_duration_s, 0),
                  ("min_requests", self.min_requests, 1), ("max_requests", self.max_requests, 1),
                  ("max_duration_s", self.max_duration_s, 0))
        for name, value, low in checks:
            if not is_finite(value) or value < low:
                raise UsageError(f"bad server {name} {value!r}; accepted: a finite number >= {low}")
        for name in ("latency_percentile", "confidence"):
            value = getattr(self, name)
            if not is_number(value) or not 0 < value < 1:
                raise UsageError(f"bad server {name} {value!r}; accepted: a number between 0 and 1, e.g. 0.99")
        if self.prep_workers != "auto" and not (isinstance(self.prep_workers, int) and not isinstance(
                self.prep_workers, bool) and self.prep_workers >= 1):
            raise UsageError(f"bad server prep_workers {self.prep_workers!r}; accepted: an integer >= 1 or auto")
        if self.search_start not in SEARCH_STARTS:
            raise UsageError(f"bad server search_start {self.search_start!r}; accepted: {', '.join(SEARCH_STARTS)}")
        if self.latency_bound_ms is not None and not (is_number(self.latency_bound_ms) and self.latency_bound_ms > 0
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
                             f"{percentile_name(self.latency_percentile)} at {self.confidence:g} confidence), over max_requests "
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
        with none over it (``bench.core.stats.queries_needed``)."""
        if self.latency_bound_ms is None:
            return self.min_requests
        return max(self.min_requests, queries_needed(0, self.latency_percentile, self.confidence))

    def final(self, qps: float) -> ServerSettings:
        """The settings of a final run at ``qps``: at least ``final_min_duration_s`` long, or as long as
        ``max_duration_s`` and ``max_requests`` allow at that load (the record keeps both settings)."""
        length = min(self.final_min_duration_s, self.max_duration_s, self.max_requests / qps)
        return dataclasses.replace(self, min_duration_s=max(self.min_duration_s, length))

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
