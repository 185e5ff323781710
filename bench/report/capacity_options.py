"""Where an option's capacity comes from (``bench.report.option.Option``):

- ``measured server capacity``: a server cell's capacity (the capacity search's own, a step of its curve
  under another bound, or a fixed-rate run), judged by the server's rules at its own percentile, its latency
  and interval from the same samples and its validity stamp from what the record stores;
- ``predicted (queueing model from measured batch times)`` (``bench.scenarios.predict``): for a setting
  with no server cell, the highest Poisson rate whose P-th percentile a simulation of the project's batcher
  keeps within B, driven by the batch times its offline and single-stream cells measured. Never "measured".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.pages.page import format_number
from bench.report.option import Latency, Option, Quality, References, Validity, quality
from bench.report.question import PERCENTILE_DEFAULT, Question, percentile_name
from bench.report.report_rows import Row, number, rate
from bench.report.uncertainty import CONFIDENCE, percentile_figure, samples_needed
from bench.results import CurveStep, Record, Server, value
from bench.scenarios import predict as predict_module

SERVER_BASIS = "measured server capacity"
PREDICTED_BASIS = predict_module.Prediction.BASIS


def samples_latency(rec: Record, q: float) -> Latency:
    """From the cell's raw request latencies: the estimate and its interval from the same samples."""
    samples = sorted(v for v in rec.samples_ms if not math.isnan(v))
    name = percentile_name(q)
    if not samples:
        return Latency(name, number(getattr(rec.latency_ms, name, None)), None, "no samples recorded")
    estimate, interval = percentile_figure(samples, q, CONFIDENCE)
    note = "" if interval else f"not enough samples for a {name} interval: n = {len(samples)}, " \
                                f"{samples_needed(q)} needed"
    return Latency(name, estimate, interval, note)


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


def server_options(r: Row, q: Question, refs: References) -> list[Option]:
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
        return [Option(r, capacity, how, latency=samples_latency(r.rec, q.percentile),
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


def unpredicted(rows: list[Row], q: Question) -> list[Unpredicted]:
    """The settings ``predicted_option`` answers: closed-loop cells whose setting has no server cell."""
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


def predicted_option(setting: Unpredicted, found: list[Any], refs: References) -> Option | None:
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


def predict_settings(settings: list[Unpredicted], q: Question, predict: Predict) -> dict[tuple, list[Any]]:
    """One call of ``predict`` for these settings' records."""
    if not settings:
        return {}
    records = [r.rec for s in settings for r in s.rows]
    return dict(predict(records, bound_ms=q.bound_ms, percentile=q.percentile))
