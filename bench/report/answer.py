"""The answer a buyer reads first, and the one decision of the page: per task, for a demand (images/s) and
a question — request latency at percentile P within a bound B (``Question``) — every way to serve it on
each device kind (``bench.report.option.Option``, measured or predicted: ``bench.report.capacity_options``),
ranked by cost, and the cheapest one that qualifies. The Answer, Decision and Recommendation sections and the
``--answer`` JSON all read this one pick (``answer``).

Devices = ceil(demand / (capacity × max utilisation)): a plan keeps headroom (a queue at 100% never
drains). USD per month = devices × price per hour × 730 h. USD per million images is the setting's own cost,
``Row.cost_at`` (price per hour ÷ (3600 × capacity) × 10⁶); the headroom and rounding up show in the monthly
cost and the utilisation. The cheapest option is the lowest monthly cost (then fewest devices); a device kind
with no price is answered by its fewest devices, uncosted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.paths import Writer, write_all, write_atomic
from bench.pages.page import format_number
from bench.report.capacity_options import (
    Predict,
    Unpredicted,
    predict_settings,
    predicted_option,
    server_options,
    unpredicted,
)
from bench.report.option import Option, References, references
from bench.report.prices import HOURS_PER_MONTH
from bench.report.question import Question, percentile_name
from bench.report.report_rows import MIN_QPS, DeviceKind, Row, group_by, kinds_of, number, rate
from bench.results import value
from bench.scenarios import predict as predict_module

TOP = 5
"""Options listed per device kind (Triton model-analyzer's top-N view)."""
ROUNDING = (
    f"devices are rounded up to whole devices (ceil) at the target utilisation; USD per month = devices × price "
    f"per hour × {HOURS_PER_MONTH:g} h; USD per million images = price per hour ÷ (3600 × capacity) × 10⁶, the "
    "setting's own cost with each device busy at its capacity (the same figure in every table of this page: the "
    "headroom and the rounding up show in the monthly cost and the utilisation, not in the cost per image); "
    "figures on the page are rounded to 3 significant figures, the --answer JSON keeps full precision"
)
MAX_DEVICES = 1e9
"""A plan needing this many devices or more is not a plan (a rate near zero; its cost would overflow)."""


# ---------------------------------------------------------------------------------------------
# the answer


def devices_needed(demand_qps: float, capacity: float, max_utilisation: float = 1.0) -> int:
    """ceil(demand / (capacity × max utilisation)), an exact multiple needing no extra device despite float
    rounding."""
    return max(1, math.ceil(demand_qps / (capacity * max_utilisation) - 1e-9))


@dataclass
class Ranked:
    """An option at the question's demand: its devices, cost, and why it cannot headline (empty: it can)."""

    option: Option
    devices: int
    usd_per_month: float | None
    why_not: list[str]
    over_best: float | None = None  # monthly cost over the kind's headline, as a fraction


@dataclass
class Answer:
    """The cheapest qualifying option of one task on one device kind at the demand (``option`` None: none
    qualifies; ``note`` says why), and the kind's ranked options (``top``: qualifying, ``others``: not)."""

    task: str
    kind: DeviceKind
    question: Question
    demand_qps: float | None
    option: Option | None
    note: str = ""
    overall: bool = False
    top: list[Ranked] = field(default_factory=list)
    others: list[Ranked] = field(default_factory=list)

    @property
    def devices(self) -> int | None:
        if not (self.option and self.demand_qps):
            return None
        return devices_needed(self.demand_qps, self.option.capacity, self.question.max_utilisation)

    @property
    def usd_per_month(self) -> float | None:
        price = self.option.row.price if self.option else None
        return self.devices * price.usd_per_hour * HOURS_PER_MONTH if price and self.devices else None

    @property
    def usd_per_million(self) -> float | None:
        return self.option.usd_per_million if self.option else None

    @property
    def utilisation(self) -> float | None:
        """The share of the devices' capacity the demand uses (at most the target utilisation)."""
        return self.demand_qps / (self.devices * self.option.capacity) if self.devices and self.option else None

    def to_json(self) -> dict[str, Any]:
        assert self.option is not None
        return {"task": self.task, "device": self.kind.label, **option_json(self.option), "devices": self.devices,
                "usd_per_month": self.usd_per_month, "usd_per_million_images": self.usd_per_million,
                "demand_qps": self.demand_qps, "utilisation": self.utilisation, "overall": self.overall,
                "top_options": [ranked_json(x) for x in self.top],
                "other_options": [ranked_json(x) for x in self.others]}


def option_json(o: Option) -> dict[str, Any]:
    r = o.row
    return {**o.setting_json(), "percentile": o.latency.statistic, "latency_ms": o.latency.estimate,
            "latency_ci95_ms": list(o.latency.interval) if o.latency.interval else None,
            "latency_note": o.latency.note or None, "basis": o.basis, "judged_at": percentile_name(o.judged_at),
            "predicted_from_batch_sizes": list(o.batch_sizes) or None, "validity": o.validity.to_json(),
            "flags": list(o.flags), "quality": o.quality.to_json(), "capacity_qps": o.capacity,
            "capacity_how": o.how, "cell_id": r.rec.cell_id, "price": r.price.text if r.price else None,
            "run": r.run, "setting": r.setting}


def ranked_json(x: Ranked) -> dict[str, Any]:
    return {**option_json(x.option), "devices": x.devices, "usd_per_month": x.usd_per_month,
            "usd_per_million_images": x.option.usd_per_million, "over_best": x.over_best,
            "why_not": x.why_not}


def no_capacity(rows: list[Row], q: Question) -> str:
    """Why a device kind has no option to plan with, in words a buyer can act on."""
    servers = [r for r in rows if r.traits.reads == "capacity"]
    if not servers:
        if q.bound_ms is None:
            return ("no server capacity measured and no bound to predict one for: give --latency-bound-ms B, or run "
                    "--scenarios server --server-qps auto --latency-bound-ms B")
        return f"no setting's predicted {q.statistic} is within {format_number(q.bound_ms)} ms at any rate"
    bad = [r.rec.capacity_qps for r in servers if r.rec.capacity_qps is not None and rate(r.rec.capacity_qps) is None]
    if bad:
        return (f"not planned: capacity_qps {bad[0]!r} is not a rate (a finite number >= {MIN_QPS:g} requests/s); "
                "the record is invalid")
    if all(r.invalid for r in servers):
        return f"no valid server run ({len(servers)} invalid: {value(servers[0].server, 'invalid_reason') or 'no reason'})"
    aims = sorted({f"{b:g} ms" for r in servers if (b := number(value(r.server, "latency_bound_ms")))})
    if q.bound_ms is not None:
        return (f"no valid server run with {q.statistic} ≤ {q.bound_ms:g} ms (its runs aimed at "
                f"{', '.join(aims) or 'no bound'}): it cannot serve within the bound at any rate measured")
    return "no server run found a capacity within its bound"


def _rank(found: list[Option], q: Question, demand: float) -> list[Ranked]:
    out = []
    for o in found:
        if demand / o.capacity >= MAX_DEVICES:
            continue
        devices = devices_needed(demand, o.capacity, q.max_utilisation)
        month = devices * o.row.price.usd_per_hour * HOURS_PER_MONTH if o.row.price else None
        out.append(Ranked(o, devices, month, o.why_not(q)))
    return sorted(out, key=_sort_key)


def default_demand(found: list[Option], q: Question) -> float | None:
    """One device of the best qualifying option at the target utilisation: the lowest cost per million
    images, else the highest capacity (any option when none qualifies)."""
    pool = [o for o in found if not o.why_not(q)] or found
    if not pool:
        return None
    priced = [o for o in pool if o.usd_per_million is not None]
    best = min(priced, key=lambda o: o.usd_per_million) if priced else max(pool, key=lambda o: o.capacity)
    return best.capacity * q.max_utilisation


def _sort_key(x: Ranked) -> tuple:
    return (x.usd_per_month if x.usd_per_month is not None else math.inf, x.devices,
            x.option.usd_per_million or math.inf, x.option.row.setting)


def _best_key(setting: Unpredicted, row: Row, q: Question, demand: float) -> tuple:
    """The best rank ``setting`` could reach as ``row`` (its capacity at most its ceiling): every part of the
    sort key only grows as the capacity falls."""
    devices = devices_needed(demand, setting.ceiling, q.max_utilisation)
    month = devices * row.price.usd_per_hour * HOURS_PER_MONTH if row.price else math.inf
    return (month, devices, row.cost_at(setting.ceiling) or math.inf, row.setting)


def _open(pending: list[Unpredicted], ranked: list[Ranked], q: Question, demand: float | None,
          refs: References) -> list[Unpredicted]:
    """Branch and bound: the settings still to predict that could enter the listed top ``TOP`` of the list they
    would land in (qualifying or not) at some capacity up to their ceiling; the others cannot change the answer."""
    if not demand:
        return pending
    lists = {True: [_sort_key(x) for x in ranked if not x.why_not][:TOP],
             False: [_sort_key(x) for x in ranked if x.why_not][:TOP]}

    def could_enter(setting: Unpredicted, row: Row) -> bool:
        listed = lists[setting.headlines(row, q, refs)]
        return len(listed) < TOP or not listed[-1] < _best_key(setting, row, q, demand)

    # a setting whose ceiling is too low to be ranked at all (MAX_DEVICES) can never enter
    return [s for s in pending if demand / s.ceiling < MAX_DEVICES and any(could_enter(s, r) for r in s.rows)]


def _demand_fixed(found: list[Option], pending: list[Unpredicted], q: Question) -> bool:
    """No setting still to predict can change ``default_demand``: the best qualifying option beats the
    ceiling of each (strictly: a tie would depend on the order they are listed in)."""
    if q.demand_qps or not pending:
        return True
    pool = [o for o in found if not o.why_not(q)]
    priced = [o.usd_per_million for o in pool if o.usd_per_million is not None]
    rest = [(s.ceiling, r) for s in pending for r in s.rows]
    if priced:
        return all(r.cost_at(c) is None or min(priced) < r.cost_at(c) for c, r in rest)
    return bool(pool) and all(r.price is None and max(o.capacity for o in pool) > c for c, r in rest)


def answer(rows: list[Row], q: Question, predict: Predict = predict_module.predictions,
           prune: bool = True) -> list[Answer]:
    """Per task: one answer per device kind (GPUs first), the cheapest priced one marked ``overall``.

    Settings without a server cell are predicted best ceiling first, ``TOP`` per device kind at a time, and only
    while one left can still change the answer (``_open``, ``_demand_fixed``): the answer is the one
    predicting them all would give (``prune=False``), each setting predicted at most once."""
    out: list[Answer] = []
    for task, mine in group_by([r for r in rows if r.ok], lambda r: r.task).items():
        by_kind = group_by(mine, lambda r: r.kind)
        per_kind = {kind: by_kind[kind] for kind in kinds_of(mine)}
        refs = references(mine)
        measured = {kind: [o for r in kind_rows if r.traits.reads == "capacity" and not r.invalid
                           for o in server_options(r, q, refs)] for kind, kind_rows in per_kind.items()}
        pending = {kind: sorted(unpredicted(kind_rows, q), key=lambda s: -s.ceiling)
                   for kind, kind_rows in per_kind.items()}
        predicted: dict[DeviceKind, dict[int, Option | None]] = {kind: {} for kind in per_kind}
        while True:
            found = {kind: measured[kind] + [o for _, o in sorted(predicted[kind].items()) if o] for kind in per_kind}
            every = [o for f in found.values() for o in f]
            demand = q.demand_qps or default_demand(every, q)
            ranked = {kind: _rank(f, q, demand) if demand else [] for kind, f in found.items()}
            fixed = prune and _demand_fixed(every, [s for p in pending.values() for s in p], q)
            chunks = {kind: (_open(p, ranked[kind], q, demand, refs) if fixed else p)[:TOP] if prune else p
                      for kind, p in pending.items()}
            if not any(chunks.values()):
                break
            for kind, chunk in chunks.items():
                pending[kind] = [s for s in pending[kind] if s not in chunk]
                got = predict_settings(chunk, q, predict)
                predicted[kind].update((s.order, predicted_option(s, got.get(s.key, []), refs)) for s in chunk)
        answers = [_kind_answer(task, kind, q, demand, found[kind], ranked[kind], per_kind[kind])
                   for kind in per_kind]
        priced = [a for a in answers if a.usd_per_month is not None]
        if priced:
            min(priced, key=lambda a: (a.usd_per_month, a.devices)).overall = True
        elif any(a.option for a in answers):
            min((a for a in answers if a.option), key=lambda a: a.devices or math.inf).overall = True
        out += answers
    return out


def _kind_answer(task: str, kind: DeviceKind, q: Question, demand: float | None, found: list[Option],
                 ranked: list[Ranked], rows: list[Row]) -> Answer:
    top = [x for x in ranked if not x.why_not]
    others = [x for x in ranked if x.why_not]
    best = top[0] if top else None
    for x in top if best and best.usd_per_month else ():
        x.over_best = x.usd_per_month / best.usd_per_month - 1 if x.usd_per_month is not None else None
    why = ""
    if best is None:
        why = "" if found else no_capacity(rows, q)
        why = why or (f"not planned: {demand:g} images/s needs {MAX_DEVICES:g} or more devices at every "
                      "setting" if found and not ranked else "")
        why = why or "no option qualifies: " + "; ".join(
            f"{x.option.row.setting}: {', '.join(x.why_not)}" for x in others[:3])
    return Answer(task, kind, q, demand, best.option if best else None, why, top=top[:TOP], others=others[:TOP])


def overall(answers: list[Answer], task: str) -> Answer | None:
    """The task's one pick: the cheapest qualifying option over every device kind."""
    return next((a for a in answers if a.task == task and a.overall), None)


def answer_json(answers: list[Answer], q: Question) -> dict[str, Any]:
    """The ``--answer`` file: the question, and per task and device kind the answers that found an option
    (``overall`` marks each task's pick), each with its ranked options. ``demand_qps`` is the one demand of
    every answer (None when the default differs per task: each answer carries its own)."""
    found = [a for a in answers if a.option is not None]
    demands = {a.demand_qps for a in found}
    return {
        "demand_qps": q.demand_qps if q.demand_qps is not None else (demands.pop() if len(demands) == 1 else None),
        "latency_bound_ms": q.bound_ms,
        "latency_percentile": q.percentile,
        "max_utilisation": q.max_utilisation,
        "quality_gate": q.quality_gate,
        "accuracy_floor": q.accuracy_floor,
        "answers": [a.to_json() for a in found],
        "unanswered": [{"task": a.task, "device": a.kind.label, "why": a.note,
                        "other_options": [ranked_json(x) for x in a.others]} for a in answers if a.option is None],
    }


def write_answer(path: Path, answers: list[Answer], q: Question, *, writer: Writer = write_all) -> Path:
    """Strict JSON (``allow_nan=False``: a NaN reaching the answer is a bug, not a file others cannot
    parse); ``writer`` is the seam for a full disk."""
    text = json.dumps(answer_json(answers, q), indent=2, ensure_ascii=False, allow_nan=False)
    return write_atomic(path, text + "\n", writer=writer)
