"""An option: one setting as a way to serve a question, the rate one device of it sustains, and what it
carries (``bench.report.answer`` ranks options and picks one): its P-th percentile with that statistic's own
95% interval or why there is none (``Latency``), a validity stamp (``Validity``), its flags and its quality
basis (``Quality``). It headlines only when its capacity was judged at P, its run is valid, it carries no flag
that makes its capacity suspect (``SUSPECT``), and it passes the quality gate and accuracy floor when given
(``Option.why_not``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.pages.page import format_number
from bench.report.question import Question, percentile_name
from bench.report.report_rows import Row, lower_is_better
from bench.results import value

SUSPECT = ("capacity-above-offline", "curve-not-monotone", "unstable")
"""Flags that keep a capacity out of the headline (shown as a runner-up with the flag)."""


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
