"""The levels of a run series: its noise (robust spread, successive differences), the noise band a new
run is judged in, and the change points where a new level starts (clipped optimal partition). Its own
module because these are the statistics of a series alone, apart from how runs become points
(``bench.regression.history.detect``) and what is judged against them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

K_BASELINE = 10
SPREAD_RUNS = 30
Z_CHECK = 3.5
Z_STEP = 4.5
MIN_SEGMENT = 3
CLIP = 3.0  # steps: values further than this many sigma from their running median are clipped
MAD_SCALE = 1.4826  # median absolute deviation -> standard deviation of a normal
BIWEIGHT_C = 9.0  # the biweight's tuning constant: points beyond 9 MADs (~6 SD) get no weight


@dataclass
class Point:
    """One run's value of one cell and metric, on the judged scale (log for ratios)."""

    index: int  # position of the run in the history (oldest first)
    x: float
    se: float  # sample noise of x from the run's own samples; 0 where there are none


def robust_sd(x: np.ndarray) -> float:
    """Tukey's biweight midvariance, as a standard deviation: as robust to an outlier run as the median
    absolute deviation, but ~87% as efficient as the plain SD on normal noise (the MAD: 37%), so that a
    baseline of 10 runs does not underestimate the noise by half one time in four."""
    x = np.asarray(x, dtype=float)
    center = np.median(x)
    mad = float(np.median(np.abs(x - center)))
    if len(x) < 2 or mad == 0:
        return 0.0
    u = (x - center) / (BIWEIGHT_C * mad)
    inside = np.abs(u) < 1
    d, u = (x - center)[inside], u[inside]
    numerator = math.sqrt(len(x) * float(np.sum(d**2 * (1 - u**2) ** 4)))
    return numerator / abs(float(np.sum((1 - u**2) * (1 - 5 * u**2))))


def successive_sd(x: np.ndarray) -> float:
    """The noise of a series that may hold steps and outliers: each moves only one or two differences."""
    return MAD_SCALE * float(np.median(np.abs(np.diff(x)))) / math.sqrt(2) if len(x) > 1 else 0.0


def series_sigma(points: list[Point]) -> float:
    """The noise of a whole series: its successive-difference spread, never below its sample noise."""
    x = np.array([p.x for p in points])
    within = float(np.median([p.se for p in points])) if points else 0.0
    return max(successive_sd(x), within)


def current_level(points: list[Point], z: float = Z_STEP) -> list[Point]:
    """The runs since the last step among ``points`` (all of them when there is none), so that a
    baseline never mixes two levels: after an accepted step the gate judges against the new level."""
    breaks = segment(np.array([p.x for p in points]), series_sigma(points), z)
    return points[breaks[-1] :] if breaks else points


def noise_band(
    level: list[Point], new: Point, k: int = K_BASELINE, z: float = Z_CHECK
) -> tuple[float, float, float]:
    """(baseline median, sigma, band) for judging ``new`` against the previous runs at its level.

    The center is the median of the last ``k`` runs; the spread comes from up to ``SPREAD_RUNS`` of
    them (a spread from few runs is itself noisy, and an underestimate is a false alarm).
    """
    base, spread = level[-k:], level[-SPREAD_RUNS:]
    center = float(np.median([p.x for p in base]))
    within = float(np.median([p.se for p in [*spread, new]]))
    sigma = max(robust_sd(np.array([p.x for p in spread])), within)
    return center, sigma, z * sigma * math.sqrt(1 + math.pi / (2 * len(base)))


def segment(x: np.ndarray, sigma: float, z: float = Z_STEP, min_segment: int = MIN_SEGMENT) -> list[int]:
    """Indices where a new level starts.

    1. Each value is clipped to within ``CLIP`` sigma of a running median of ``2 * min_segment - 1``
       runs (which keeps a step's edge and flattens a lone outlier).
    2. The optimal partition of the clipped series into segments of at least ``min_segment`` runs,
       minimising the squared deviations from each segment's mean (in units of sigma^2) plus ``z^2``
       per segment: a boundary must explain more than a z-sigma shift would. Dynamic programming over
       every partition, so a level that returns (a regression, then its fix) is found as two steps,
       which a search for one split at a time cannot see.
    3. Each boundary is kept only while the *medians* of the raw runs on either side differ by more
       than ``z`` standard errors; the weakest is merged away first.
    """
    return segments([(x, sigma)], z, min_segment)[0]


def segments(
    series: Sequence[tuple[np.ndarray, float]], z: float = Z_STEP, min_segment: int = MIN_SEGMENT
) -> list[list[int]]:
    """``segment`` of each (values, sigma): the series of one length at once, a row each (a 1,000-run history
    of 100 cells has hundreds of series; one dynamic programme per series is a Python loop per run each)."""
    out: list[list[int]] = [[] for _ in series]
    groups: dict[int, list[int]] = {}
    for i, (x, sigma) in enumerate(series):
        if len(x) >= 2 * min_segment and sigma > 0:
            groups.setdefault(len(x), []).append(i)
    for members in groups.values():
        for chunk in (members[c : c + ROWS_AT_ONCE] for c in range(0, len(members), ROWS_AT_ONCE)):
            x = np.stack([series[i][0] for i in chunk])
            sigma = np.array([series[i][1] for i in chunk], dtype=float)[:, None]
            running = running_median(x, min_segment - 1)
            y = np.clip(x, running - CLIP * sigma, running + CLIP * sigma) / sigma
            for i, breaks in zip(chunk, partition_rows(y, z**2, min_segment), strict=True):
                out[i] = _merged(series[i][0], breaks, series[i][1], z)
    return out


ROWS_AT_ONCE = 64
"""Series per dynamic programme: enough to share each step's numpy calls, few enough that its arrays stay in
the CPU's cache."""


def _merged(x: np.ndarray, breaks: list[int], sigma: float, z: float) -> list[int]:
    """The boundaries whose raw medians differ by more than ``z`` standard errors, the weakest merged first."""
    n = len(x)
    while breaks:
        bounds = [0, *breaks, n]
        zs = [
            step_z(x[bounds[m] : bounds[m + 1]], x[bounds[m + 1] : bounds[m + 2]], sigma)
            for m in range(len(breaks))
        ]
        weakest = int(np.argmin(zs))
        if zs[weakest] > z:
            break
        del breaks[weakest]
    return breaks


def running_median(x: np.ndarray, half: int) -> np.ndarray:
    """The median of each value's window ``x[i - half : i + half + 1]`` (cut at the ends), along the last axis
    (a row per series): the full windows in one numpy call, a 1,000-run series being 1,000 windows."""
    n, width = x.shape[-1], 2 * half + 1
    out = np.empty(x.shape)
    if n >= width:
        out[..., half : n - half] = np.median(np.lib.stride_tricks.sliding_window_view(x, width, axis=-1), axis=-1)
    for i in [*range(min(half, n)), *range(max(half, n - half), n)]:
        out[..., i] = np.median(x[..., max(0, i - half) : i + half + 1], axis=-1)
    return out


def partition(y: np.ndarray, penalty: float, min_segment: int = MIN_SEGMENT) -> list[int]:
    """The starts (after the first) of the segments, each at least ``min_segment`` long, that minimise
    the sum of squared deviations of ``y`` from each segment's mean plus ``penalty`` per segment: the
    exact optimum, by dynamic programming over every partition (cumulative sums make a segment's cost
    sum(y^2) - sum(y)^2 / n)."""
    return partition_rows(np.asarray(y, dtype=float)[None, :], penalty, min_segment)[0]


def partition_rows(y: np.ndarray, penalty: float, min_segment: int = MIN_SEGMENT) -> list[list[int]]:
    """``partition`` of each row of ``y`` (series of one length), the rows' programmes run side by side."""
    rows, n = y.shape
    s1, s2 = np.zeros((rows, n + 1)), np.zeros((rows, n + 1))
    np.cumsum(y, axis=1, out=s1[:, 1:])
    np.cumsum(y**2, axis=1, out=s2[:, 1:])
    best = np.full((rows, n + 1), np.inf)
    best[:, 0] = -penalty
    start = np.zeros((rows, n + 1), dtype=int)
    index, every = np.arange(n + 1), np.arange(rows)
    for j in range(min_segment, n + 1):
        k = j - min_segment + 1  # the segment ending at j may start at 0 .. k - 1 (slices, not index arrays)
        total = best[:, :k] + (s2[:, j, None] - s2[:, :k]) - (s1[:, j, None] - s1[:, :k]) ** 2 / (j - index[:k]) + penalty
        m = np.argmin(total, axis=1)
        best[:, j], start[:, j] = total[every, m], m
    out = []
    for row in start.tolist():
        breaks, j = [], n
        while j > 0:
            j = row[j]
            if j > 0:
                breaks.append(j)
        out.append(sorted(breaks))
    return out


def steps_method_text(min_segment: int = MIN_SEGMENT, z: float = Z_STEP) -> str:
    """How ``steps`` finds a step, in the words the trend page shows (the code above, stated once)."""
    return (
        "Per machine class, cell and metric, the series of per-run values (computed as florence2-bench compare "
        "computes them: medians and p90s from the raw samples, ratios on a log scale, accuracy in points) has "
        f"each value clipped to within {CLIP:g} sigma of a running median of {2 * min_segment - 1} runs, and is then "
        f"cut into segments of constant level, each at least {min_segment} runs long, by the partition that "
        "minimises the squared deviations from each segment's mean (in units of the noise sigma squared) plus "
        f"{z:g}² per segment, found exactly by dynamic programming. A cut is kept while the medians of the raw "
        f"runs on either side differ by more than {z:g} standard errors (sigma: the robust spread of successive "
        "runs, never less than the runs' own sample noise; the weakest cut is merged away first), and listed when "
        "the change is also beyond compare's threshold for the metric. A single outlier run never forms a segment."
    )


CELL_LEVEL_RULE = (
    "a step found in any metric of a cell starts the baseline of all the cell's metrics: every metric is judged "
    "against the runs since the cell's latest step, so the metrics of one cell agree about where the step is"
)


def cell_level_start(priors: dict[str, list[Point]], z: float = Z_STEP) -> tuple[int | None, str | None]:
    """(the run where the cell's current level starts, the metric whose step put it there); (None, None)
    when no metric of the cell has a step. The runs before a step ran another configuration of the cell
    (code, driver, machine state), whichever of its metrics showed it; see CELL_LEVEL_RULE."""
    return cell_level_starts([priors], z)[0]


def cell_level_starts(cells: list[dict[str, list[Point]]], z: float = Z_STEP) -> list[tuple[int | None, str | None]]:
    """``cell_level_start`` of each cell, every metric's series segmented at once (``segments``)."""
    flat = [(c, metric, prior) for c, priors in enumerate(cells) for metric, prior in priors.items()]
    found = segments([(np.array([p.x for p in prior]), series_sigma(prior)) for _, _, prior in flat], z)
    out: list[tuple[int | None, str | None]] = [(None, None)] * len(cells)
    for (c, metric, prior), breaks in zip(flat, found, strict=True):
        start = out[c][0]
        if breaks and (start is None or prior[breaks[-1]].index > start):  # the level since the latest step
            out[c] = (prior[breaks[-1]].index, metric)
    return out


def step_z(left: np.ndarray, right: np.ndarray, sigma: float) -> float:
    se = sigma * math.sqrt(math.pi / 2 * (1 / len(left) + 1 / len(right)))
    return abs(float(np.median(right) - np.median(left))) / se
