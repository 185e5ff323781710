"""The seeded percentile bootstrap of a cell's latency ratio (current/baseline quantiles), batched over
cells. Its own module because it is the statistics of the compare, with its own memory bound and seeding
rules, independent of how rows are labelled or rendered."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.regression.values import sample_values, samples_of

CI_LEVEL = 0.90
"""Two-sided level of the percentile interval. Each verdict only looks at one side of it, so a
regression is declared at one-sided 95% confidence (the TOST convention for equivalence margins)."""

MIN_BOOTSTRAP_SAMPLES = 2
"""Below this many samples in either run there is nothing to resample: fall back to single values."""

BOOT_ELEMENTS = 2_000_000
"""Resampled values drawn per call: bounds the memory of one cell's draw and of one batch of cells."""


def _draw(n_base: int, n_cur: int, rng: np.random.Generator, n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """One cell's resample indices, drawn from its own generator in chunks of ``BOOT_ELEMENTS`` (the
    stream a verdict was always drawn from: it depends on the cell alone, never on the other cells)."""
    chunk = max(1, BOOT_ELEMENTS // max(n_base, n_cur))
    b, c = [], []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        b.append(rng.integers(0, n_base, (size, n_base)))
        c.append(rng.integers(0, n_cur, (size, n_cur)))
    return np.concatenate(b), np.concatenate(c)


def sorted_quantiles(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """``np.quantile(values, quantiles, axis=-1)`` (its default linear method, bit for bit: the same order
    statistics and the same interpolation) of values already sorted along their last axis, shape
    (quantiles, ...): no partition per row, so millions of short rows cost a few array operations."""
    n = values.shape[-1]
    virtual = (n - 1) * quantiles
    below = np.floor(virtual)
    gamma = virtual - below
    below = below.astype(np.intp)
    a, b = values[..., below], values[..., np.minimum(below + 1, n - 1)]
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)  # numpy's lerp, from the nearer end
    return np.moveaxis(out, -1, 0)


def bootstrap_ratios(
    pairs: list[tuple[np.ndarray, np.ndarray, np.random.Generator]],
    quantiles: tuple[float, ...],
    n_boot: int,
    level: float = CI_LEVEL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point ratio and percentile interval of quantile(current)/quantile(baseline), per cell and quantile
    (arrays of shape (cells, quantiles)), for (baseline samples, current samples, the cell's generator)
    pairs.

    Both runs are resampled independently with replacement (they are independent runs); the same
    resample serves all quantiles. Each cell draws its indices from its own generator; the resamples of
    every cell with the same sample counts are then sorted and their quantiles taken (``sorted_quantiles``)
    in a few numpy calls per batch (at most ``BOOT_ELEMENTS`` values per run), not per cell, so 100,000
    cells cost a few thousand calls; the figures equal numpy's quantiles of each resample bit for bit.
    """
    q = np.asarray(quantiles, dtype=float)
    alpha = (1 - level) / 2
    point = np.empty((len(pairs), len(q)))
    low, high = np.empty_like(point), np.empty_like(point)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (b, c, _) in enumerate(pairs):
        groups.setdefault((len(b), len(c)), []).append(i)
    for (n_base, n_cur), members in groups.items():
        per_batch = max(1, BOOT_ELEMENTS // (n_boot * max(n_base, n_cur)))
        for start in range(0, len(members), per_batch):
            batch = members[start : start + per_batch]
            drawn = [_draw(n_base, n_cur, pairs[i][2], n_boot) for i in batch]
            base = np.stack([pairs[i][0] for i in batch])
            cur = np.stack([pairs[i][1] for i in batch])
            point[batch] = (sorted_quantiles(np.sort(cur, axis=1), q) / sorted_quantiles(np.sort(base, axis=1), q)).T
            b = np.take_along_axis(base[:, None, :], np.stack([d[0] for d in drawn]), axis=2)
            c = np.take_along_axis(cur[:, None, :], np.stack([d[1] for d in drawn]), axis=2)
            b.sort(axis=2)
            c.sort(axis=2)
            ratios = sorted_quantiles(c, q) / sorted_quantiles(b, q)  # (quantiles, cells, n_boot)
            low[batch], high[batch] = (np.quantile(ratios, [alpha, 1 - alpha], axis=2)).transpose(0, 2, 1)
    return point, low, high



LATENCY_QUANTILES = (0.5, 0.9)
"""The sample quantiles one bootstrap of a cell judges: latency p50 (and throughput from it) and p90."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """One cell's bootstrap (``bootstrap_ratios``' point, low and high per ``LATENCY_QUANTILES``) and each
    run's sample count and its values from samples (``sample_values``)."""

    point: np.ndarray
    low: np.ndarray
    high: np.ndarray
    base: dict[str, float]
    cur: dict[str, float]
    n_base: int
    n_cur: int


def cell_estimates(matched: list[tuple[str, dict[str, Any], dict[str, Any]]], seed: int, n_boot: int) -> dict[str, Estimate]:
    """The bootstrap of every matched cell both of whose runs are ok with enough samples, in one
    ``bootstrap_ratios`` call; each cell's generator is seeded from ``seed`` and its id alone."""
    pairs, ids, records = [], [], []
    for cell_id, base, cur in matched:
        if (base.get("status", "ok"), cur.get("status", "ok")) != ("ok", "ok"):
            continue
        b, c = samples_of(base), samples_of(cur)
        if min(len(b), len(c)) >= MIN_BOOTSTRAP_SAMPLES:
            pairs.append((b, c, np.random.default_rng([seed, zlib.crc32(cell_id.encode())])))
            ids.append(cell_id)
            records.append((base, cur))
    point, low, high = bootstrap_ratios(pairs, LATENCY_QUANTILES, n_boot)
    sides = sample_values([b for b, _, _ in pairs] + [c for _, c, _ in pairs],
                          [b for b, _ in records] + [c for _, c in records])
    n = len(pairs)
    return {cell_id: Estimate(point[i], low[i], high[i], sides[i], sides[n + i], len(pairs[i][0]), len(pairs[i][1]))
            for i, cell_id in enumerate(ids)}
