"""The answer a buyer reads first: per task, for a demand (images/s) and a latency bound, the cheapest
way to serve it on each device kind and overall: the setting, how many devices, what they cost, the p99
a request waits, and what the figure rests on.

An option is one finished cell and the rate one device of it sustains:

- ``measured server capacity``: a valid server cell's capacity with p99 within the bound (the capacity
  search's own, a step of its curve under another bound, or a fixed-rate run), used whenever the task
  has a server cell on that device kind;
- ``offline throughput: optimistic, no queueing``: only when the task has no server cell on that kind,
  an offline or single-stream cell's measured throughput, as if requests arrived exactly as fast as
  batches finish; with a bound, the cell's own request latency p99 (a batch's wall time) must be within
  it, which is necessary but not sufficient under random arrivals.

Devices = ceil(demand / capacity). USD per month = devices × price per hour × 730 h. USD per million
images is the setting's own cost, ``Row.cost_at`` (price per hour ÷ (3600 × capacity) × 10⁶, each
device busy at its capacity), the one cost of a setting on every table of the report; rounding up to
whole devices shows in the monthly cost and the utilisation (demand ÷ (devices × capacity)), never as
a second cost per image. The cheapest option is the lowest monthly cost (then fewest devices); a device
kind with no price is answered by its fewest devices, uncosted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.paths import Writer, write_all, write_atomic
from bench.prices import HOURS_PER_MONTH
from bench.report_rows import MIN_QPS, DeviceKind, Row, kinds_of, number, rate, tasks_of
from bench.uncertainty import latency_interval

SERVER_BASIS = "measured server capacity"
OFFLINE_BASIS = "offline throughput: optimistic, no queueing"
ROUNDING = (
    f"devices are rounded up to whole devices (ceil); USD per month = devices × price per hour × "
    f"{HOURS_PER_MONTH:g} h; USD per million images = price per hour ÷ (3600 × capacity) × 10⁶, the setting's "
    "own cost with each device busy at its capacity (the same figure in every table of this page: the "
    "rounding up shows in the monthly cost and the utilisation, not in the cost per image); figures on the "
    "page are rounded to 3 significant figures, the --answer JSON keeps full precision"
)


@dataclass(frozen=True)
class Option:
    """One cell as a way to serve: the rate one device sustains, how it was found, and its p99."""

    row: Row
    capacity: float
    how: str
    basis: str
    p99: float | None
    p99_interval: tuple[float, float] | None

    @property
    def usd_per_million(self) -> float | None:
        return self.row.cost_at(self.capacity)


@dataclass
class Answer:
    """The cheapest option of one task on one device kind at the demand (``option`` None: none serves)."""

    task: str
    kind: DeviceKind
    demand_qps: float | None
    option: Option | None
    note: str = ""
    overall: bool = False

    @property
    def devices(self) -> int | None:
        return devices_needed(self.demand_qps, self.option.capacity) if self.option and self.demand_qps else None

    @property
    def usd_per_month(self) -> float | None:
        price = self.option.row.price if self.option else None
        return self.devices * price.usd_per_hour * HOURS_PER_MONTH if price and self.devices else None

    @property
    def usd_per_million(self) -> float | None:
        return self.option.usd_per_million if self.option else None

    @property
    def utilisation(self) -> float | None:
        """The share of the devices' capacity the demand uses (below 1 because devices are whole)."""
        return self.demand_qps / (self.devices * self.option.capacity) if self.devices and self.option else None

    def to_json(self) -> dict[str, Any]:
        row = self.option.row if self.option else None
        assert row is not None and self.option is not None
        return {
            "task": self.task,
            "device": self.kind.label,
            "variant": row.rec.get("variant"),
            "dtype": row.rec.get("dtype"),
            "backend": row.rec.get("backend") or "transformers",
            "batch_size": row.rec.get("batch_size"),
            "scenario": row.scenario,
            "devices": self.devices,
            "usd_per_month": self.usd_per_month,
            "usd_per_million_images": self.usd_per_million,
            "p99_ms": self.option.p99,
            "basis": self.option.basis,
            "cell_id": row.rec.get("cell_id"),
            "p99_ci95_ms": list(self.option.p99_interval) if self.option.p99_interval else None,
            "capacity_qps": self.option.capacity,
            "capacity_how": self.option.how,
            "demand_qps": self.demand_qps,
            "utilisation": self.utilisation,
            "overall": self.overall,
            "price": row.price.text if row.price else None,
            "run": row.run,
            "setting": row.setting,
        }


MAX_DEVICES = 1e9
"""A plan needing this many devices or more is not a plan (a rate near zero; its cost would overflow)."""


def devices_needed(demand_qps: float, capacity: float) -> int:
    """ceil(demand / capacity), an exact multiple needing no extra device despite float rounding."""
    return max(1, math.ceil(demand_qps / capacity - 1e-9))


def no_capacity(rows: list[Row], bound: float | None) -> str:
    """Why a device kind has no server capacity to plan with, in words a buyer can act on."""
    servers = [r for r in rows if r.traits.reads == "capacity"]
    if not servers:
        return "no server capacity measured: run it with --scenarios server --server-qps auto --latency-bound-ms B"
    bad = [r.rec.get("capacity_qps") for r in servers
           if r.rec.get("capacity_qps") is not None and rate(r.rec.get("capacity_qps")) is None]
    if bad:
        return (f"not planned: capacity_qps {bad[0]!r} is not a rate (a finite number >= {MIN_QPS:g} requests/s); "
                "the record is invalid")
    if all(r.invalid for r in servers):
        return f"no valid server run ({len(servers)} invalid: {servers[0].server.get('invalid_reason') or 'no reason'})"
    aims = sorted({f"{b:g} ms" for r in servers if (b := number(r.server.get("latency_bound_ms")))})
    if bound is not None:
        return (f"no valid server run with p99 ≤ {bound:g} ms (its runs aimed at {', '.join(aims) or 'no bound'}): "
                "it cannot serve within the bound at any rate measured")
    return "no server run found a capacity within its bound"


def _server_option(r: Row, bound: float | None) -> Option | None:
    found = r.capacity(bound) if not r.invalid else None
    if not found:
        return None
    capacity, how = found
    own = r.capacity(None)
    if own and own[0] == capacity:  # the cell's own figures are the run at this rate
        return Option(r, capacity, how, SERVER_BASIS, r.p99, latency_interval(r.rec))
    step = next((s for s in r.server.get("curve") or [] if isinstance(s, dict)
                 and number(s.get("target_qps")) == capacity), {})
    return Option(r, capacity, how, SERVER_BASIS, number(step.get("p99")), None)


def _offline_option(r: Row, bound: float | None) -> Option | None:
    if r.traits.reads == "capacity" or not r.ips:
        return None
    if bound is not None and (r.p99 is None or r.p99 > bound):
        return None
    how = f"{r.scenario} throughput at batch {r.rec.get('batch_size')}"
    return Option(r, r.ips, how, OFFLINE_BASIS, r.p99, latency_interval(r.rec))


def options(rows: list[Row], bound: float | None) -> tuple[list[Option], str]:
    """The options of one task on one device kind, and why there are none (empty otherwise)."""
    ok = [r for r in rows if r.ok]
    if any(r.traits.reads == "capacity" for r in ok):
        found = [o for r in ok if (o := _server_option(r, bound))]
        return found, "" if found else no_capacity(ok, bound)
    found = [o for r in ok if (o := _offline_option(r, bound))]
    if found:
        return found, ""
    if bound is not None and any(r.ips for r in ok):
        return [], f"no setting's request latency p99 is within {bound:g} ms, even without queueing"
    return [], "no throughput measured"


def _cheapest(found: list[Option], demand: float) -> Option:
    def key(o: Option) -> tuple[float, int, float]:
        devices = devices_needed(demand, o.capacity)
        month = devices * o.row.price.usd_per_hour if o.row.price else math.inf
        return month, devices, o.usd_per_million if o.usd_per_million is not None else math.inf

    return min(found, key=key)


def _plannable(found: list[Option], demand: float | None) -> list[Option]:
    return [o for o in found if demand and demand / o.capacity < MAX_DEVICES]


def _too_many(found: list[Option], demand: float | None) -> str:
    if not found or not demand:
        return ""
    return f"not planned: {demand:g} images/s needs {MAX_DEVICES:g} or more devices at every measured setting"


def default_demand(found: list[Option]) -> float | None:
    """One device of the best option: the lowest cost per million images, else the highest capacity."""
    if not found:
        return None
    priced = [o for o in found if o.usd_per_million is not None]
    best = min(priced, key=lambda o: o.usd_per_million) if priced else max(found, key=lambda o: o.capacity)
    return best.capacity


def answer(rows: list[Row], demand_qps: float | None, bound: float | None) -> list[Answer]:
    """Per task: one answer per device kind (GPUs first), the cheapest priced one marked ``overall``."""
    out: list[Answer] = []
    ok = [r for r in rows if r.ok]
    for task in tasks_of(ok):
        mine = [r for r in ok if r.task == task]
        per_kind = {kind: options([r for r in mine if r.kind == kind], bound) for kind in kinds_of(mine)}
        demand = demand_qps or default_demand([o for found, _ in per_kind.values() for o in found])
        answers = [Answer(task, kind, demand, _cheapest(plannable, demand) if plannable else None,
                          why or _too_many(found, demand))
                   for kind, (found, why) in per_kind.items()
                   for plannable in [_plannable(found, demand)]]
        priced = [a for a in answers if a.usd_per_month is not None]
        if priced:
            min(priced, key=lambda a: (a.usd_per_month, a.devices)).overall = True
        out += answers
    return out


def answer_json(answers: list[Answer], demand_qps: float | None, bound: float | None) -> dict[str, Any]:
    """The ``--answer`` file: the answers that found an option (per task, device kind; ``overall`` marks
    the cheapest). ``demand_qps`` is the one demand of every answer (None when the default differs per
    task: each answer carries its own)."""
    found = [a for a in answers if a.option is not None]
    demands = {a.demand_qps for a in found}
    return {
        "demand_qps": demand_qps if demand_qps is not None else (demands.pop() if len(demands) == 1 else None),
        "latency_bound_ms": bound,
        "answers": [a.to_json() for a in found],
    }


def write_answer(path: Path, answers: list[Answer], demand_qps: float | None, bound: float | None, *,
                 writer: Writer = write_all) -> Path:
    """Strict JSON (``allow_nan=False``: a NaN reaching the answer is a bug, not a file others cannot
    parse); ``writer`` is the seam for a full disk."""
    text = json.dumps(answer_json(answers, demand_qps, bound), indent=2, ensure_ascii=False, allow_nan=False)
    return write_atomic(path, text + "\n", writer=writer)
