"""How the figures were obtained: the method table (clock, timing, scenarios, sources, prices), the rules the
figures were judged by, generated from the code's constants and what the records store (never a hand-written
paraphrase that can go stale), and what the fp32-agreement column compares."""

from __future__ import annotations

from collections import Counter

from bench.core.stats import queries_needed
from bench.report import answer as answers
from bench.report import report_table
from bench.report.capacity_options import PREDICTED_BASIS
from bench.report.option import SUSPECT
from bench.report.prices import PriceTable
from bench.report.question import PERCENTILE_DEFAULT, percentile_name
from bench.report.report_rows import Row
from bench.report.report_rows import number as _num
from bench.report.uncertainty import STABLE_HALF_WIDTH, samples_needed
from bench.results import value
from bench.results.server_settings import ServerSettings
from bench.scenarios import capacity as capacity_search
from bench.scenarios.server import KEPT_UP


def method(rows: list[Row], prices: PriceTable) -> list[tuple[str, str]]:
    def collect(getter) -> str:
        values = Counter(v for v in (getter(r) for r in rows if r.ok) if v not in (None, "", {}))
        return "; ".join(f"{v} ({n} cells)" for v, n in values.most_common()) or "not recorded"

    energy = f"; energy {prices.usd_per_kwh:g} USD/kWh ({prices.energy_source})" if prices.usd_per_kwh else ""
    return [
        ("latency clock", collect(lambda r: value(r.rec, "timing.clock"))),
        ("warm-up / iterations", collect(lambda r: report_table.timing_text(r.rec.timing))),
        ("scenario", collect(lambda r: r.rec.scenario)),
        ("per-stage times", collect(lambda r: value(r.rec, "timing.stages_basis"))),
        ("energy source", collect(lambda r: value(r.rec, "energy.source"))),
        ("peak memory used in frontiers", collect(lambda r: r.peak_memory[1] if r.peak_memory else None)),
        ("prices", prices.label + energy),
    ]


def agreement_differs(rows: list[Row]) -> str:
    """What differs from the fp32 reference in the compared cells, named (never "half-precision" for int8)."""
    parts = []
    dtypes = sorted({str(r.rec.dtype) for r in rows if r.ok and r.rec.dtype not in ("fp32", None)})
    if dtypes:
        parts.append(f"{'/'.join(dtypes)} precision")
    quants = sorted({r.quant for r in rows if r.ok} - {"none"})
    if quants:
        parts.append(f"{'/'.join(quants)} quantisation")
    backends = sorted({str(r.rec.backend) for r in rows if r.ok and r.rec.backend} - {"transformers"})
    if backends:
        parts.append(f"the {'/'.join(backends)} backend")
    return " and ".join(parts) or "the settings that differ from eager fp32 transformers"


def _recorded(rows: list[Row], path: str) -> str:
    """The distinct values the server cells recorded at ``path`` (the rules they ran under), or the default's."""
    values = sorted({f"{v:g}" for r in rows if r.ok and r.server for v in [_num(value(r.rec, path))]
                     if v is not None})
    return ", ".join(values)


def rules(rows: list[Row], question: answers.Question) -> list[str]:
    """The rules the figures on this page were judged by, generated from the code's constants and what the
    records store (never a hand-written paraphrase that can go stale)."""
    defaults = ServerSettings(qps=1.0)
    percentiles = sorted({percentile_name(_num(r.server.latency_percentile) or PERCENTILE_DEFAULT)
                          for r in rows if r.ok and r.server})
    confidence = _recorded(rows, "timing.server_run.confidence") or f"{defaults.confidence:g}"
    need = {p: queries_needed(0, p, defaults.confidence) for p in (0.9, 0.99)}
    here = "here" if any(r.ok and r.server for r in rows) else "by default; no server run here"
    min_duration = _recorded(rows, "timing.server_run.min_duration_s") or f"{defaults.min_duration_s:g}"
    min_requests = _recorded(rows, "timing.server_run.min_requests") or f"{defaults.min_requests:g}"
    return [
        f"The answer's question: {question.text}. An option qualifies for the headline only when its capacity was "
        f"judged at {question.statistic}, its run is VALID, and it carries none of the flags "
        f"{', '.join(SUSPECT)}; the others are listed with why. Devices = ceil(demand ÷ (capacity × "
        f"{question.max_utilisation:g})).",
        "A server run is VALID by MLPerf's rules: its Poisson schedule lasted at least min_duration_s "
        f"({min_duration} s {here}), it served at least min_requests ({min_requests} {here}), and early stopping "
        "passes for its percentile "
        f"({', '.join(percentiles) or f'{percentile_name(PERCENTILE_DEFAULT)} by default'}) at {confidence} confidence: with k of n requests over the "
        "bound, the true percentile is within it when P(Binomial(n, 1 − P) ≤ k) ≤ 1 − confidence (LoadGen's "
        f"early_stopping.cc); with none over, p99 needs {need[0.99]} requests and p90 {need[0.9]}. The achieved "
        f"rate is reported, never judged (a run that achieved ≥ {KEPT_UP:.0%} of its target kept up: the capacity "
        "search's stop rule only).",
        f"Capacity is the highest VALID rate the capacity search found, to within {capacity_search.PRECISION:.0%} "
        "of the lowest invalid one (the record's capacity_bracket); a capacity above the offline throughput "
        "(capacity-above-offline) or a curve whose percentile falls as the load rises (curve-not-monotone) is "
        "flagged by the run and never headlines.",
        f"A setting with no server cell is answered by a capacity {PREDICTED_BASIS}: a simulation of the batcher "
        "(max batch, max queue delay) under Poisson arrivals, each batch's service time drawn from the raw batch "
        "times its offline and single-stream cells measured (never extrapolated past the largest measured batch "
        "size), searched for the highest rate whose percentile meets the bound. It is never called measured.",
        "The decision table judges single-stream cells by request latency p90 and server cells by their own "
        "percentile; offline cells are judged on throughput only and never meet a bound.",
        f"A figure is stable when the 95% interval of the statistic its scenario is judged on lies within "
        f"±{STABLE_HALF_WIDTH:.0%} of it; an interval needs at least {samples_needed(0.5)} samples for the median, "
        f"{samples_needed(0.9)} for p90 and {samples_needed(0.99)} for p99 (order statistics), and with fewer the "
        "page says “not enough samples”. Every interval printed is the interval of the statistic beside it.",
    ]


def agreement_label(rows: list[Row]) -> str:
    """The fp32-agreement column's header: with random weights it is a numerical stress test only."""
    if any(r.weights == "random" for r in rows):
        return "agreement with fp32 outputs (random weights: a numerical stress test, not quality)"
    return "agreement with fp32 outputs (same generated text)"
