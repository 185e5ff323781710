"""Measurement layer: clocks, repetition policy, statistics and the roofline reference.

Nothing here knows about Florence-2 or models. The resource trackers (memory, energy) are
``bench.core.trackers``; they measure what happens between ``start`` and ``stop`` on the host, so for
device work call the clock's ``sync()`` before ``stop()`` so the span covers the queued kernels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from bench.core.errors import UsageError, choice_error

DEVICE_KINDS = ("cpu", "cuda", "mps")


def device_kind(device: str) -> str:
    """``cpu``, ``cuda`` or ``mps`` for a device string such as ``cuda:1``."""
    kind, _, index = device.partition(":")
    if kind not in DEVICE_KINDS or (index and not index.isdigit()):
        raise choice_error("device", device, ("cpu", "cuda", "cuda:N", "mps"))
    return kind


def cuda_index(device: str) -> int:
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
# Roofline reference

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


__all__ = [
    "Clock",
    "CpuClock",
    "CudaClock",
    "MpsClock",
    "clock_for",
    "time_call",
    "RepetitionPolicy",
    "LatencyStats",
    "summarize",
    "median_ci95",
    "matmul_gflops",
    "device_kind",
]
