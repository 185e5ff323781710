"""The page's decision and recommendation: per task and device kind, the best setting for each goal a buyer
asks (``GOALS``: throughput, latency, capacity, cost, energy), with the interval of its judged figure, flagged
when unstable or invalid; and the task's overall pick, which is the answer's (``bench.report.answer``), so
the Answer, Decision and Recommendation sections never disagree."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench.pages.page import format_number
from bench.report import answer as answers
from bench.report.option import Option
from bench.report.report_rows import DeviceKind, Row, group_by, kinds_of, lower_is_better
from bench.report.uncertainty import ALTERNATIVE_FACTOR, STABLE_HALF_WIDTH

NONE_MEETS = "none meets it"


def _fmt(value: float, unit: str) -> str:
    return f"{format_number(value)} {unit}".strip()


@dataclass(frozen=True)
class Goal:
    """One question a buyer asks; ``value`` gives a row's figure for it (None: the row does not answer it)."""

    name: str
    label: str
    higher_is_better: bool
    value: Callable[[Row, float | None], float | None]
    show: Callable[[float, Row, float | None], str]
    basis: str  # how the figure is obtained, shown under the table


def _capacity_value(r: Row, bound: float | None) -> float | None:
    found = r.capacity(bound)
    return found[0] if found else None


GOALS: tuple[Goal, ...] = (
    Goal(
        "throughput",
        "highest throughput",
        True,
        lambda r, b: r.ips if r.traits.closed_loop else None,
        lambda v, r, b: _fmt(v, "images/s") + f" ({r.scenario or 'scenario unknown'})",
        "measured images per second of offline and single-stream cells (batch work, no latency bound)",
    ),
    Goal(
        "latency",
        "lowest single-stream request latency (p90)",
        False,
        lambda r, b: r.latency(r.traits.statistic) if r.traits.reads == "latency" else None,
        lambda v, r, b: _fmt(v, f"ms {r.traits.statistic}"),
        "measured request latency p90 of single-stream cells (one request at a time, no queue)",
    ),
    Goal(
        "capacity",
        "highest server capacity within the latency bound",
        True,
        _capacity_value,
        lambda v, r, b: _fmt(v, "requests/s") + f" ({r.capacity(b)[1]})",
        "measured: the highest Poisson arrival rate a server cell sustained validly with the percentile its search "
        "judged (p99 unless its record says otherwise) within the bound",
    ),
    Goal(
        "cost",
        "lowest cost per million images",
        False,
        lambda r, b: r.cost_per_million if r.traits.closed_loop else None,
        lambda v, r, b: f"${format_number(v)} ({r.price.text if r.price else ''})",
        "derived: price per hour ÷ 3600 ÷ measured images per second × 10⁶ (batch work, device kept busy)",
    ),
    Goal(
        "cost_within_bound",
        "cheapest way to serve the question (the answer's pick)",
        False,
        lambda r, b: None,  # not a figure of one row: ``decide`` takes the answer's pick
        lambda v, r, b: f"${format_number(v)} ({r.price.text if r.price else ''})",
        "the answer's pick for this device kind (bench.report.answer): the cheapest option whose capacity was judged at "
        "the question's percentile within the bound, valid, unflagged and through the quality gate; its cost per "
        "million images at that capacity",
    ),
    Goal(
        "energy",
        "lowest energy per image",
        False,
        lambda r, b: r.joules,
        lambda v, r, b: _fmt(v, "J/image") + f" ({format_number(1 / v)} images/J)",
        "measured: energy counter over the cell ÷ images (NVML on GPUs, RAPL on CPUs where readable)",
    ),
)


@dataclass
class Pick:
    goal: Goal
    row: Row | None
    text: str
    note: str = ""


@dataclass
class Decision:
    task: str
    kinds: list[DeviceKind]
    goals: list[Goal]
    picks: dict[tuple[str, DeviceKind], Pick]

    def pick(self, goal: Goal, kind: DeviceKind) -> Pick:
        return self.picks[(goal.name, kind)]


def _best(candidates: list[Row], goal: Goal, bound: float | None) -> Row | None:
    scored = [(goal.value(r, bound), r) for r in candidates]
    scored = [(v, r) for v, r in scored if v is not None]
    if not scored:
        return None
    sign = -1.0 if goal.higher_is_better else 1.0
    return min(scored, key=lambda vr: sign * vr[0])[1]


def _within_factor(alternative: float, pick: float, goal: Goal) -> bool:
    """Whether an alternative is worth naming: at most ALTERNATIVE_FACTOR worse than the pick."""
    if pick <= 0 or alternative <= 0:
        return False
    worse = pick / alternative if goal.higher_is_better else alternative / pick
    return worse <= ALTERNATIVE_FACTOR


def _pick(rows: list[Row], goal: Goal, bound: float | None) -> Pick:
    answering = [r for r in rows if goal.value(r, bound) is not None]
    valid = [r for r in answering if not r.invalid]
    best = _best(valid, goal, bound)
    if best is None:
        why = "not measured"
        if goal.name == "capacity" and any(r.traits.reads == "capacity" for r in rows):
            why = answers.no_capacity(rows, answers.Question(bound))
        return Pick(goal, None, why)
    text = goal.show(goal.value(best, bound), best, bound)
    note = ""
    if best.unstable:
        note = "unstable: the 95% interval of the figure its scenario is judged on is wider than ±" \
            f"{STABLE_HALF_WIDTH:.0%}; rerun it with more samples or on a quiet machine"
        stable = _best([r for r in valid if not r.unstable], goal, bound)
        if stable is not None and _within_factor(goal.value(stable, bound), goal.value(best, bound), goal):
            note += f". Best stable: {stable.setting}, {goal.show(goal.value(stable, bound), stable, bound)}"
    return Pick(goal, best, text, note)


def _answer_pick(goal: Goal, found: answers.Answer | None) -> Pick:
    """The cost-within-the-question goal is the answer's own pick (one decision function for the page)."""
    if found is None or found.option is None:
        return Pick(goal, None, found.note if found else "not measured")
    o = found.option
    text = (f"${format_number(o.usd_per_million)} per million images ({o.row.price.text})" if o.usd_per_million
            is not None else "cost unknown (no price)") + f" at {format_number(o.capacity)} requests/s ({o.basis})"
    return Pick(goal, o.row, text, f"{found.devices} devices for {format_number(found.demand_qps)} images/s; "
                                   f"{o.latency.text}; {o.validity.stamp}; {o.quality.text}")


def decide(rows: list[Row], bound: float | None, found: list[answers.Answer] | None = None) -> list[Decision]:
    """Per task: for each goal and device kind, the best finished (and, for servers, valid) setting; the
    cheapest way to serve the question is the answer's pick (``found``, ``bench.report.answer.answer``)."""
    out = []
    found = found or []
    for task, mine in group_by([r for r in rows if r.ok], lambda r: r.task).items():
        kinds = kinds_of(mine)
        by_kind = group_by(mine, lambda r: r.kind)
        picked = {a.kind: a for a in found if a.task == task}
        goals = [
            g
            for g in GOALS
            if (g.name == "cost_within_bound" and any(a.option for a in picked.values()))
            or (g.name != "cost_within_bound" and any(g.value(r, bound) is not None for r in mine))
        ]
        picks = {
            (g.name, k): _answer_pick(g, picked.get(k)) if g.name == "cost_within_bound"
            else _pick(by_kind[k], g, bound) for g in goals for k in kinds
        }
        out.append(Decision(task, kinds, goals, picks))
    return out


# ---------------------------------------------------------------------------------------------
# the recommendation: the answer's overall pick, with the constraints it met


@dataclass
class Recommendation:
    task: str
    metric: str | None
    constraint: str
    best: Row | None
    met: int
    total: int
    verdict: str
    notes: list[str] = field(default_factory=list)
    cost: float | None = None
    option: Option | None = None


def recommend(rows: list[Row], task: str, found: list[answers.Answer], question: answers.Question) -> Recommendation:
    """The task's overall pick of the answer (the same pick as the Answer and Decision sections and the
    ``--answer`` JSON), with how many options met the question and, when none did, why."""
    ok = [r for r in rows if r.task == task and r.ok]
    metric = next((r.metric for r in ok if r.metric), None)
    constraint = question.text
    if question.accuracy_floor is not None:
        constraint += f"; {metric or 'accuracy'} {'≤' if lower_is_better(metric) else '≥'} " \
                      f"{format_number(question.accuracy_floor)}"
    mine = [a for a in found if a.task == task]
    met = sum(len(a.top) for a in mine)
    rec = Recommendation(task, metric, constraint, None, met, len(ok), "")
    if not ok:
        rec.verdict = f"{NONE_MEETS}: no cell of this task finished"
        return rec
    pick = answers.overall(found, task)
    if pick is None or pick.option is None:
        rec.verdict = f"{NONE_MEETS}: " + ("; ".join(f"{a.kind.label}: {a.note}" for a in mine) or "no option")
        return rec
    rec.option, rec.best, rec.cost = pick.option, pick.option.row, pick.usd_per_million
    rec.verdict = ("cheapest option that meets it" if pick.usd_per_month is not None
                   else f"fewest devices that meet it; cost unknown (no price for {pick.kind.label})")
    if not pick.option.quality.verified:
        rec.notes.append(pick.option.quality.text + ": give --quality-gate X to keep such options out")
    if question.bound_ms is None and question.accuracy_floor is None:
        rec.notes.append("give --latency-bound-ms and --accuracy-floor to constrain the choice")
    return rec
