"""The seeded percentile bootstrap of a cell's latency ratio (current/baseline quantiles), batched over
cells. Its own module because it is the statistics of the compare, with its own memory bound and seeding
rules, independent of how rows are labelled or rendered.

How 100,000 cells stay a few numpy calls per metric: a resample of a sorted sample is a sorted draw of
positions (0 .. n-1), and the resample's quantile is ``np.quantile``'s interpolation between two of its
order statistics, i.e. between the sample's values at two positions of that sorted draw. The positions
depend on the sample count alone, not on the values, so every cell with the same sample counts shares one
seeded draw of ``n_boot`` resamples per run (``_Positions``); each cell's resampled quantiles are then two
column gathers from its sorted samples and one interpolation, and its interval one ``np.quantile`` per
batch of cells. The figures equal ``np.quantile`` of each resample bit for bit (tests/test_compare.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.regression.values import sample_values

CI_LEVEL = 0.90
"""Two-sided level of the percentile interval. Each verdict only looks at one side of it, so a
regression is declared at one-sided 95% confidence (the TOST convention for equivalence margins)."""

MIN_BOOTSTRAP_SAMPLES = 2
"""Below this many samples in either run there is nothing to resample: fall back to single values."""

BOOT_ELEMENTS = 2_000_000
"""Values drawn or resampled per numpy call: bounds the memory of a draw and of one batch of cells."""


def sorted_quantiles(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """``np.quantile(values, quantiles, axis=-1)`` (its default linear method, bit for bit: the same order
    statistics and the same interpolation) of values already sorted along their last axis, shape
    (quantiles, ...): no partition per row, so millions of short rows cost a few array operations."""
    n = values.shape[-1]
    below, gamma = _order_statistics(n, quantiles)
    a, b = values[..., below], values[..., np.minimum(below + 1, n - 1)]
    return np.moveaxis(_lerp(a, b, gamma), -1, 0)


def _order_statistics(n: int, quantiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each quantile of n sorted values: the position below it and the weight of the one above
    (``np.quantile``'s linear method: virtual index (n - 1) q)."""
    virtual = (n - 1) * np.asarray(quantiles, dtype=float)
    below = np.floor(virtual)
    return below.astype(np.intp), virtual - below


def _lerp(a: np.ndarray, b: np.ndarray, gamma: np.ndarray | float) -> np.ndarray:
    """numpy's own interpolation between a and b (from the nearer end), so quantiles match it bit for bit."""
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=np.asarray(gamma) >= 0.5)
    return out


@dataclass(frozen=True, slots=True)
class _Positions:
    """One run's side of a group's resamples: per quantile, the positions (in the sorted sample) of the two
    order statistics each resample's quantile interpolates between, and the weight of the upper one."""

    below: np.ndarray  # (quantiles, n_boot)
    above: np.ndarray
    gamma: np.ndarray  # (quantiles,)

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, n_boot: int, quantiles: np.ndarray) -> _Positions:
        """``n_boot`` resamples of n positions with replacement, in chunks of at most ``BOOT_ELEMENTS``
        values; only the order statistics the quantiles read are kept."""
        below, gamma = _order_statistics(n, quantiles)
        columns = np.concatenate([below, np.minimum(below + 1, n - 1)])
        chunk = max(1, BOOT_ELEMENTS // n)
        kept = [np.sort(rng.integers(0, n, (min(chunk, n_boot - start), n)), axis=1)[:, columns]
                for start in range(0, n_boot, chunk)]
        order = np.concatenate(kept).T
        return cls(order[: len(below)], order[len(below):], gamma)

    def quantile(self, i: int, values: np.ndarray) -> np.ndarray:
        """Quantile ``i`` of each resample of each row of ``values`` (sorted rows): (rows, n_boot)."""
        return _lerp(values[:, self.below[i]], values[:, self.above[i]], self.gamma[i])


def bootstrap_ratios(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    quantiles: tuple[float, ...],
    n_boot: int,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point ratio and percentile interval of quantile(current)/quantile(baseline), per cell and quantile
    (arrays of shape (cells, quantiles)), for (baseline samples, current samples) pairs.

    Both runs are resampled independently with replacement (they are independent runs); the same
    resample serves all quantiles. The resamples are drawn per group of cells with the same sample
    counts from ``np.random.default_rng([seed, n_base, n_cur])``: a cell's interval depends on its own
    samples, the seed and n_boot alone, never on which other cells the runs hold.
    """
    q = np.asarray(quantiles, dtype=float)
    alpha = (1 - level) / 2
    point = np.empty((len(pairs), len(q)))
    low, high = np.empty_like(point), np.empty_like(point)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (b, c) in enumerate(pairs):
        groups.setdefault((len(b), len(c)), []).append(i)
    per_batch = max(1, BOOT_ELEMENTS // n_boot)
    for (n_base, n_cur), members in groups.items():
        rng = np.random.default_rng([seed, n_base, n_cur])
        drawn_base = _Positions.draw(rng, n_base, n_boot, q)
        drawn_cur = _Positions.draw(rng, n_cur, n_boot, q)
        for start in range(0, len(members), per_batch):
            batch = members[start : start + per_batch]
            base = np.sort(np.stack([pairs[i][0] for i in batch]), axis=1)
            cur = np.sort(np.stack([pairs[i][1] for i in batch]), axis=1)
            point[batch] = (sorted_quantiles(cur, q) / sorted_quantiles(base, q)).T
            for j in range(len(q)):
                ratios = drawn_cur.quantile(j, cur)
                ratios /= drawn_base.quantile(j, base)
                low[batch, j], high[batch, j] = np.quantile(ratios, [alpha, 1 - alpha], axis=1)
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


def cell_estimates(
    cells: Sequence[tuple[str, np.ndarray, np.ndarray, int, int]], seed: int, n_boot: int
) -> dict[str, Estimate]:
    """The bootstrap of every cell given as (cell id, baseline samples, current samples, baseline batch
    size, current batch size) with enough samples on both sides, in one ``bootstrap_ratios`` call."""
    cells = [c for c in cells if min(len(c[1]), len(c[2])) >= MIN_BOOTSTRAP_SAMPLES]
    point, low, high = bootstrap_ratios([(b, c) for _, b, c, _, _ in cells], LATENCY_QUANTILES, n_boot, seed)
    sides = sample_values([b for _, b, _, _, _ in cells] + [c for _, _, c, _, _ in cells],
                          [nb for *_, nb, _ in cells] + [nc for *_, nc in cells])
    n = len(cells)
    return {cell_id: Estimate(point[i], low[i], high[i], sides[i], sides[n + i], len(b), len(c))
            for i, (cell_id, b, c, _, _) in enumerate(cells)}
