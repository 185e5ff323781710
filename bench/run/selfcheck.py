"""Whether a speed figure may be judged against its target, and the judgement.

A figure measured on a busy or unsteady machine can clear any target: on a loaded 2-core machine perf
once printed a 24.5x speedup "met", the model card's snippet having slowed 7x while the harness did not
(issue 29). So a run judges itself before its figure is judged. A target is judged only when

- at least ``MIN_ROUNDS`` rounds ran (fewer give no spread);
- the A/A control, two settings that do the same work (perf: the harness's fp32 batch 1 and the model
  card's snippet), reads within ``AA_TOLERANCE`` of 1: the machine gave like work like speed;
- the host was not busy when the run started (``bench.core.host.busy``: the 1-minute load above half the
  cores; later readings include the run's own threads, so they are reported, not judged);
- the figure has an interval. It is "met" only when the interval's conservative end clears the target.

Otherwise the verdict is "not judged" with every reason. Intervals over rounds are a paired bootstrap:
the rounds are interleaved (one batch of every setting per round), so a round's batches met the same
foreign load, and resampling whole rounds keeps that pairing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.core import host

MIN_ROUNDS = 3
AA_TOLERANCE = 0.10
LEVEL = 0.95
N_BOOT = 2000

MET, NOT_MET, NOT_JUDGED, NOT_MEASURED = "met", "NOT met", "not judged", "not measured"


@dataclass(frozen=True)
class RatioInterval:
    """How many times faster one setting ran than another, with its ``LEVEL`` interval over paired rounds
    (None at fewer than 2 rounds in common)."""

    value: float
    low: float | None
    high: float | None
    rounds: int

    @property
    def interval_text(self) -> str:
        if self.low is None or self.high is None:
            return f"no interval: {self.rounds} round(s) in common"
        return f"{LEVEL:.0%} CI {self.low:.2f}-{self.high:.2f}x over {self.rounds} rounds"

    @property
    def text(self) -> str:
        return f"{self.value:.2f}x ({self.interval_text})"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "rounds": self.rounds, "level": LEVEL}


def round_ratio(
    faster_s: Sequence[float], faster_batch: int, slower_s: Sequence[float], slower_batch: int, *,
    n_boot: int = N_BOOT, seed: int = 0,
) -> RatioInterval | None:
    """Images/s of one setting over another's, each batch size / median batch time, and a percentile
    bootstrap interval that resamples the rounds both ran (round i: the i-th batch of each); None when
    either has no batch."""
    if not faster_s or not slower_s:
        return None
    value = (faster_batch / float(np.median(faster_s))) / (slower_batch / float(np.median(slower_s)))
    n = min(len(faster_s), len(slower_s))
    if n < 2:
        return RatioInterval(value, None, None, n)
    fast, slow = np.asarray(faster_s[:n], dtype=float), np.asarray(slower_s[:n], dtype=float)
    picks = np.random.default_rng(seed).integers(0, n, (n_boot, n))
    boot = np.median(slow[picks], axis=1) / np.median(fast[picks], axis=1) * (faster_batch / slower_batch)
    low, high = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return RatioInterval(value, float(low), float(high), n)


def preconditions(*, rounds: int | None, aa: RatioInterval | None, host_load: dict[str, Any] | None) -> list[str]:
    """Why the run cannot judge a target (empty when it can): too few rounds, an A/A control missing or
    off by more than ``AA_TOLERANCE``, a busy host. ``rounds`` None: not a round-based figure."""
    reasons = []
    if rounds is not None and rounds < MIN_ROUNDS:
        reasons.append(f"{rounds} round(s) completed, {MIN_ROUNDS} needed")
    if aa is None:
        reasons.append("no A/A control (the harness's fp32 batch 1 was not measured beside the snippet)")
    elif abs(aa.value - 1.0) > AA_TOLERANCE:
        reasons.append(f"the A/A control read {aa.value:.2f}x, outside 1 ± {AA_TOLERANCE:.2f}")
    return reasons + busy_reasons(host_load)


def busy_reasons(host_load: dict[str, Any] | None) -> list[str]:
    """The busy-host precondition alone (a run of records has no rounds or A/A pair of its own)."""
    return [f"the host was busy ({host.describe_load(host_load)})"] if host.busy(host_load) else []


@dataclass(frozen=True)
class Judgement:
    verdict: str
    reasons: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return f"{self.verdict}: {'; '.join(self.reasons)}" if self.reasons else self.verdict


def judge(value: float | None, low: float | None, high: float | None, threshold: float, higher_is_better: bool,
          reasons: Sequence[str] = ()) -> Judgement:
    """The verdict on a figure against its threshold: met only when the interval's conservative end (the
    lower one where higher is better) clears it and no precondition failed."""
    if value is None:
        return Judgement(NOT_MEASURED)
    edge = low if higher_is_better else high
    why = [*reasons, *(["the figure has no interval"] if edge is None else [])]
    if why or edge is None:
        return Judgement(NOT_JUDGED, tuple(why))
    ok = edge >= threshold if higher_is_better else edge <= threshold
    side = "lower" if higher_is_better else "upper"
    return Judgement(MET) if ok else Judgement(NOT_MET, (f"the interval's {side} end is {edge:.3g}",))
