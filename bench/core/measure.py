"""Measurement layer: clocks, repetition policy, statistics and resource trackers.

Nothing here knows about Florence-2 or models. Every tracker has the same tiny protocol
(``start()``, ``stop()``, ``result() -> dict``, usable as a context manager) and never raises
because a counter is missing: it reports ``None`` values with a ``reason`` instead, so a run on a
machine without NVML or RAPL still produces a record that says *why* a figure is absent.

Trackers measure what happens between ``start`` and ``stop`` on the host; for device work, call
the clock's ``sync()`` before ``stop()`` so the span covers the queued kernels.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bench.core.errors import UsageError, choice_error
from bench.core.paths import write_proc

DEVICE_KINDS = ("cpu", "cuda", "mps")


def device_kind(device: str) -> str:
    """``cpu``, ``cuda`` or ``mps`` for a device string such as ``cuda:1``."""
    kind, _, index = device.partition(":")
    if kind not in DEVICE_KINDS or (index and not index.isdigit()):
        raise choice_error("device", device, ("cpu", "cuda", "cuda:N", "mps"))
    return kind


def _cuda_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index else 0


# --------------------------------------------------------------------------------------------------
# Clocks


class Clock(Protocol):
    """Marks points in time on a device's timeline; ``elapsed_ms`` is valid after one ``sync()``."""

    def mark(self) -> object: ...

    def sync(self) -> None: ...

    def elapsed_ms(self, start: object, end: object) -> float: ...


class CpuClock:
    """Host timer: the work is done when the call returns, so no synchronisation is needed."""

    def mark(self) -> float:
        return time.perf_counter()

    def sync(self) -> None:
        return None

    def elapsed_ms(self, start: float, end: float) -> float:
        return (end - start) * 1000.0


class CudaClock:
    """CUDA events recorded on the current stream: no host timer, no sync at each mark.

    Kernels are queued asynchronously, so a host timer without a sync measures the launch, not the
    work; a sync at every mark would serialise the pipeline. Events give device-side times and need
    one synchronisation per measurement (``sync()`` after the last mark).
    """

    def __init__(self, device: str = "cuda") -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)

    def mark(self) -> object:
        event = self._torch.cuda.Event(enable_timing=True)
        event.record(self._torch.cuda.current_stream(self.device))
        return event

    def sync(self) -> None:
        self._torch.cuda.synchronize(self.device)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(start.elapsed_time(end))


class MpsClock(CpuClock):
    """MPS: drain the queue at every mark, then read the host timer (simple and never early)."""

    def mark(self) -> float:
        import torch

        torch.mps.synchronize()
        return time.perf_counter()


_CLOCKS: dict[str, Callable[[str], Clock]] = {
    "cpu": lambda device: CpuClock(),
    "cuda": CudaClock,
    "mps": lambda device: MpsClock(),
}


def clock_for(device: str) -> Clock:
    return _CLOCKS[device_kind(device)](device)


def time_call(fn: Callable[[], Any], clock: Clock) -> tuple[Any, float]:
    """Run ``fn`` once and return (its result, elapsed ms): two marks, one sync."""
    start = clock.mark()
    out = fn()
    end = clock.mark()
    clock.sync()
    return out, clock.elapsed_ms(start, end)


# --------------------------------------------------------------------------------------------------
# Repetitions and statistics


@dataclass
class RepetitionPolicy:
    """How many times a cell is measured: enough iterations AND enough wall time, never past max."""

    warmup: int
    min_iterations: int
    min_duration_s: float
    max_iterations: int
    cv_threshold: float

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_iterations < 1 or self.min_duration_s < 0 or self.cv_threshold <= 0:
            raise UsageError(
                f"bad repetition policy {self}; accepted: warmup >= 0, min_iterations >= 1, "
                "min_duration_s >= 0, cv_threshold > 0"
            )
        if self.max_iterations < self.min_iterations:
            raise UsageError(
                f"max_iterations {self.max_iterations} < min_iterations {self.min_iterations}; "
                "accepted: max_iterations >= min_iterations"
            )

    @classmethod
    def for_device(cls, device: str) -> RepetitionPolicy:
        """Defaults: a CPU iteration takes seconds already; GPU iterations are short and need warm-up
        (kernel selection, allocator growth, clocks ramping) and a minimum duration."""
        return cls(**_POLICY_DEFAULTS[device_kind(device)])

    def should_continue(self, n_done: int, elapsed_s: float) -> bool:
        if n_done >= self.max_iterations:
            return False
        return n_done < self.min_iterations or elapsed_s < self.min_duration_s


_GPU_POLICY = dict(warmup=3, min_iterations=10, min_duration_s=2.0, max_iterations=500, cv_threshold=0.05)
_POLICY_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": dict(warmup=1, min_iterations=3, min_duration_s=0.0, max_iterations=50, cv_threshold=0.10),
    "cuda": _GPU_POLICY,
    "mps": _GPU_POLICY,
}


@dataclass
class LatencyStats:
    """Summary of per-iteration times in ms; ``ci95_*`` bound the median (see ``summarize``)."""

    mean: float
    std: float
    p50: float
    p90: float
    p95: float
    p99: float
    n: int
    ci95_low: float
    ci95_high: float
    cv: float
    unstable: bool
    ci_method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_ci95(sorted_samples: Sequence[float]) -> tuple[float, float, str]:
    """Distribution-free 95% confidence interval of the median from order statistics.

    The number of samples below the true median is Binomial(n, 1/2), so [x_(k), x_(n-k+1)] (1-based,
    sorted) covers the median with probability 1 - 2 P(B <= k-1). We take the largest k that keeps
    that >= 95%. For n <= 5 even [min, max] covers less than 95% (n=5: 93.75%); then [min, max] is
    returned and the method string says so.
    """
    n = len(sorted_samples)
    # 2 * sum_{i<k} C(n, i) / 2^n <= 0.05, in exact integers; C(n, k) is updated incrementally
    # (math.comb from scratch each step made a server cell's 20k samples take 40 s)
    k, tail, term, limit = 0, 0, 1, 2**n
    while k < n and 40 * (tail + term) <= limit:
        tail += term
        term = term * (n - k) // (k + 1)
        k += 1
    if k == 0:
        return sorted_samples[0], sorted_samples[-1], f"min-max (n={n} too small for a 95% median interval)"
    return sorted_samples[k - 1], sorted_samples[n - k], "binomial order statistics (median)"


def summarize(samples_ms: Sequence[float], cv_threshold: float = 0.1) -> LatencyStats:
    """Mean, sample std (ddof=1), linear-interpolated percentiles, median CI and stability flag.

    ``unstable`` is set when the coefficient of variation std/mean exceeds ``cv_threshold``: the
    machine was noisy (other load, throttling) and the figures deserve less trust.
    """
    if len(samples_ms) == 0:
        raise ValueError("summarize() needs at least one sample")
    x = np.sort(np.asarray(samples_ms, dtype=float))
    n = len(x)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(x, [50, 90, 95, 99]))
    low, high, method = median_ci95(x.tolist())
    cv = std / mean if mean > 0 else 0.0
    return LatencyStats(
        mean=mean,
        std=std,
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        n=n,
        ci95_low=float(low),
        ci95_high=float(high),
        cv=cv,
        unstable=cv > cv_threshold,
        ci_method=method,
    )


# --------------------------------------------------------------------------------------------------
# Trackers


class Tracker(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def result(self) -> dict[str, Any]: ...


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


ENERGY_KEYS = ("energy_j", "idle_power_w", "idle_energy_j", "energy_source", "duration_s")


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
        self._values: dict[str, Any] = dict.fromkeys(("nvml_peak_used_bytes", *ENERGY_KEYS))
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
        self.reason, self._values = None, dict.fromkeys(("nvml_peak_used_bytes", *ENERGY_KEYS))
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
        self._values = {
            "nvml_peak_used_bytes": self._peak_used,
            "energy_j": energy_j,
            "idle_power_w": idle,
            "idle_energy_j": None if idle is None else idle * duration,
            "energy_source": source,
            "duration_s": duration,
        }

    def result(self) -> dict[str, Any]:
        return {**self._values, "reason": self.reason}


class RaplTracker(_Span):
    """CPU package energy from Linux powercap (Intel RAPL; AMD exposes the same interface).

    Sums the top-level ``intel-rapl:N`` zones (one per package; their ``:N:M`` subzones are parts
    of the package and would double count), and handles one counter wrap per span with
    ``max_energy_range_uj``. Since Linux 5.10 ``energy_uj`` is readable by root only.
    """

    def __init__(self, root: str | os.PathLike = "/sys/class/powercap", idle_s: float = 1.0) -> None:
        self.root, self.idle_s = Path(root), idle_s
        self.reason: str | None = None
        self._values: dict[str, Any] = dict.fromkeys(ENERGY_KEYS)

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
        self.reason, self._values = None, dict.fromkeys(ENERGY_KEYS)
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
        self._values = {
            "energy_j": energy_j,
            "idle_power_w": idle,
            "idle_energy_j": None if idle is None else idle * duration,
            "energy_source": "rapl-package",
            "duration_s": duration,
        }

    def result(self) -> dict[str, Any]:
        return {**self._values, "reason": self.reason}


class NoEnergyTracker(_Span):
    """Stands in where a device has no energy counter, so the record still says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def result(self) -> dict[str, Any]:
        return {**dict.fromkeys(ENERGY_KEYS), "reason": self.reason}


def _nvml_index(device: str) -> int:
    """NVML numbers GPUs physically; CUDA numbers them after CUDA_VISIBLE_DEVICES. Map one to the other."""
    index = _cuda_index(device)
    try:
        import torch

        return int(torch.cuda._get_nvml_device_index(index))
    except Exception:  # private torch helper: absent or failing means no remapping is known
        return index


_ENERGY: dict[str, Callable[[str, float], Tracker]] = {
    "cpu": lambda device, idle_s: RaplTracker(idle_s=idle_s),
    "cuda": lambda device, idle_s: NvmlTracker(_nvml_index(device), idle_s=idle_s),
    "mps": lambda device, idle_s: NoEnergyTracker("no energy counter is read on mps"),
}


def energy_tracker(device: str, idle_s: float = 1.0) -> Tracker:
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


def energy_field(result: dict[str, Any], n_images: int) -> dict[str, Any]:
    """The record's ``energy`` field; ``source`` names the counter, or the reason when it is null."""
    energy, idle_energy = result.get("energy_j"), result.get("idle_energy_j")
    if energy is None or n_images <= 0:
        source = result.get("reason") or f"no images measured (n_images={n_images})"
        return {
            "joules_per_image": None,
            "joules_per_image_above_idle": None,
            "idle_power_w": result.get("idle_power_w"),
            "source": source,
        }
    return {
        "joules_per_image": energy / n_images,
        "joules_per_image_above_idle": None if idle_energy is None else (energy - idle_energy) / n_images,
        "idle_power_w": result.get("idle_power_w"),
        "source": result["energy_source"],
    }


# --------------------------------------------------------------------------------------------------
# Roofline and plausibility

_DTYPE_ALIASES = {
    "fp32": "float32",
    "float32": "float32",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
}


def matmul_gflops(device: str, dtype: Any, n: int = 2048, seconds: float = 1.0) -> float:
    """Achieved GFLOP/s of an n×n matrix product here (2n³ FLOP each), for the roofline figure.

    Repetitions grow until one timed batch lasts ``seconds``; device time comes from the device's
    clock with one sync per batch.
    """
    import torch

    if isinstance(dtype, str):
        if dtype not in _DTYPE_ALIASES:
            raise choice_error("dtype", dtype, sorted(_DTYPE_ALIASES))
        dtype = getattr(torch, _DTYPE_ALIASES[dtype])
    clock = clock_for(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with torch.inference_mode():
        time_call(lambda: a @ b, clock)  # warm-up: library initialisation, kernel selection
        reps = 1
        while True:
            start = clock.mark()
            for _ in range(reps):
                a @ b
            end = clock.mark()
            clock.sync()
            ms = clock.elapsed_ms(start, end)
            if ms >= seconds * 1000.0:
                break
            reps = min(reps * 100, max(reps * 2, math.ceil(reps * 1.1 * seconds * 1000.0 / max(ms, 1e-3))))
    return 2.0 * n**3 * reps / (ms / 1000.0) / 1e9


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def plausibility_problems(record: dict[str, Any]) -> list[str]:
    """What is implausible about a CUDA record (empty list: nothing found). Used by the GPU check."""
    if record.get("status") != "ok":
        return [f"status is {record.get('status')!r}: {record.get('error')}"]
    problems = []
    if not str(record.get("device", "")).startswith("cuda"):
        problems.append(f"device {record.get('device')!r} is not CUDA")
    latency = record.get("latency_ms") or {}
    for key in ("mean", "p50", "p90", "p95", "p99"):
        if not _positive(latency.get(key)):
            problems.append(f"latency_ms.{key} is {latency.get(key)!r}, expected a positive time")
    samples = record.get("samples_ms") or []
    if not samples or not all(_positive(s) for s in samples):
        problems.append(f"samples_ms has missing, zero or negative times ({len(samples)} samples)")
    for stage, value in (record.get("stages_ms") or {}).items():
        if value is None or not math.isfinite(value) or value < 0:
            problems.append(f"stages_ms.{stage} is {value!r}, expected a time >= 0")
    images_per_s = (record.get("throughput") or {}).get("images_per_s")
    if not _positive(images_per_s):
        problems.append(f"throughput.images_per_s is {images_per_s!r}")

    memory = record.get("memory") or {}
    allocated, reserved = memory.get("cuda_peak_allocated_bytes"), memory.get("cuda_peak_reserved_bytes")
    weights, nvml_used = memory.get("weights_bytes"), memory.get("nvml_peak_used_bytes")
    if not _positive(allocated):
        problems.append(f"memory.cuda_peak_allocated_bytes is {allocated!r}")
    elif _positive(weights) and allocated <= weights:
        problems.append(f"torch peak allocated {allocated} B is not above the weights' {weights} B")
    if not _positive(nvml_used):
        problems.append(f"memory.nvml_peak_used_bytes is {nvml_used!r}")
    elif _positive(reserved) and nvml_used < reserved:
        problems.append(f"NVML peak used {nvml_used} B is below torch's reserved {reserved} B")

    energy = record.get("energy") or {}
    joules = energy.get("joules_per_image")
    if not _positive(joules):
        problems.append(f"energy.joules_per_image is {joules!r} (source: {energy.get('source')})")
    elif _positive(images_per_s):
        watts = joules * images_per_s
        if not 1.0 <= watts <= 2000.0:
            problems.append(f"energy implies {watts:.1f} W (J/image × images/s), outside 1–2000 W")
    return problems


__all__ = [
    "Clock",
    "Tracker",
    "CpuClock",
    "CudaClock",
    "MpsClock",
    "clock_for",
    "time_call",
    "RepetitionPolicy",
    "LatencyStats",
    "summarize",
    "median_ci95",
    "RSSTracker",
    "CudaMemoryTracker",
    "NvmlTracker",
    "RaplTracker",
    "NoEnergyTracker",
    "energy_tracker",
    "memory_trackers",
    "memory_field",
    "energy_field",
    "matmul_gflops",
    "plausibility_problems",
    "device_kind",
]
