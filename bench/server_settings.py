"""The server scenario's settings: what load it offers, and how long it runs (docs/scenarios.md, "Server").

Apart from the scenarios, which measure (``bench.scenarios``): a cell (``bench.cell``) carries these
settings and hashes their identity, and a cell sits below the scenarios in the import graph.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench.errors import UsageError


def _setting(default: Any, *, identity: bool = True) -> Any:
    return field(default=default, metadata={"identity": identity})


@dataclass(frozen=True)
class ServerSettings:
    """The server scenario's settings (TOML ``[server]``; CLI ``--server-qps`` and friends).

    Fields marked ``identity`` say what is measured and are part of the cell id; the others say how
    long and with which random schedule, like the repetition policy, and are not.
    """

    qps: float | str | None = _setting(None)  # requests per second, or "auto": the capacity search
    max_queue_delay_ms: float = _setting(5.0)  # how long the batcher waits for a fuller batch
    latency_bound_ms: float | None = _setting(None)  # p99 bound for validity (required with "auto")
    min_duration_s: float = _setting(10.0, identity=False)
    min_requests: int = _setting(8, identity=False)
    seed: int = _setting(0, identity=False)

    def __post_init__(self) -> None:
        qps = self.qps
        if isinstance(qps, str) and qps != "auto":
            try:
                object.__setattr__(self, "qps", float(qps))
            except ValueError:
                raise UsageError(f"bad server qps {qps!r}; accepted: a number > 0 or auto") from None
        if self.qps is None:
            raise UsageError("the server scenario needs a target load; accepted: --server-qps Q (requests/s) "
                             "or --server-qps auto with --latency-bound-ms B (or qps in the sweep's [server])")
        if self.qps != "auto" and not (isinstance(self.qps, (int, float)) and self.qps > 0):
            raise UsageError(f"bad server qps {self.qps!r}; accepted: a number > 0 or auto")
        if self.qps == "auto" and self.latency_bound_ms is None:
            raise UsageError("--server-qps auto needs a latency bound: the capacity is the highest load whose p99 "
                             "stays within it; accepted: --latency-bound-ms B (or latency_bound_ms in [server])")
        checks = (("max_queue_delay_ms", self.max_queue_delay_ms, 0), ("min_duration_s", self.min_duration_s, 0),
                  ("min_requests", self.min_requests, 1))
        for name, value, low in checks:
            if not isinstance(value, (int, float)) or value < low:
                raise UsageError(f"bad server {name} {value!r}; accepted: a number >= {low}")
        if self.latency_bound_ms is not None and not self.latency_bound_ms > 0:
            raise UsageError(f"bad latency bound {self.latency_bound_ms!r} ms; accepted: a number > 0")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ServerSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UsageError(f"unknown server setting(s) {sorted(unknown)}; accepted: {sorted(known)}")
        return cls(**values)

    def identity(self) -> dict[str, Any]:
        """The settings that say what is measured (part of the cell id)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("identity")}
