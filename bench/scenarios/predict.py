"""Predicted server capacity: the project's batcher simulated under Poisson arrivals, fed measured batch times.

Where no server cell ran, a capacity can still be predicted from the offline and single-stream cells of the
same setting: they measured how long a batch of N images takes (``batch_times``). A discrete-event
simulation replays the server scenario's own rule (``bench.scenarios.batcher.Batcher``: whenever a model
instance is free it takes the waiting requests up to the max batch, or waits for a fuller batch until the
oldest has waited ``max_queue_delay_ms``) on a Poisson arrival stream, each batch's service time drawn from
the measured per-batch wall times of its size, and bisects on the rate for the highest one whose P-th
percentile request latency (arrival to completion, queueing included) meets the bound.

The model's assumptions, stated once:

- service times: a batch of a measured size draws one of that size's raw samples (with replacement); a
  size between two measured ones draws the same quantile of both and interpolates linearly in the size;
  a size below the smallest measured one costs the smallest one's time (a smaller batch is taken to be
  no faster: conservative); past the largest measured size nothing is extrapolated (refused);
- ``instances`` model instances per device share one queue, each as fast as the measurements (they are
  assumed not to slow each other: an upper bound when they share one device);
- preparation keeps up with the model (the server's ``prep_workers`` auto sizes it so), and the queue
  starts empty, like a server run.

Deterministic for a seed: the arrival gaps and the service draws are fixed by it and only scaled by the
rate (common random numbers, so the percentile varies smoothly with the rate and the bisection is stable).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from bench.core.numbers import is_finite
from bench.results import Record, Settings, figure
from bench.results.server_settings import ServerSettings
from bench.results.tables import private
from bench.scenarios.batcher import Batcher

DEFAULT_MAX_QUEUE_DELAY_MS: float = next(f.default for f in fields(ServerSettings) if f.name == "max_queue_delay_ms")
QUANTILES = 1000  # quantile levels of each batch size's service-time table
MIN_REQUESTS = 20000  # simulated requests per rate, at least; more for a high percentile (TAIL_REQUESTS in its tail)
TAIL_REQUESTS = 200
MAX_REQUESTS = 60000  # at most (a prediction stays well under a second or two)
RATE_PRECISION = 0.005  # the bisection stops when the rates bracketing the capacity are within 0.5%
LOWEST_RATE = 1e-3  # of the saturation rate: the lightest load tried (service time and batching delay alone)
CLOSED_LOOP = ("offline", "single-stream")
# fields that do not change what a batch costs: how the cell was run and recorded, not the model's setting
NOT_SETTING = {"batch_size", "scenario", "cell_id", "status", "error", "n_images", "params", "latency_ms",
               "time_per_image_ms", "stages_ms", "throughput", "memory", "energy", "accuracy", "samples_ms",
               "gen_tokens_mean", "server", "capacity_qps", "loadgen", "timing", "unstable", "flags",
               "per_token_ms", "examples", "extra", "schema"}
NOT_SETTING_OPTIONS = {"prefetch"}  # ``_per_batch_ms`` normalises a prefetching cell's samples to batch times


@dataclass(frozen=True)
class Prediction:
    """A predicted capacity: never measured, always labelled ``BASIS`` with the batch sizes that drove it."""

    qps: float | None  # highest Poisson rate whose P-th percentile meets bound_ms; None when none does
    percentile: float  # e.g. 0.99
    bound_ms: float
    p_ms: float | None  # the predicted P-th percentile at qps
    max_batch: int  # the batcher's max batch size modelled
    max_queue_delay_ms: float
    instances: int  # model instances per device (stated)
    batch_sizes: tuple[int, ...]  # the measured batch sizes whose times drove it (never extrapolated)
    note: str  # why qps is None, or caveats ("" when none)
    BASIS: ClassVar[str] = "predicted (queueing model from measured batch times)"


def _quantile_steps(times: Sequence[float]) -> np.ndarray:
    """One batch size's empirical quantile function at ``QUANTILES`` levels (level k picks a raw sample)."""
    levels = (np.arange(QUANTILES) + 0.5) / QUANTILES
    ordered = np.sort(np.asarray(times, dtype=float))
    return ordered[np.minimum((levels * len(ordered)).astype(int), len(ordered) - 1)]


def ceiling_qps(batch_times_ms: Mapping[int, Sequence[float]], instances: int = 1) -> float:
    """An upper bound of every prediction from these batch times, at any max batch: full batches back to back
    on every instance at the best measured size (the simulation's own saturation rate; an interpolated size
    is never faster per request than both measured sizes around it, a smaller one than the smallest)."""
    return instances * max(size / float(np.mean(_quantile_steps(times))) for size, times in batch_times_ms.items()) \
        * 1000.0


def _service_table(batch_times_ms: Mapping[int, Sequence[float]], max_batch: int) -> list[list[float]]:
    """Service time (ms) per batch size 1..max_batch (index 0 unused) at ``QUANTILES`` levels: each measured
    size's empirical quantile function (a step function: level k picks a raw sample), interpolated
    linearly in the size between measured ones, the smallest measured one's below it."""
    measured = sorted(batch_times_ms)
    steps = {size: _quantile_steps(batch_times_ms[size]) for size in measured}
    table: list[list[float]] = [[]]
    for m in range(1, max_batch + 1):
        k = bisect.bisect_left(measured, m)
        if measured[k] == m or k == 0:
            row = steps[measured[k]]
        else:
            lo, hi = measured[k - 1], measured[k]
            w = (m - lo) / (hi - lo)
            row = (1 - w) * steps[lo] + w * steps[hi]
        table.append(row.tolist())
    return table


def simulate(arrivals_ms: Sequence[float], table: Sequence[Sequence[float]], draws: Sequence[int],
             batcher: Batcher, instances: int = 1) -> np.ndarray:
    """Request latencies (ms, arrival to completion) of the batcher serving ``arrivals_ms`` (ascending)
    with ``instances`` model instances sharing one queue; batch b of size m takes ``table[m][draws[b]]``."""
    a = arrivals_ms
    n, limit = len(a), batcher.max_batch_size
    delay_ms = batcher.max_queue_delay_s * 1000.0
    wait_until, after = batcher.wait_until, bisect.bisect_right  # the hot loop: one lookup each
    free = [0.0] * instances  # when each instance is next free (a heap: its first is the next one free)
    ends: list[float] = []
    counts: list[int] = []
    i = 0
    while i < n:
        arrived = a[i]
        t = free[0] if free[0] > arrived else arrived
        j = after(a, t, i)  # requests arrived by t
        if t < arrived + delay_ms and wait_until(j - i, arrived / 1000.0, j < n) is not None:
            # a fuller batch: dispatch when it fills, when the last request arrives, or at the oldest's deadline
            t = max(t, min(arrived + delay_ms, a[min(i + limit, n) - 1]))
            j = after(a, t, i)
        m = min(limit, j - i)
        end = t + table[m][draws[len(ends)]]
        heapq.heapreplace(free, end)  # the instance that took the batch is free at its end
        ends.append(end)
        counts.append(m)
        i += m
    return np.repeat(np.asarray(ends), counts) - np.asarray(a)


def _requests(percentile: float) -> int:
    return min(MAX_REQUESTS, max(MIN_REQUESTS, math.ceil(TAIL_REQUESTS / (1.0 - percentile))))


def predict_capacity(batch_times_ms: Mapping[int, Sequence[float]], *, bound_ms: float, percentile: float,
                     max_batch: int, max_queue_delay_ms: float = DEFAULT_MAX_QUEUE_DELAY_MS, instances: int = 1,
                     seed: int = 0) -> Prediction:
    """The highest Poisson rate whose simulated ``percentile`` of request latency is within ``bound_ms``."""
    _check(batch_times_ms, bound_ms, percentile, max_batch, max_queue_delay_ms, instances)
    sizes = sorted(batch_times_ms)  # those below max_batch, and the next measured one at or above it
    used = tuple(s for s in sizes if s < max_batch) + (min(s for s in sizes if s >= max_batch),)
    table = _service_table({s: batch_times_ms[s] for s in used}, max_batch)
    n = _requests(percentile)
    rng = np.random.default_rng(seed)
    unit_arrivals = np.cumsum(rng.exponential(1.0, n))  # a Poisson process at 1 request per second
    draws = rng.integers(0, QUANTILES, n).tolist()
    batcher = Batcher(max_batch, max_queue_delay_ms / 1000.0)

    def p_at(qps: float) -> float:
        latencies = simulate((unit_arrivals * (1000.0 / qps)).tolist(), table, draws, batcher, instances)
        return float(np.percentile(latencies, percentile * 100))

    # no rate above the one at which full batches back to back keep every instance busy can be sustained
    saturation = instances * max(m / (sum(table[m]) / QUANTILES) for m in range(1, max_batch + 1)) * 1000.0
    notes = [] if used[0] == 1 else [f"batches of fewer than {used[0]} take the measured time of {used[0]} "
                                     "(conservative)"]
    if instances > 1:
        notes.append(f"{instances} instances assumed as fast as one alone (an upper bound when they share a device)")
    lo, hi = saturation * LOWEST_RATE, saturation
    p_lo = p_at(lo)
    if p_lo > bound_ms:
        notes.insert(0, f"even at {lo:.3g} QPS the p{percentile * 100:g} is {p_lo:.1f} ms > the bound {bound_ms:g} ms "
                        "(service time and batching delay alone)")
        return Prediction(None, percentile, bound_ms, None, max_batch, max_queue_delay_ms, instances, used,
                          "; ".join(notes))
    while hi - lo > RATE_PRECISION * lo:
        mid = math.sqrt(lo * hi)
        p_mid = p_at(mid)
        if p_mid <= bound_ms:
            lo, p_lo = mid, p_mid
        else:
            hi = mid
    return Prediction(lo, percentile, bound_ms, p_lo, max_batch, max_queue_delay_ms, instances, used,
                      "; ".join(notes))


def _check(batch_times_ms: Mapping[int, Sequence[float]], bound_ms: float, percentile: float, max_batch: int,
           max_queue_delay_ms: float, instances: int) -> None:
    """One line naming the bad value and what is accepted (ValueError: this is called by code, not a user)."""
    if not batch_times_ms:
        raise ValueError("no measured batch times; accepted: {batch size: [per-batch ms, ...]} with at least one size")
    for size, times in batch_times_ms.items():
        if not (isinstance(size, int) and size >= 1) or not times or not all(is_finite(t) and t > 0 for t in times):
            raise ValueError(f"bad batch times for batch size {size!r}; accepted: an integer size >= 1 with "
                             "positive finite per-batch times")
    if max_batch > max(batch_times_ms):
        raise ValueError(f"max_batch {max_batch} is past the largest measured batch size {max(batch_times_ms)}; "
                         "accepted: at most that (batch times are never extrapolated)")
    checks = ((bound_ms, is_finite(bound_ms) and bound_ms > 0, "bound_ms", "a finite number > 0"),
              (percentile, is_finite(percentile) and 0 < percentile < 1, "percentile", "a number between 0 and 1"),
              (max_batch, isinstance(max_batch, int) and max_batch >= 1, "max_batch", "an integer >= 1"),
              (max_queue_delay_ms, is_finite(max_queue_delay_ms) and max_queue_delay_ms >= 0, "max_queue_delay_ms",
               "a finite number >= 0"),
              (instances, isinstance(instances, int) and instances >= 1, "instances", "an integer >= 1"))
    for value, ok, name, accepted in checks:
        if not ok:
            raise ValueError(f"bad {name} {value!r}; accepted: {accepted}")


def _setting_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if not private(f.name))


_RECORD_SETTING = tuple(n for n in _setting_fields(Record) if n not in NOT_SETTING and n != "settings")
_OPTIONS_SETTING = tuple(n for n in _setting_fields(Settings) if n not in NOT_SETTING_OPTIONS)


def setting_key(record: Record) -> tuple:
    """A record's setting without its batch size and scenario: ``(name, value)`` pairs, options flattened."""
    pairs = [(n, getattr(record, n)) for n in _RECORD_SETTING]
    pairs += [(f"settings.{n}", getattr(record.settings, n)) for n in _OPTIONS_SETTING]
    return tuple(sorted(pairs))


def _per_batch_ms(record: Record) -> list[float]:
    """One closed-loop cell's raw per-batch wall times (ms). Its ``samples_ms`` hold one sample per batch: the
    batch's wall time, first preprocess to last postprocess. With prefetch a sample runs from the start of
    the batch's preparation, waiting for the batch before it included, so the samples overstate a batch's
    time (about twice it when the model is the bottleneck): they are scaled so their sum is the measured
    wall time of the batches (their mean is then wall time / batches), their spread kept."""
    samples = record.samples_ms.tolist()
    if not record.settings.prefetch or not samples:
        return samples
    wall_ms = (figure(record, "throughput.wall_s") or 0.0) * 1000.0
    if not wall_ms > 0:
        return []
    scale = wall_ms / sum(samples)
    return [v * scale for v in samples]


def batch_times(records: Iterable[Record]) -> dict[tuple, dict[int, list[float]]]:
    """Per setting: batch size -> raw per-batch wall times (ms) of its offline and single-stream cells (ok only)."""
    found: dict[tuple, dict[int, list[float]]] = {}
    for record in records:
        if record.status != "ok" or record.scenario not in CLOSED_LOOP:
            continue
        times = _per_batch_ms(record)
        if times:
            found.setdefault(setting_key(record), {}).setdefault(int(record.batch_size), []).extend(times)
    return found


def predictions(records: Iterable[Record], *, bound_ms: float, percentile: float,
                **kw: Any) -> dict[tuple, list[Prediction]]:
    """Per setting, one prediction per measured batch size as the max batch (``kw``: ``predict_capacity``'s)."""
    return {key: [predict_capacity(times, bound_ms=bound_ms, percentile=percentile, max_batch=size, **kw)
                  for size in sorted(times)]
            for key, times in batch_times(records).items()}
