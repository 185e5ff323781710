"""Capacity search: the highest load (QPS) at which the server scenario gives a valid run.

A valid run met MLPerf's rules (``bench.scenarios.server``: its length, and early stopping for the
chosen percentile under the latency bound); an invalid run counts as "too high". The search:

1. starts at the ceiling, the offline throughput at the cell's batch size (a server cannot sustain
   more than the same model running full batches back to back); if even that run is valid it steps
   up by 1.5x until one is not, never above ``max_qps`` (the load whose minimum duration fills
   ``max_requests``): a valid run there ends the search with capacity at least that load;
2. otherwise halves the load until a run is valid, and gives up ("unreachable") when a lighter load
   cannot help: the last run kept up with its load and yet its fastest request exceeded the bound, or
   no request of it waited for a busy model, so its percentile was service time alone (on a noisy
   machine, the spread of service times may exceed a bound that the median meets), or it could not be
   as long as its percentile needs within ``max_duration_s`` (a lighter load needs longer still). A run
   that fell behind says nothing of the service time (its backlog delays every request, the first ones
   too), so the load is always halved after one;
3. bisects between the highest valid and the lowest invalid load until they are within
   ``PRECISION`` (5%) of each other;
4. signs the capacity with *final runs* (``final``: the server's runs of at least
   ``final_min_duration_s``): a short run near the bound can pass an overload (at p90 with 10 s, an
   M/D/1 run at the saturation rate passes about half the time), a long one rarely does. If the final run at the highest
   valid load fails, the load steps down by 1.5x until a final run passes, then bisects between them
   with final runs to ``PRECISION``; at most ``MAX_FINAL_STEPS`` final runs.

With a predicted capacity (``start_qps``, ``bench.scenarios.predict`` from the cell's own batch times), the
search starts there instead of at the ceiling. With ``repredict`` (``bench.scenarios.server``: the same
prediction from the batch times the step itself measured, so at the machine's speed during the step) each
step's re-prediction picks the next rate, *guided steps*:

- all steps valid so far (highest ``lo``): the re-prediction, at least ``PRECISION`` above ``lo`` and at most
  ``STEP_UP`` times it; all invalid (lowest ``hi``): the re-prediction, at least ``PRECISION`` below ``hi``
  and at most half of it;
- a bracket [``lo``, ``hi``] wider than two ``PRECISION`` steps: the re-prediction, at least ``PRECISION``
  inside each end (so a valid step at ``hi / (1 + PRECISION)`` or an invalid one at ``lo x (1 + PRECISION)``
  closes it), or the midpoint when the re-prediction lies outside the bracket (the runs refuted it);
  a narrower bracket: the midpoint.

When the prediction was off because the machine's speed changed between the cell's probe batches and the
search (as measured on this CPU: 17% off), the first re-prediction is close and two more runs close the
bracket: three or four runs instead of the neighbour walk. A re-prediction on the side the runs refuted
(at or below a valid rate, at or above an invalid one: the model is biased against this machine's short
runs, or the runs are noisy near the capacity) gallops instead: ``PRECISION`` beyond the run's rate, then
twice that in percent terms, four times, ... (within ``STEP_UP`` and halving) while the refutations go on. Without ``repredict``, the first ``NEIGHBOURS`` steps away
from the start go to the neighbouring rates (``PRECISION`` above after a valid run, below after an invalid
one), then the rules above. Every step is judged as in the search from the ceiling: guided steps change
where the runs go, never how a run is judged, and the final runs still sign the capacity.

Every step is a full server run with the same seed (the same random pattern, scaled to each rate),
kept in ``steps``: the latency-vs-QPS curve. ``capacity_qps`` is the highest valid load (with final runs:
the highest load a final run passed), or None; ``bracket`` is [highest valid, lowest invalid] as the
search proved them (either may be None).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

PRECISION = 0.05  # stop when the invalid load is within 5% above the valid one
MAX_STEPS = 14  # a bound on the run time; the search says when it stopped here
STEP_UP = 1.5
MAX_FINAL_STEPS = 8  # final runs (long) after the short search: the same bound's reasoning
NEIGHBOURS = 2  # steps of PRECISION away from a predicted start before the search falls back to STEP_UP or halving


class Step(Protocol):
    """What the search needs of one run (``bench.scenarios.server.ServerRun``)."""

    target_qps: float
    valid: bool
    kept_up: bool  # achieved about the target load: no backlog grew
    latencies_ms: list[float]
    latency_bound_ms: float | None
    queued: int  # requests that waited for a busy model (beyond the batcher's own delay)
    too_short: str | None  # why the run could not be as long as its percentile needs (None: it was)
    final: bool  # a final run, of the length that signs a capacity


StepT = TypeVar("StepT", bound=Step)


@dataclass
class Search(Generic[StepT]):
    steps: list[StepT] = field(default_factory=list)
    capacity_qps: float | None = None
    stop_reason: str = ""

    @property
    def representative(self) -> StepT:
        """The run the cell's own figures come from: the one at capacity (a final run when there are any),
        else the lightest load tried."""
        valid = [s for s in self.steps if s.valid]
        valid = [s for s in valid if s.final] or valid
        if valid:
            return max(valid, key=lambda s: s.target_qps)
        return min(self.steps, key=lambda s: s.target_qps)

    @property
    def bracket(self) -> tuple[float | None, float | None]:
        """(highest valid load, lowest invalid load above it) of the steps run (the valid end: the capacity,
        which final runs signed when there are any; an invalid short run is as invalid as a long one)."""
        lo = self.capacity_qps
        above = [s.target_qps for s in self.steps if not s.valid and (lo is None or s.target_qps > lo)]
        return lo, min(above) if above else None


def _closed(lo: float, hi: float, precision: float) -> bool:
    """The invalid load is within ``precision`` above the valid one (a neighbour step lands on the edge)."""
    return hi <= lo * (1 + precision) * (1 + 1e-9)


def _unreachable(last: Step, bound_ms: float | None) -> str | None:
    """Why no lighter load than an invalid step's can be valid (the search stops); None: a lighter one may be."""
    if last.too_short:
        return f"unreachable: at {last.target_qps:.3g} QPS {last.too_short}"
    if last.kept_up and bound_ms is not None and min(last.latencies_ms) > bound_ms:
        return (f"unreachable: the fastest request at {last.target_qps:.3g} QPS took "
                f"{min(last.latencies_ms):.1f} ms > the bound {bound_ms:g} ms")
    if last.kept_up and last.queued == 0:
        return (f"unreachable: at {last.target_qps:.3g} QPS no request waited for the model, "
                "yet the run was invalid: its percentile is service time, which no lighter "
                "load lowers")
    return None


def _bisected(lo: float | None, hi: float | None, n_steps: int, precision: float, max_steps: int) -> str:
    """Why the bisection stopped: no valid load, the step limit, or a bracket closed to ``precision``."""
    if lo is None:
        return f"no valid load found in {n_steps} steps (lowest tried {hi:.3g} QPS)"
    if hi is None or not _closed(lo, hi, precision):
        return f"step limit {max_steps} reached before the bracket closed to {precision:.0%}"
    return f"bracket [{lo:.4g}, {hi:.4g}] QPS within {precision:.0%}"


def search(run_at: Callable[[float], StepT], ceiling_qps: float, bound_ms: float | None,
           precision: float = PRECISION, max_steps: int = MAX_STEPS, max_qps: float = math.inf,
           start_qps: float | None = None, final_at: Callable[[float], StepT] | None = None,
           repredict: Callable[[StepT], float | None] | None = None) -> Search[StepT]:
    """Bracket from ``start_qps`` (a prediction) or else ``ceiling_qps``, guided by ``repredict(step)`` (the
    capacity predicted again from a step; None: not guided), then bisect; ``run_at(qps)`` runs and judges
    one step, ``final_at(qps)`` one final run (None: the capacity rests on the steps alone)."""
    if not ceiling_qps > 0:
        raise ValueError(f"the search needs a positive ceiling, got {ceiling_qps!r}")
    if start_qps is not None and not start_qps > 0:
        raise ValueError(f"the search needs a positive start, got {start_qps!r}")
    found: Search[StepT] = Search()
    rule = _Rule(precision, max_qps, start_qps is not None)
    lo: float | None = None
    hi: float | None = None
    qps = min(ceiling_qps, max_qps, start_qps or math.inf)
    while len(found.steps) < max_steps:
        step = run_at(qps)
        found.steps.append(step)
        lo, hi = (qps, hi) if step.valid else (lo, qps)
        if lo is None and (unreachable := _unreachable(step, bound_ms)):
            found.stop_reason = unreachable
            return found
        if hi is None and lo is not None and lo >= max_qps:
            found.capacity_qps = lo
            found.stop_reason = (f"capacity at least {lo:.4g} QPS: a heavier run would need more than "
                                 "max_requests requests for min_duration_s")
            return found
        if lo is not None and hi is not None and _closed(lo, hi, precision):
            break
        guess = repredict(step) if repredict is not None and start_qps is not None else None
        qps = rule.next(lo, hi, guess, len(found.steps))
    found.capacity_qps = lo
    found.stop_reason = _bisected(lo, hi, len(found.steps), precision, max_steps)
    if final_at is not None and lo is not None:
        _sign(found, final_at, lo, precision)
    return found


@dataclass
class _Rule:
    """Where the next step goes (module docstring): guided by a re-prediction when there is one, else the
    neighbours of a predicted start, then ``STEP_UP`` / halving / bisection."""

    precision: float
    max_qps: float
    predicted: bool  # the search started from a prediction
    refuted: int = 0  # guided steps in a row whose re-prediction sat on the side the runs had refuted

    def next(self, lo: float | None, hi: float | None, guess: float | None, n_steps: int) -> float:
        up = 1 + self.precision
        if lo is not None and hi is not None:
            if guess is None or not lo <= guess <= hi or hi <= lo * up * up:
                return (lo + hi) / 2
            return min(max(guess, lo * up), hi / up)
        # one side known: ``near`` is its neighbour, ``far`` the step of the search from the ceiling
        near, far = (lo * up, lo * STEP_UP) if hi is None else (hi / up, hi / 2)  # type: ignore[operator]
        if guess is None:
            qps = near if self.predicted and n_steps <= NEIGHBOURS else far
        else:  # a re-prediction the runs refuted k times in a row: steps of PRECISION, doubled k - 1 times
            self.refuted = self.refuted + 1 if (guess <= near if hi is None else guess >= near) else 0
            if self.refuted:
                end, sign = (lo, 1) if hi is None else (hi, -1)
                guess = end * up ** (sign * 2 ** (self.refuted - 1))  # type: ignore[operator]
            qps = sorted((near, guess, far))[1]
        return min(qps, self.max_qps)


def _sign(found: Search[StepT], final_at: Callable[[float], StepT], qps: float, precision: float) -> None:
    """Final runs from the short search's capacity ``qps``: kept if its final run passes; else step down by
    ``STEP_UP`` until one passes, then bisect between it and the lowest final failure."""
    lo: float | None = None
    hi: float | None = None
    start = len(found.steps)

    def passes(at: float) -> bool:
        step = final_at(at)
        found.steps.append(step)
        return step.valid

    while lo is None and len(found.steps) - start < MAX_FINAL_STEPS:
        if passes(qps):
            lo = qps
        else:
            hi, qps = qps, qps / STEP_UP
            if found.steps[-1].too_short:
                break  # a lighter final run needs longer still
    while lo is not None and hi is not None and not _closed(lo, hi, precision) \
            and len(found.steps) - start < MAX_FINAL_STEPS:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    found.capacity_qps = lo
    runs = len(found.steps) - start
    if lo is None:
        found.stop_reason = f"no load passed a final run ({runs} tried, lowest {qps * STEP_UP:.4g} QPS)"
    elif hi is None:
        found.stop_reason += f"; signed by a final run at {lo:.4g} QPS"
    else:
        closed = "within" if _closed(lo, hi, precision) else "not yet within"
        found.stop_reason = (f"final runs ({runs}): the short search's capacity failed; bracket [{lo:.4g}, "
                             f"{hi:.4g}] QPS {closed} {precision:.0%}")
