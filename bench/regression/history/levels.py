"""The levels of a run series: its noise (robust spread, successive differences), the noise band a new
run is judged in, and the change points where a new level starts (clipped optimal partition). Its own
module because these are the statistics of a series alone, apart from how runs become points
(``bench.regression.history.detect``) and what is judged against them."""

from __future__ import annotations

import math
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
    n = len(x)
    if n < 2 * min_segment or sigma <= 0:
        return []
    running = running_median(x, min_segment - 1)
    y = np.clip(x, running - CLIP * sigma, running + CLIP * sigma) / sigma
    breaks = partition(y, z**2, min_segment)
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
    """The median of each value's window ``x[i - half : i + half + 1]`` (cut at the ends): the full windows
    in one numpy call, a 1,000-run series being 1,000 windows."""
    n, width = len(x), 2 * half + 1
    out = np.empty(n)
    if n >= width:
        out[half : n - half] = np.median(np.lib.stride_tricks.sliding_window_view(x, width), axis=1)
    for i in [*range(min(half, n)), *range(max(half, n - half), n)]:
        out[i] = np.median(x[max(0, i - half) : i + half + 1])
    return out


def partition(y: np.ndarray, penalty: float, min_segment: int = MIN_SEGMENT) -> list[int]:
    """The starts (after the first) of the segments, each at least ``min_segment`` long, that minimise
    the sum of squared deviations of ``y`` from each segment's mean plus ``penalty`` per segment: the
    exact optimum, by dynamic programming over every partition (cumulative sums make a segment's cost
    sum(y^2) - sum(y)^2 / n)."""
    n = len(y)
    s1, s2 = np.r_[0, np.cumsum(y)], np.r_[0, np.cumsum(y**2)]
    best = np.full(n + 1, np.inf)
    best[0] = -penalty
    start = np.zeros(n + 1, dtype=int)
    index = np.arange(n + 1)
    for j in range(min_segment, n + 1):
        k = j - min_segment + 1  # the segment ending at j may start at 0 .. k - 1 (slices, not index arrays)
        total = best[:k] + (s2[j] - s2[:k]) - (s1[j] - s1[:k]) ** 2 / (j - index[:k]) + penalty
        m = int(np.argmin(total))
        best[j], start[j] = total[m], m
    breaks, j = [], n
    while j > 0:
        j = int(start[j])
        if j > 0:
            breaks.append(j)
    return sorted(breaks)


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
    start, where = None, None
    for metric, prior in priors.items():
        level = current_level(prior, z)
        if len(level) < len(prior) and (start is None or level[0].index > start):
            start, where = level[0].index, metric
    return start, where


def step_z(left: np.ndarray, right: np.ndarray, sigma: float) -> float:
    se = sigma * math.sqrt(math.pi / 2 * (1 / len(left) + 1 / len(right)))
    return abs(float(np.median(right) - np.median(left))) / se
