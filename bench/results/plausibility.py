"""Plausibility of a record's figures: the flags a capacity carries, and the GPU check's problems.

The flags of a capacity are what a reader must see beside the number, as the record's ``flags``.

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

``problems`` lists what is implausible about a CUDA record (the GPU check, bench.tools.gpucheck).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from bench.core.numbers import is_finite, is_number
from bench.results.access import figure, value
from bench.results.record import Record
from bench.results.tables import CurveStep, Energy, Memory, Stages

STAGE_NAMES = tuple(f.name for f in dataclasses.fields(Stages) if not f.name.startswith("_"))

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


def curve_not_monotone(curve: Sequence[CurveStep]) -> dict[str, str] | None:
    """The ``curve-not-monotone`` flag for a curve whose steps carry ``target_qps`` and the chosen
    percentile's interval (``ci_lo_ms``, ``ci_hi_ms``; steps without one are skipped), or None. Steps of
    one length are compared: a capacity's final runs (``final``) are longer, and a queue near saturation
    grows with the run, so a long run's percentile sits above a short one's at the same load."""
    for final in (False, True):
        found = _falls([s for s in curve if bool(s.final) == final])
        if found:
            return found
    return None


def _falls(curve: Sequence[CurveStep]) -> dict[str, str] | None:
    steps = sorted((s for s in curve if is_number(s.target_qps) and is_number(s.ci_lo_ms) and is_number(s.ci_hi_ms)),
                   key=lambda s: s.target_qps)
    for i, light in enumerate(steps):
        for heavy in steps[i + 1:]:
            if heavy.target_qps > light.target_qps and heavy.ci_hi_ms < light.ci_lo_ms:
                return flag("curve-not-monotone",
                            f"the machine's speed changed during the search: at {heavy.target_qps:.4g} QPS "
                            f"the percentile's interval [{heavy.ci_lo_ms:.4g}, {heavy.ci_hi_ms:.4g}] ms lies "
                            f"below the one at the lighter {light.target_qps:.4g} QPS "
                            f"[{light.ci_lo_ms:.4g}, {light.ci_hi_ms:.4g}] ms")
    return None


def bracket_speed_changed(low: CurveStep, high: CurveStep) -> dict[str, str] | None:
    """The ``bracket-speed-changed`` flag for the bracket's two ends (curve steps with ``target_qps``,
    ``service_ms``: the median batch time of the step's most common batch size, and that size,
    ``service_batch_size``), or None; ends whose common sizes differ (batching follows the load) are not
    compared."""
    a, b, size = low.service_ms, high.service_ms, low.service_batch_size
    if not (is_number(a) and is_number(b) and min(a, b) > 0 and size == high.service_batch_size):
        return None
    if max(a, b) <= (1 + BRACKET_SERVICE_APART) * min(a, b):
        return None
    return flag("bracket-speed-changed",
                f"the capacity bracket's ends ran at different machine speeds: batches of {size} took a median "
                f"{a:.4g} ms at {low.target_qps:.4g} QPS and {b:.4g} ms at {high.target_qps:.4g} QPS, more "
                f"than {BRACKET_SERVICE_APART:.0%} apart")


def _positive(value: object) -> bool:
    return is_finite(value) and value > 0


def problems(record: Record) -> list[str]:
    """What is implausible about a CUDA record (empty list: nothing found). Used by the GPU check."""
    if record.status != "ok":
        return [f"status is {record.status!r}: {record.error}"]
    found = []
    if not str(record.device or "").startswith("cuda"):
        found.append(f"device {record.device!r} is not CUDA")
    for key in ("mean", "p50", "p90", "p95", "p99"):
        if not _positive(got := value(record, f"latency_ms.{key}")):
            found.append(f"latency_ms.{key} is {got!r}, expected a positive time")
    samples = record.samples_ms
    if not samples or not all(_positive(s) for s in samples):
        found.append(f"samples_ms has missing, zero or negative times ({len(samples)} samples)")
    for stage in STAGE_NAMES:  # None: a stage the backend does not time
        if (got := value(record, f"stages_ms.{stage}")) is not None and not (is_finite(got) and got >= 0):
            found.append(f"stages_ms.{stage} is {got!r}, expected a time >= 0")
    return found + _throughput_memory_energy(record)


def _throughput_memory_energy(record: Record) -> list[str]:
    found = []
    images_per_s = figure(record, "throughput.images_per_s")
    if not _positive(images_per_s):
        found.append(f"throughput.images_per_s is {images_per_s!r}")
    memory = record.memory or Memory()
    allocated, reserved = memory.cuda_peak_allocated_bytes, memory.cuda_peak_reserved_bytes
    weights, nvml_used = memory.weights_bytes, memory.nvml_peak_used_bytes
    if not _positive(allocated):
        found.append(f"memory.cuda_peak_allocated_bytes is {allocated!r}")
    elif _positive(weights) and allocated <= weights:
        found.append(f"torch peak allocated {allocated} B is not above the weights' {weights} B")
    if not _positive(nvml_used):
        found.append(f"memory.nvml_peak_used_bytes is {nvml_used!r}")
    elif _positive(reserved) and nvml_used < reserved:
        found.append(f"NVML peak used {nvml_used} B is below torch's reserved {reserved} B")
    energy = record.energy or Energy()
    joules = energy.joules_per_image
    if not _positive(joules):
        found.append(f"energy.joules_per_image is {joules!r} (source: {energy.source})")
    elif _positive(images_per_s):
        watts = joules * images_per_s
        if not 1.0 <= watts <= 2000.0:
            found.append(f"energy implies {watts:.1f} W (J/image × images/s), outside 1–2000 W")
    return found
