"""Resource trackers: peak memory (RSS, CUDA allocator, NVML) and energy (NVML, RAPL) over a span.

Every tracker has the same tiny protocol (``start()``, ``stop()``, ``result()``, usable as a context
manager) and never raises because a counter is missing: it reports ``None`` values with a ``reason``
instead. A memory tracker's result is a dict of the record's memory figures it measured (merged by
``memory_field``); an energy tracker's is an ``EnergyReading``. Its own module because the trackers sample counters on threads, apart from the
clocks and statistics of ``bench.core.measure``, and a record's memory and energy fields come from here.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from bench.core.errors import choice_error
from bench.core.measure import cuda_index, device_kind
from bench.core.paths import write_proc


class Tracker(Protocol):
    """A memory tracker: its result is the record's memory figures it measured."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def result(self) -> dict[str, Any]: ...


class EnergyTracker(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def result(self) -> EnergyReading: ...


@dataclass(frozen=True)
class EnergyReading:
    """What an energy tracker measured over its span: None where it could not, and ``reason`` says why."""

    energy_j: float | None = None
    idle_power_w: float | None = None  # sampled before the span
    idle_energy_j: float | None = None  # idle power x the span's duration
    energy_source: str | None = None  # the counter, or how the energy was integrated
    duration_s: float | None = None
    nvml_peak_used_bytes: int | None = None  # NVML reads the device's memory too (the record's memory field)
    reason: str | None = None

    def memory(self) -> dict[str, Any]:
        """Its part of the record's memory field (``memory_field`` merges it with the memory trackers')."""
        return {"nvml_peak_used_bytes": self.nvml_peak_used_bytes}


class _Span:
    """Context-manager support shared by the trackers."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _Sampler:
    """A daemon thread calling ``fn`` every ``interval_s`` until stopped."""

    def __init__(self, fn: Callable[[], None], interval_s: float) -> None:
        self._fn, self._interval = fn, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            self._fn()
            self._stop.wait(self._interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _status_kb(proc: Path, field: str) -> int:
    for line in (proc / "status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class RSSTracker(_Span):
    """Peak resident memory of this process during the span, reset at each start.

    Why a reset per span rather than a fresh process per group: a fresh process would hide warm-up
    effects and cost a model load per group, and a process-lifetime peak lets one cell's peak hide
    another's. Linux keeps an exact high-water mark (VmHWM) that writing "5" to clear_refs resets to
    the current RSS, so the peak is exact and costs nothing during the span. Where that is not
    possible (not Linux, /proc read-only) a thread samples RSS every ``interval_s``; that can miss a
    spike shorter than the interval, or one that happens while native code holds the GIL.
    """

    def __init__(self, interval_s: float = 0.002, method: str = "auto", proc: str = "/proc/self") -> None:
        if method not in ("auto", "vmhwm-reset", "sampled"):
            raise choice_error("RSS method", method, ("auto", "vmhwm-reset", "sampled"))
        self.interval_s, self._proc, self._requested = interval_s, Path(proc), method
        self.method: str | None = None
        self._before = self._peak = None
        self._sampler: _Sampler | None = None

    def _rss(self) -> int:
        import psutil

        return psutil.Process().memory_info().rss

    def _try_reset_hwm(self) -> bool:
        try:
            write_proc(self._proc / "clear_refs", "5")
            _status_kb(self._proc, "VmHWM")
            return True
        except (OSError, KeyError, ValueError):
            return False

    def start(self) -> None:
        use_hwm = self._requested != "sampled" and self._try_reset_hwm()
        if self._requested == "vmhwm-reset" and not use_hwm:
            raise RuntimeError(f"cannot reset VmHWM via {self._proc / 'clear_refs'}")
        self.method = "vmhwm-reset" if use_hwm else "sampled"
        self._before = self._peak = self._rss()
        if not use_hwm:
            self._sampler = _Sampler(self._sample, self.interval_s)
            self._sampler.start()

    def _sample(self) -> None:
        self._peak = max(self._peak, self._rss())

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        self._sample()
        if self.method == "vmhwm-reset":
            self._peak = max(self._peak, _status_kb(self._proc, "VmHWM"))

    def result(self) -> dict[str, Any]:
        return {"peak_rss_bytes": self._peak, "rss_before_bytes": self._before, "method": self.method}


class CudaMemoryTracker(_Span):
    """Peak memory of torch's CUDA caching allocator during the span (None on other devices)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._active = device_kind(device) == "cuda"
        self._allocated = self._reserved = None

    def start(self) -> None:
        if self._active:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)

    def stop(self) -> None:
        if self._active:
            import torch

            self._allocated = int(torch.cuda.max_memory_allocated(self.device))
            self._reserved = int(torch.cuda.max_memory_reserved(self.device))

    def result(self) -> dict[str, Any]:
        return {"cuda_peak_allocated_bytes": self._allocated, "cuda_peak_reserved_bytes": self._reserved}


def _trapezoid(points: Sequence[tuple[float, float]]) -> float:
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(points, points[1:], strict=False))


class NvmlTracker(_Span):
    """GPU energy, power and device memory (all processes) through NVML.

    At start, idle power is sampled for ``idle_s`` *before* the span so the energy above idle can be
    reported. Energy comes from the total-energy counter (mJ, Volta and later) where supported,
    otherwise from the trapezoidal integral of sampled power (labelled as such). The counter updates
    every few tens of ms and board power readings are averaged by the driver, so spans shorter than
    about a second are coarse: measure many iterations in one span.
    """

    def __init__(self, device_index: int = 0, interval_s: float = 0.005, idle_s: float = 1.0) -> None:
        self.device_index, self.interval_s, self.idle_s = device_index, interval_s, idle_s
        self.reason: str | None = None
        self._nvml: Any = None
        self._reading = EnergyReading()
        self._sampler: _Sampler | None = None

    def _open(self) -> bool:
        try:
            import pynvml
        except ImportError:
            self.reason = "NVML not available: pynvml not installed (pip install nvidia-ml-py)"
            return False
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
        except Exception as exc:  # NVMLError subclasses, or OSError from a broken driver install
            self.reason = f"NVML not available: {type(exc).__name__}: {exc}"
            return False
        self._nvml = pynvml
        return True

    def _call(self, name: str) -> Any:
        """One NVML query on our device; None where this GPU does not support it."""
        try:
            return getattr(self._nvml, name)(self._handle)
        except self._nvml.NVMLError:
            return None

    def _sample(self) -> None:
        memory, power_mw = self._call("nvmlDeviceGetMemoryInfo"), self._call("nvmlDeviceGetPowerUsage")
        if memory is not None:
            self._peak_used = max(self._peak_used or 0, int(memory.used))
        if power_mw is not None:
            self._power.append((time.perf_counter(), power_mw / 1000.0))

    def start(self) -> None:
        self.reason, self._reading = None, EnergyReading()
        if not self._open():
            return
        idle, end = [], time.perf_counter() + self.idle_s
        while True:
            idle.append(self._call("nvmlDeviceGetPowerUsage"))
            if time.perf_counter() >= end:
                break
            time.sleep(self.interval_s)
        idle = [p / 1000.0 for p in idle if p is not None]
        self._idle_power_w = sum(idle) / len(idle) if idle else None
        self._energy0 = self._call("nvmlDeviceGetTotalEnergyConsumption")
        self._peak_used, self._power = None, []
        self._t0 = time.perf_counter()
        self._sample()
        self._sampler = _Sampler(self._sample, self.interval_s)
        self._sampler.start()

    def stop(self) -> None:
        if self._nvml is None:
            return
        self._sampler.stop()
        energy1 = self._call("nvmlDeviceGetTotalEnergyConsumption")
        self._sample()
        duration = time.perf_counter() - self._t0
        if self._energy0 is not None and energy1 is not None:
            energy_j, source = (energy1 - self._energy0) / 1000.0, "nvml-total-energy-counter"
        elif len(self._power) >= 2:
            energy_j, source = _trapezoid(self._power), "nvml-power-integral"
        else:
            energy_j, source = None, None
            self.reason = "NVML reports neither the energy counter nor power on this GPU"
        self._nvml.nvmlShutdown()
        self._nvml = None
        idle = self._idle_power_w
        self._reading = EnergyReading(energy_j=energy_j, idle_power_w=idle,
                                      idle_energy_j=None if idle is None else idle * duration, energy_source=source,
                                      duration_s=duration, nvml_peak_used_bytes=self._peak_used)

    def result(self) -> EnergyReading:
        return replace(self._reading, reason=self.reason)


class RaplTracker(_Span):
    """CPU package energy from Linux powercap (Intel RAPL; AMD exposes the same interface).

    Sums the top-level ``intel-rapl:N`` zones (one per package; their ``:N:M`` subzones are parts
    of the package and would double count), and handles one counter wrap per span with
    ``max_energy_range_uj``. Since Linux 5.10 ``energy_uj`` is readable by root only.
    """

    def __init__(self, root: str | os.PathLike = "/sys/class/powercap", idle_s: float = 1.0) -> None:
        self.root, self.idle_s = Path(root), idle_s
        self.reason: str | None = None
        self._reading = EnergyReading()

    def _find_zones(self) -> list[Path]:
        if not self.root.is_dir():
            raise OSError(f"{self.root} absent")
        zones = sorted(p for p in self.root.glob("intel-rapl:*") if p.name.count(":") == 1)
        if not zones:
            raise OSError(f"no intel-rapl:N package zones under {self.root}")
        return zones

    def _read(self) -> list[int]:
        return [int((z / "energy_uj").read_text()) for z in self._zones]

    def _joules(self, before: list[int], after: list[int]) -> float:
        total = 0
        for zone, b, a in zip(self._zones, before, after, strict=True):
            total += a - b if a >= b else a - b + int((zone / "max_energy_range_uj").read_text())
        return total / 1e6

    def start(self) -> None:
        self.reason, self._reading = None, EnergyReading()
        try:
            self._zones = self._find_zones()
            self._idle_power_w = None
            if self.idle_s > 0:
                t, e = time.perf_counter(), self._read()
                time.sleep(self.idle_s)
                self._idle_power_w = self._joules(e, self._read()) / (time.perf_counter() - t)
            self._e0, self._t0 = self._read(), time.perf_counter()
        except (OSError, ValueError) as exc:
            self.reason = f"RAPL not readable: {exc}"

    def stop(self) -> None:
        if self.reason is not None:
            return
        try:
            energy_j = self._joules(self._e0, self._read())
        except (OSError, ValueError) as exc:
            self.reason = f"RAPL not readable: {exc}"
            return
        duration = time.perf_counter() - self._t0
        idle = self._idle_power_w
        self._reading = EnergyReading(energy_j=energy_j, idle_power_w=idle,
                                      idle_energy_j=None if idle is None else idle * duration,
                                      energy_source="rapl-package", duration_s=duration)

    def result(self) -> EnergyReading:
        return replace(self._reading, reason=self.reason)


class NoEnergyTracker(_Span):
    """Stands in where a device has no energy counter, so the record still says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def result(self) -> EnergyReading:
        return EnergyReading(reason=self.reason)


def _nvml_index(device: str) -> int:
    """NVML numbers GPUs physically; CUDA numbers them after CUDA_VISIBLE_DEVICES. Map one to the other."""
    index = cuda_index(device)
    try:
        import torch

        return int(torch.cuda._get_nvml_device_index(index))
    except Exception:  # private torch helper: absent or failing means no remapping is known
        return index


_ENERGY: dict[str, Callable[[str, float], EnergyTracker]] = {
    "cpu": lambda device, idle_s: RaplTracker(idle_s=idle_s),
    "cuda": lambda device, idle_s: NvmlTracker(_nvml_index(device), idle_s=idle_s),
    "mps": lambda device, idle_s: NoEnergyTracker("no energy counter is read on mps"),
}


def energy_tracker(device: str, idle_s: float = 1.0) -> EnergyTracker:
    """RAPL on CPU, NVML on CUDA (which also gives ``nvml_peak_used_bytes``)."""
    return _ENERGY[device_kind(device)](device, idle_s)


def memory_trackers(device: str) -> list[Tracker]:
    """Process RSS and, on CUDA, torch's allocator peaks; NVML device memory comes from the energy tracker."""
    return [RSSTracker(), CudaMemoryTracker(device)]


MEMORY_KEYS = (
    "peak_rss_bytes",
    "cuda_peak_allocated_bytes",
    "cuda_peak_reserved_bytes",
    "nvml_peak_used_bytes",
    "weights_bytes",
)


def memory_field(results: Iterable[dict[str, Any]], weights_bytes: int | None) -> dict[str, Any]:
    """The record's ``memory`` field from tracker results (null where no tracker measured it)."""
    merged: dict[str, Any] = {}
    for result in results:
        merged.update(result)
    merged["weights_bytes"] = weights_bytes
    return {key: merged.get(key) for key in MEMORY_KEYS}


def energy_field(reading: EnergyReading, n_images: int) -> dict[str, Any]:
    """The record's ``energy`` field; ``source`` names the counter, or the reason when it is null."""
    energy, idle_energy = reading.energy_j, reading.idle_energy_j
    if energy is None or n_images <= 0:
        return {
            "joules_per_image": None,
            "joules_per_image_above_idle": None,
            "idle_power_w": reading.idle_power_w,
            "source": reading.reason or f"no images measured (n_images={n_images})",
        }
    return {
        "joules_per_image": energy / n_images,
        "joules_per_image_above_idle": None if idle_energy is None else (energy - idle_energy) / n_images,
        "idle_power_w": reading.idle_power_w,
        "source": reading.energy_source,
    }
