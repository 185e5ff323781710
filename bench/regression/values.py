"""A record's single value of a gate metric: from its raw samples where they define it, else the stored
figure (``MetricSpec.stored``), peak memory or accuracy score. Its own module because compare and
``bench.regression.history`` both read a run's values this way, and must agree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.core.numbers import finite_number
from bench.regression.gates import METRICS
from bench.results import Record, figure, samples
from bench.scenarios import traits_of

MEMORY_KEYS = ("cuda_peak_allocated_bytes", "nvml_peak_used_bytes", "peak_rss_bytes")
"""Which peak to compare: the device's own when measured, else the process RSS (CPU runs)."""


def samples_of(record: Record) -> np.ndarray:
    """The record's positive finite request latencies (ms)."""
    x = samples(record)
    return x[np.isfinite(x) & (x > 0)]


def memory_value(record: Record, key: str) -> float | None:
    return figure(record, f"memory.{key}")


def memory_key(a: Record, b: Record) -> str | None:
    """The first peak measured in both runs (one run may have been on a machine without NVML)."""
    return next((k for k in MEMORY_KEYS if memory_value(a, k) is not None and memory_value(b, k) is not None), None)


def accuracy_value(record: Record, name: str) -> float | None:
    """The record's score ``name`` (a task's scores are a dict: their names vary by task)."""
    return finite_number((record.accuracy or {}).get(name))


def stored_value(record: Record, metric: str) -> float | None:
    """The single value a record stores for a gate metric, at its ``MetricSpec.stored`` path (None: absent or
    not a finite number)."""
    return figure(record, METRICS[metric].stored)


# Single values of one record that are not stored as such (every ``MetricSpec.stored`` one: ``stored_value``),
# used when there are no samples and for the side of a failed cell.
POINT_VALUES: dict[str, Callable[[Record], float | None]] = {
    "peak_memory": lambda r: next((v for k in MEMORY_KEYS if (v := memory_value(r, k)) is not None), None),
}
# The gate metrics read from the latency samples (``_latency_rows``); every other one with a stored figure
# is compared as one value per run, like peak memory (``stored_metrics``).
LATENCY_METRICS = ("latency_p50", "latency_p90", "throughput")


def stored_metrics() -> list[str]:
    """The gate metrics on a stored figure besides the latency ones, in ``METRICS`` order."""
    return [m for m, spec in METRICS.items() if spec.stored and m not in LATENCY_METRICS]


# The same values recomputed from the raw samples (request latencies), so that they match the
# bootstrap's ratios; throughput only where a request waits exactly its batch (closed loop, one
# sample per batch: the scenario's traits).
# SAMPLE_ROWS computes them for rows of samples at once (one record per row, rows of one length; ``batch``:
# each row's batch size), as bench.regression.history does for a run's records.
SAMPLE_ROWS: dict[str, Callable[[np.ndarray, Any], np.ndarray]] = {
    "latency_p50": lambda x, batch: np.median(x, axis=-1),
    "latency_p90": lambda x, batch: np.quantile(x, 0.9, axis=-1),
    "throughput": lambda x, batch: batch * 1000 / np.median(x, axis=-1),
}


def batch_of(record: Record) -> int:
    """The batch size a throughput is counted in (1 where the record has none)."""
    return int(record.batch_size or 1)


def _of_record(rows: Callable[[np.ndarray, Any], np.ndarray]) -> Callable[[np.ndarray, Record], float]:
    return lambda x, r: float(rows(x, batch_of(r)))


FROM_SAMPLES: dict[str, Callable[[np.ndarray, Record], float]] = {
    metric: _of_record(rows) for metric, rows in SAMPLE_ROWS.items()
}


def closed_loop(record: Record) -> bool:
    return traits_of(record).throughput_from_latency


def from_samples(record: Record, metric: str) -> bool:
    """Whether the record's value of ``metric`` is recomputed from its samples (given it has some)."""
    return metric in FROM_SAMPLES and (metric != "throughput" or closed_loop(record))


def point_value(record: Record, metric: str, from_rows: dict[str, float] | None = None) -> float | None:
    """A record's single value of a metric; ``from_rows``: its ``SAMPLE_ROWS`` values when already computed
    (compare computes every cell's in a few calls, ``sample_values``)."""
    if metric.startswith("accuracy."):
        return accuracy_value(record, metric.split(".", 1)[1])
    if from_rows is not None and from_samples(record, metric):
        return from_rows[metric]
    found = samples_of(record)
    if len(found) and from_samples(record, metric):
        return FROM_SAMPLES[metric](found, record)
    return stored_value(record, metric) if METRICS[metric].stored else POINT_VALUES[metric](record)


def sample_values(samples: Sequence[np.ndarray], batches: Sequence[int]) -> list[dict[str, float]]:
    """Each sample's ``SAMPLE_ROWS`` values (equal to ``FROM_SAMPLES``') given its record's batch size, one
    numpy call per metric and sample length, not one per cell. Every sample must hold at least one value."""
    out: list[dict[str, float]] = [{} for _ in samples]
    groups: dict[int, list[int]] = {}
    for i, x in enumerate(samples):
        groups.setdefault(len(x), []).append(i)
    for members in groups.values():
        rows = np.stack([samples[i] for i in members])
        batch = np.array([batches[i] for i in members])
        for metric, compute in SAMPLE_ROWS.items():
            for i, value in zip(members, compute(rows, batch).tolist(), strict=True):
                out[i][metric] = value
    return out
