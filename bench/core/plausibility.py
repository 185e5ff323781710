"""Plausibility of a capacity: what a reader must see beside the number, as the record's ``flags``.

A flag is ``{"code": str, "message": str}`` (``bench.results.Flag``, ``Record.flags``). A flag does not change a
figure; it says why the figure may not be what it seems:

- ``capacity-above-offline``: the capacity exceeds ``OFFLINE_MARGIN`` x the offline throughput of the
  same setting and batch size (the same sweep's offline cell, or the search's own offline ceiling). A
  server cannot serve more requests per second than the same model running full batches back to back.
- ``curve-not-monotone``: along the search's latency-vs-QPS curve, the chosen percentile fell by more
  than its confidence interval as the load rose (the interval of the lighter step lies wholly above the
  heavier step's): the machine's speed changed during the search.
- ``bracket-speed-changed``: the two ends of the capacity bracket (the highest valid load and the lowest
  invalid one above it) served their most common batch size (the same at both) at median times more
  than ``BRACKET_SERVICE_APART`` (10%) apart: the bracket compares two machine speeds, not two loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.core.numbers import is_number

OFFLINE_MARGIN = 1.05
BRACKET_SERVICE_APART = 0.10


def flag(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def capacity_above_offline(capacity_qps: float | None, offline_images_per_s: float | None,
                           source: str) -> dict[str, str] | None:
    """The ``capacity-above-offline`` flag, or None; ``source`` says where the offline figure came from."""
    if not capacity_qps or not offline_images_per_s or capacity_qps <= OFFLINE_MARGIN * offline_images_per_s:
        return None
    return flag("capacity-above-offline",
                f"capacity {capacity_qps:.4g} QPS is above {OFFLINE_MARGIN:g}x the offline throughput "
                f"{offline_images_per_s:.4g} images/s ({source}): a server cannot outrun back-to-back full batches")


def curve_not_monotone(curve: Sequence[dict[str, Any]]) -> dict[str, str] | None:
    """The ``curve-not-monotone`` flag for a curve whose steps carry ``target_qps`` and the chosen
    percentile's interval (``ci_lo_ms``, ``ci_hi_ms``; steps without one are skipped), or None. Steps of
    one length are compared: a capacity's final runs (``final``) are longer, and a queue near saturation
    grows with the run, so a long run's percentile sits above a short one's at the same load."""
    for final in (False, True):
        found = _falls([s for s in curve if bool(s.get("final")) == final])
        if found:
            return found
    return None


def _falls(curve: Sequence[dict[str, Any]]) -> dict[str, str] | None:
    steps = sorted((s for s in curve if is_number(s.get("target_qps")) and is_number(s.get("ci_lo_ms"))
                    and is_number(s.get("ci_hi_ms"))), key=lambda s: s["target_qps"])
    for i, light in enumerate(steps):
        for heavy in steps[i + 1:]:
            if heavy["target_qps"] > light["target_qps"] and heavy["ci_hi_ms"] < light["ci_lo_ms"]:
                return flag("curve-not-monotone",
                            f"the machine's speed changed during the search: at {heavy['target_qps']:.4g} QPS "
                            f"the percentile's interval [{heavy['ci_lo_ms']:.4g}, {heavy['ci_hi_ms']:.4g}] ms lies "
                            f"below the one at the lighter {light['target_qps']:.4g} QPS "
                            f"[{light['ci_lo_ms']:.4g}, {light['ci_hi_ms']:.4g}] ms")
    return None


def bracket_speed_changed(low: dict[str, Any], high: dict[str, Any]) -> dict[str, str] | None:
    """The ``bracket-speed-changed`` flag for the bracket's two ends (curve steps with ``target_qps``,
    ``service_ms``: the median batch time of the step's most common batch size, and that size,
    ``service_batch_size``), or None; ends whose common sizes differ (batching follows the load) are not
    compared."""
    a, b, size = low.get("service_ms"), high.get("service_ms"), low.get("service_batch_size")
    if not (is_number(a) and is_number(b) and min(a, b) > 0 and size == high.get("service_batch_size")):
        return None
    if max(a, b) <= (1 + BRACKET_SERVICE_APART) * min(a, b):
        return None
    return flag("bracket-speed-changed",
                f"the capacity bracket's ends ran at different machine speeds: batches of {size} took a median "
                f"{a:.4g} ms at {low['target_qps']:.4g} QPS and {b:.4g} ms at {high['target_qps']:.4g} QPS, more "
                f"than {BRACKET_SERVICE_APART:.0%} apart")
