"""The answer a buyer reads first, and the one decision of the page: per task, for a demand (images/s) and
a question — request latency at percentile P within a bound B (``Question``) — every way to serve it on
each device kind, ranked by cost, and the cheapest one that qualifies. The Answer, Decision and
Recommendation sections and the ``--answer`` JSON all read this one pick (``answer``).

An option is one setting and the rate one device of it sustains at P within B:

- ``measured server capacity``: a server cell's capacity (the capacity search's own, a step of its curve
  under another bound, or a fixed-rate run), judged by the server's rules at its own percentile;
- ``predicted (queueing model from measured batch times)`` (``bench.scenarios.predict``): for a setting
  with no server cell, the highest Poisson rate whose P-th percentile a simulation of the project's batcher
  keeps within B, driven by the batch times its offline and single-stream cells measured. Never "measured".

Every option carries its P-th percentile with that statistic's own 95% interval (or why there is none), a
validity stamp (``Validity``), its flags and its quality basis (``Quality``). It qualifies for the headline
only when its capacity was judged at P, its run is valid, it carries no flag that makes its capacity
suspect (``SUSPECT``), and it passes the quality gate and accuracy floor when given.

Devices = ceil(demand / (capacity × max utilisation)): a plan keeps headroom (a queue at 100% never
drains). USD per month = devices × price per hour × 730 h. USD per million images is the setting's own cost,
``Row.cost_at`` (price per hour ÷ (3600 × capacity) × 10⁶); the headroom and rounding up show in the monthly
cost and the utilisation. The cheapest option is the lowest monthly cost (then fewest devices); a device kind
with no price is answered by its fewest devices, uncosted.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.paths import Writer, write_all, write_atomic
from bench.pages.page import format_number
from bench.report.prices import HOURS_PER_MONTH
from bench.report.question import PERCENTILE_DEFAULT, Question, percentile_name
from bench.report.report_rows import (
    MIN_QPS,
    DeviceKind,
    Row,
    group_by,
    kinds_of,
    lower_is_better,
    number,
    rate,
)
from bench.report.uncertainty import CONFIDENCE, percentile_figure, samples_needed
from bench.results import CurveStep, Record, Server, value
from bench.scenarios import predict as predict_module

SERVER_BASIS = "measured server capacity"
PREDICTED_BASIS = predict_module.Prediction.BASIS
TOP = 5
"""Options listed per device kind (Triton model-analyzer's top-N view)."""
SUSPECT = ("capacity-above-offline", "curve-not-monotone", "unstable")
"""Flags that keep a capacity out of the headline (shown as a runner-up with the flag)."""
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
# what an option carries: its latency figure, validity stamp and quality basis


@dataclass(frozen=True)
class Latency:
    """The P-th percentile request latency an option is offered at, with that statistic's own 95% interval
    (None: ``note`` says why)."""

    statistic: str
    estimate: float | None
    interval: tuple[float, float] | None
    note: str = ""

    @property
    def text(self) -> str:
        if self.estimate is None:
            return f"{self.statistic}: {self.note or 'not recorded'}"
        ci = (f" (95% CI {format_number(self.interval[0])}–{format_number(self.interval[1])})" if self.interval
              else f" ({self.note})" if self.note else "")
        return f"{self.statistic} {format_number(self.estimate)} ms{ci}"


def _samples_latency(rec: Record, q: float) -> Latency:
    """From the cell's raw request latencies: the estimate and its interval from the same samples."""
    samples = sorted(v for v in rec.samples_ms if not math.isnan(v))
    name = percentile_name(q)
    if not samples:
        return Latency(name, number(getattr(rec.latency_ms, name, None)), None, "no samples recorded")
    estimate, interval = percentile_figure(samples, q, CONFIDENCE)
    note = "" if interval else f"not enough samples for a {name} interval: n = {len(samples)}, " \
                                f"{samples_needed(q)} needed"
    return Latency(name, estimate, interval, note)


@dataclass(frozen=True)
class Validity:
    """MLPerf-style stamp of the run an option rests on: VALID / INVALID for a server run, PREDICTED for a
    capacity no server ran; ``rules`` says what was checked, from what the record stores."""

    stamp: str
    rules: str

    @property
    def valid(self) -> bool:
        return self.stamp != "INVALID"

    def to_json(self) -> dict[str, Any]:
        return {"stamp": self.stamp, "rules": self.rules}


def _server_validity(r: Row, step: CurveStep | None = None) -> Validity:
    s, rules = r.server, value(r.rec, "timing.server_run")
    run = step if step is not None else s
    es = value(s, "early_stopping") if step is None else None
    queries = value(es, "queries")
    n = number(queries if queries is not None else value(run, "n_requests"))
    over = number(step.overlatency if step is not None else value(es, "overlatency"))
    bound = number(value(s, "latency_bound_ms"))
    percentile = number(value(s, "latency_percentile")) or PERCENTILE_DEFAULT
    confidence = number(value(es, "confidence")) or number(value(rules, "confidence"))
    final = _final_run(s, step)
    duration = "final_min_duration_s" if final else "min_duration_s"
    least = number(value(rules, duration))
    requests = number(value(rules, "min_requests"))
    parts = [
        f"min duration {format_number(least)} s{' (final run)' if final else ''}"
        if least else "min duration not recorded",
        f"min requests {format_number(requests)}" if requests else "min requests not recorded",
        f"{format_number(over)} of {format_number(n)} over {format_number(bound)} ms" if over is not None
        and n is not None and bound is not None else f"{format_number(n)} requests",
        f"early stopping on {percentile_name(percentile)} at "
        f"{format_number(confidence * 100) + '%' if confidence else 'unrecorded'} confidence",
    ]
    valid = value(run, "valid") is not False
    why = "" if valid else f": {value(run, 'invalid_reason') or 'no reason recorded'}"
    return Validity("VALID" if valid else "INVALID", "; ".join(parts) + why)


def _final_run(server: Server | None, step: CurveStep | None) -> bool:
    """Whether the run an option rests on is a capacity's final run (its minimum duration is the final one's):
    a curve step says so itself; the record's own run is final when a valid final step ran at its rate."""
    if step is not None:
        return bool(step.final)
    return server is not None and any(s.final and s.valid and s.target_qps == server.target_qps
                                      for s in server.curve)


@dataclass(frozen=True)
class Quality:
    """What is known of an option's quality: measured accuracy against the fp32 reference of the same
    variant and task, or why it is unverified (random weights, no dataset scored, no reference)."""

    verified: bool
    text: str
    metric: str | None = None
    accuracy: float | None = None
    reference: float | None = None

    @property
    def ratio(self) -> float | None:
        """Accuracy as a share of the reference (reference ÷ accuracy for an error rate)."""
        if self.accuracy is None or not self.reference or not self.accuracy:
            return None
        return self.reference / self.accuracy if lower_is_better(self.metric) else self.accuracy / self.reference

    def passes(self, gate: float) -> bool:
        return self.verified and self.ratio is not None and self.ratio >= gate - 1e-12

    def to_json(self) -> dict[str, Any]:
        return {"verified": self.verified, "basis": self.text, "metric": self.metric, "accuracy": self.accuracy,
                "fp32_reference": self.reference, "share_of_reference": self.ratio}


def is_reference(r: Row) -> bool:
    """fp32 and not quantised: the setting model cards report and agreement is checked against."""
    return r.rec.dtype == "fp32" and r.quant == "none"


_SAME_MODEL = ("variant", "checkpoint", "task", "dataset")
"""What a cell and its fp32 reference share."""

References = Mapping[tuple, float]
"""The fp32 reference accuracy per ``_SAME_MODEL`` values (``references``)."""


def references(rows: Iterable[Row]) -> dict[tuple, float]:
    """The first measured fp32 reference accuracy of each model, task and dataset: made once per answer, so
    judging each cell's quality is a look-up, not a pass over every cell."""
    out: dict[tuple, float] = {}
    for o in rows:
        if o.acc is not None and is_reference(o):
            out.setdefault(tuple(getattr(o.rec, k) for k in _SAME_MODEL), o.acc)
    return out


def quality(r: Row, refs: References) -> Quality:
    if r.weights != "pretrained":
        return Quality(False, f"quality unverified: {r.weights} weights")
    if r.acc is None:
        return Quality(False, "quality unverified: no dataset scored")
    ref = refs.get(tuple(getattr(r.rec, k) for k in _SAME_MODEL))
    measured = f"measured {r.metric} {format_number(r.acc)}"
    if ref is None:
        return Quality(True, f"{measured}; no fp32 reference measured (the quality gate cannot pass)", r.metric,
                       r.acc)
    found = Quality(True, measured, r.metric, r.acc, ref)
    return dataclasses.replace(found, text=f"{measured} ({found.ratio:.1%} of the fp32 reference "
                                           f"{format_number(ref)})")


# ---------------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class Option:
    """One setting as a way to serve: the rate one device sustains, how it was found, what it rests on."""

    row: Row
    capacity: float
    how: str
    basis: str
    judged_at: float
    latency: Latency
    validity: Validity
    quality: Quality
    flags: tuple[str, ...] = ()
    batch_sizes: tuple[int, ...] = ()  # predicted: the measured batch sizes whose times drove it

    @property
    def usd_per_million(self) -> float | None:
        return self.row.cost_at(self.capacity)

    def why_not(self, q: Question) -> list[str]:
        """Why this option cannot headline the answer to ``q`` (empty: it qualifies)."""
        out = []
        if abs(self.judged_at - q.percentile) > 1e-9:
            out.append(f"judged at {percentile_name(self.judged_at)}")
        if not self.validity.valid:
            out.append("INVALID")
        out += [f for f in self.flags if f in SUSPECT]
        if q.quality_gate is not None and not self.quality.passes(q.quality_gate):
            out.append(f"below the quality gate ({self.quality.text})" if self.quality.verified
                       else self.quality.text)
        if q.accuracy_floor is not None:
            acc, metric = self.quality.accuracy, self.quality.metric
            if acc is None:
                out.append("accuracy not measured: the floor cannot be checked")
            elif (acc > q.accuracy_floor) if lower_is_better(metric) else (acc < q.accuracy_floor):
                out.append(f"{metric} {format_number(acc)} misses the floor {format_number(q.accuracy_floor)}")
        return out

    @property
    def name(self) -> str:
        """The setting as a buyer orders it: variant, backend, dtype, quantisation, compilation, threads, batch
        size, scenario (the full setting, run included, is ``row.setting``)."""
        rec, row = self.row.rec, self.row
        compiled, threads = rec.compile, value(rec, "settings.threads")
        parts = [rec.variant, rec.backend or "transformers", rec.dtype, row.quant if row.quant != "none" else None,
                 ({"graphs": "cuda-graphs"}.get(compiled, compiled) if isinstance(compiled, str) else
                  "compiled" if compiled is True else None),
                 f"{threads} threads" if threads else None, f"bs{rec.batch_size}", row.scenario]
        return " ".join(str(p) for p in parts if p)

    def setting_json(self) -> dict[str, Any]:
        rec = self.row.rec
        return {"variant": rec.variant, "backend": rec.backend or "transformers",
                "dtype": rec.dtype, "quant": self.row.quant, "threads": value(rec, "settings.threads"),
                "batch_size": rec.batch_size, "scenario": self.row.scenario, "weights": self.row.weights}


def _server_options(r: Row, q: Question, refs: References) -> list[Option]:
    """A server cell's option: its capacity under the bound, at the percentile it was judged on."""
    found = r.capacity(q.bound_ms)
    if not found:
        return []
    capacity, how = found
    judged = number(value(r.server, "latency_percentile")) or PERCENTILE_DEFAULT
    flags = tuple(dict.fromkeys((["unstable"] if r.unstable else []) + [str(f.code) for f in r.record_flags]))
    common = dict(basis=SERVER_BASIS, judged_at=judged, quality=quality(r, refs), flags=flags)
    own = r.capacity(None)
    if own and own[0] == capacity:  # the cell's own figures are the run at this rate
        return [Option(r, capacity, how, latency=_samples_latency(r.rec, q.percentile),
                       validity=_server_validity(r), **common)]
    curve = r.server.curve if r.server is not None else ()
    step = next((s for s in curve if number(s.target_qps) == capacity), CurveStep())
    name = percentile_name(q.percentile)
    ci = (number(step.ci_lo_ms), number(step.ci_hi_ms))
    estimate = number(step.percentile_ms) if abs(judged - q.percentile) < 1e-9 else None
    estimate = estimate if estimate is not None else number(getattr(step, name, None))
    interval = ci if abs(judged - q.percentile) < 1e-9 and None not in ci and estimate is not None \
        and ci[0] <= estimate <= ci[1] else None
    latency = Latency(name, estimate, interval, "" if interval else "the step's samples are not recorded")
    return [Option(r, capacity, how, latency=latency, validity=_server_validity(r, step), **common)]


Predict = Callable[..., Mapping[tuple, list[Any]]]


@dataclass(eq=False)
class Unpredicted:
    """A setting of one task and device kind with no server cell, before its capacity is predicted:
    ``ceiling`` bounds its prediction above (``predict.ceiling_qps``), so it can be ranked before it is run."""

    order: int  # its place among the kind's settings (the order an unpruned answer lists them in)
    key: tuple
    rows: list[Row]
    ceiling: float
    _headlines: dict[int, bool] = field(default_factory=dict, repr=False)

    def headlines(self, row: Row, q: Question, refs: References) -> bool:
        """Whether this setting predicted as ``row`` would qualify (``Option.why_not``: for a prediction it does
        not depend on the capacity; quality only when a gate or floor asks for it). Cached: one question."""
        cell = id(row)
        if cell not in self._headlines:
            flagged = _unstable(self.rows)
            probe = Option(row, self.ceiling, "", PREDICTED_BASIS, q.percentile, Latency("", None, None),
                           Validity("PREDICTED", ""), quality(row, refs) if q.quality_gate is not None
                           or q.accuracy_floor is not None else Quality(False, ""), flagged)
            self._headlines[cell] = not probe.why_not(q)
        return self._headlines[cell]


def _unpredicted(rows: list[Row], q: Question) -> list[Unpredicted]:
    """The settings ``_predicted_option`` answers: closed-loop cells whose setting has no server cell."""
    if q.bound_ms is None:
        return []
    served = {predict_module.setting_key(r.rec) for r in rows if r.traits.reads == "capacity"}
    grouped: dict[tuple, list[Row]] = {}
    for r in rows:
        if r.traits.closed_loop and r.traits.reads is not None:
            key = predict_module.setting_key(r.rec)
            if key not in served:
                grouped.setdefault(key, []).append(r)
    times = predict_module.batch_times(r.rec for group in grouped.values() for r in group)
    return [Unpredicted(i, key, grouped[key], predict_module.ceiling_qps(found)) for i, (key, found) in enumerate(times.items())]


def _predicted_option(setting: Unpredicted, found: list[Any], refs: References) -> Option | None:
    """A setting's option: its capacity predicted from the batch times its offline and single-stream cells
    measured (its best batch size), None when no batch size meets the bound."""
    mine = setting.rows
    usable = [p for p in found if p.qps is not None and rate(p.qps)]
    if not usable:
        return None
    best = max(usable, key=lambda p: p.qps)
    row = next((r for r in mine if r.rec.batch_size == best.max_batch), mine[0])
    sizes = ", ".join(str(b) for b in best.batch_sizes)
    how = (f"max batch {best.max_batch}, queue delay {format_number(best.max_queue_delay_ms)} ms, "
           f"{best.instances} instance{'s' if best.instances != 1 else ''} per device; from measured batch sizes "
           f"{sizes}" + (f" ({best.note})" if best.note else ""))
    return Option(row, float(best.qps), how, PREDICTED_BASIS, best.percentile,
                  Latency(percentile_name(best.percentile), best.p_ms, None, "predicted: no interval"),
                  Validity("PREDICTED", f"no server run: the queueing model's {percentile_name(best.percentile)}"
                           f" at {format_number(best.qps)} requests/s"),
                  quality(row, refs), _unstable(mine), tuple(best.batch_sizes))


def _unstable(rows: list[Row]) -> tuple[str, ...]:
    return ("unstable",) if any(r.unstable for r in rows) else ()


def _predict(settings: list[Unpredicted], q: Question, predict: Predict) -> dict[tuple, list[Any]]:
    """One call of ``predict`` for these settings' records."""
    if not settings:
        return {}
    records = [r.rec for s in settings for r in s.rows]
    return dict(predict(records, bound_ms=q.bound_ms, percentile=q.percentile))


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
                           for o in _server_options(r, q, refs)] for kind, kind_rows in per_kind.items()}
        pending = {kind: sorted(_unpredicted(kind_rows, q), key=lambda s: -s.ceiling)
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
                got = _predict(chunk, q, predict)
                predicted[kind].update((s.order, _predicted_option(s, got.get(s.key, []), refs)) for s in chunk)
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
