"""MLPerf validity for the server: early stopping, runs sized to their percentile, bounded run length,
the capacity's bracket and interval, and the plausibility flags (fakes on a virtual clock)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scenario_fakes import scenario_input

from bench import cli
from bench.core.errors import UsageError
from bench.core.stats import binomial_cdf
from bench.report import summary
from bench.results import CurveStep, dig, plausibility, store
from bench.scenarios import ServerSettings, capacity, get_scenario
from bench.scenarios.server import run_size, serve

S = 0.010
BASELINES = Path(__file__).resolve().parents[1] / "reports" / "baselines"


def constant(seconds: float):
    return lambda batch: seconds


@pytest.mark.parametrize(("percentile", "needed"), [(0.99, 459), (0.9, 44)])
def test_a_run_with_a_bound_is_sized_to_what_its_percentile_needs(percentile, needed):
    settings = ServerSettings(qps=100.0, latency_bound_ms=1000.0, latency_percentile=percentile, min_requests=8,
                              min_duration_s=0.0)
    assert run_size(100.0, settings, 4) == (needed, None)
    m = get_scenario("server").measure(scenario_input(constant(S), server=settings)[0])
    es = m.server.early_stopping
    assert m.server.n_requests == needed and m.server.valid, m.server.invalid_reason
    assert es.to_dict() == {"percentile": percentile, "confidence": 0.99, "queries": needed, "overlatency": 0,
                            "queries_needed": needed, "estimate_ms": es.estimate_ms, "met": True}
    # the binomial rule itself: P(X <= 0) = percentile^n is within 1 - confidence at n, not at n - 1
    assert binomial_cdf(0, needed, 1 - percentile) <= 0.01 < binomial_cdf(0, needed - 1, 1 - percentile)
    # LoadGen gives an estimate only from the requests that one over-bound request would need
    assert es.estimate_ms is None
    assert m.server.percentile_ci_ms is not None  # a 95% interval exists at the minimal size
    assert ServerSettings(qps=100.0, min_requests=8, min_duration_s=0.0).requests_needed() == 8  # no bound


def test_early_stopping_in_the_record_agrees_with_the_binomial_rule():
    # load 0.8 and a bound near the M/D/1 p99: some requests over it, as many as early stopping allows or more
    for bound_factor in (3.5, 6.0):
        settings = ServerSettings(qps=0.8 / S, latency_bound_ms=bound_factor * S * 1000, min_requests=3000,
                                  min_duration_s=0.0)
        m = get_scenario("server").measure(scenario_input(constant(S), server=settings)[0])
        es, samples = m.server.early_stopping, sorted(m.samples_ms)
        k = sum(v > settings.latency_bound_ms for v in samples)
        assert es.queries == len(samples) == 3000 and es.overlatency == k
        assert es.met == (binomial_cdf(k, 3000, 0.01) <= 0.01) == m.server.valid
        assert binomial_cdf(k, es.queries_needed, 0.01) <= 0.01 < binomial_cdf(k, es.queries_needed - 1, 0.01)
        # the estimate is the t-th largest latency, t the most over-bound requests that would still pass
        t = max(t for t in range(1, k + 40) if binomial_cdf(t, 3000, 0.01) <= 0.01)
        assert es.estimate_ms == samples[-t] >= np.percentile(samples, 99)
        lo, hi = m.server.percentile_ci_ms
        assert lo <= m.server.percentile_ms <= hi


def test_a_run_that_cannot_be_long_enough_says_so_and_the_search_stops_there():
    settings = ServerSettings(qps="auto", latency_bound_ms=1000.0, min_duration_s=0.0, max_duration_s=100.0)
    run, _ = scenario_input(constant(S), server=settings)
    short = serve(run, 2.0)  # 459 requests at 2 QPS need 230 s
    assert short.n_requests == 200 and not short.valid
    assert "459 requests" in short.invalid_reason and "max_duration_s 100" in short.invalid_reason
    # the search halves the load after invalid runs and stops at the first run that could not be long enough
    found = capacity.search(_TooShortBelow10, ceiling_qps=100.0, bound_ms=10.0)
    assert found.capacity_qps is None and [s.target_qps for s in found.steps] == [100.0, 50.0, 25.0, 12.5, 6.25]
    assert found.stop_reason == "unreachable: at 6.25 QPS too short for its percentile"


class _TooShortBelow10:
    """An invalid run at every load (fell behind, so no other stop rule applies); too short below 10 QPS."""

    def __init__(self, qps: float) -> None:
        self.target_qps, self.valid, self.kept_up, self.queued = qps, False, False, 10
        self.latencies_ms, self.latency_bound_ms = [50.0], 10.0
        self.too_short = "too short for its percentile" if qps < 10 else None


@pytest.mark.parametrize("qps", [math.inf, "inf", "1e400", float("nan"), "nan", -2.0, 0])
def test_a_load_that_is_not_finite_and_positive_is_refused(qps):
    with pytest.raises(UsageError, match="finite number > 0") as err:
        ServerSettings(qps=qps)
    assert "\n" not in str(err.value)


def test_a_load_whose_run_would_exceed_max_requests_or_max_duration_is_refused():
    with pytest.raises(UsageError, match="max_requests 100000") as err:
        ServerSettings(qps=1e9)  # 10 s at 1e9 QPS: never 1e10 arrivals generated ahead
    assert "accepted: qps <= 10000" in str(err.value)
    with pytest.raises(UsageError, match="max_duration_s 600"):
        ServerSettings(qps=0.5, latency_bound_ms=100.0)  # 459 requests take 918 s
    with pytest.raises(UsageError, match="max_requests"):
        ServerSettings(qps=1.0, latency_bound_ms=100.0, latency_percentile=0.99999, max_duration_s=1e9)
    with pytest.raises(UsageError, match="max_duration_s"):
        ServerSettings(qps=1.0, min_duration_s=20.0, max_duration_s=10.0)
    huge = ServerSettings(qps=1e9, min_duration_s=0.0)  # no duration asked: the run is its minimum count
    assert run_size(1e9, huge, 4) == (8, None)


def test_the_search_never_asks_for_more_requests_than_max_requests():
    settings = ServerSettings(qps="auto", latency_bound_ms=1000.0, latency_percentile=0.9, min_duration_s=1.0,
                              max_requests=5000)
    m = get_scenario("server").measure(scenario_input(constant(1e-6), server=settings)[0])
    assert max(s.n_requests for s in m.server.curve) <= 5000
    assert m.capacity_qps == 5000 and m.extra["capacity_search"]["stop"].startswith("capacity at least")


@pytest.mark.parametrize(("flag", "value"), [("--server-qps", "inf"), ("--server-qps", "1e400"),
                                              ("--latency-percentile", "1.5")])
def test_bad_server_flags_exit_2_with_one_line(flag, value, tmp_path, capsys):
    args = ["run", "--limit", "2", "--out", str(tmp_path / "run"), "--quiet", "--scenarios", "server",
            "--latency-bound-ms", "500", flag, value]
    if flag != "--server-qps":
        args += ["--server-qps", "auto"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "accepted" in err[0] and value in err[0], err


def test_the_percentile_is_in_a_cells_identity_only_when_not_the_default():
    base = ServerSettings(qps=5.0, latency_bound_ms=100.0)
    assert "latency_percentile" not in base.identity()  # cell ids from before the setting stay valid
    assert base.identity() == ServerSettings(qps=5.0, latency_bound_ms=100.0, confidence=0.95,
                                             max_duration_s=900.0, max_requests=50_000, prep_workers=2).identity()
    assert ServerSettings(qps=5.0, latency_bound_ms=100.0, latency_percentile=0.9).identity() == {
        **base.identity(), "latency_percentile": 0.9}


def test_the_capacity_comes_with_its_bracket_and_interval():
    settings = ServerSettings(qps="auto", latency_bound_ms=5 * S * 1000, latency_percentile=0.9, min_requests=2000,
                              min_duration_s=0.0)
    m = get_scenario("server").measure(scenario_input(constant(S), server=settings)[0])
    lo, hi = m.server.capacity_bracket
    assert lo == m.capacity_qps and m.capacity_qps < hi <= 1.05 * m.capacity_qps * (1 + 1e-9)  # a neighbour step: 5% exactly
    assert not any(s.valid for s in m.server.curve if s.target_qps == hi)
    ci_lo, ci_hi = m.server.percentile_ci_ms
    assert ci_lo <= m.server.percentile_ms <= ci_hi and m.server.percentile_ms == pytest.approx(
        np.percentile(m.samples_ms, 90))
    assert m.flags == []  # a steady fake: nothing implausible


def test_the_capacity_search_reports_each_step_as_it_ends():
    settings = ServerSettings(qps="auto", latency_bound_ms=5 * S * 1000, latency_percentile=0.9, min_requests=200,
                              min_duration_s=0.0)
    run = scenario_input(constant(S), server=settings)[0]
    lines: list[str] = []
    run.note = lines.append
    m = get_scenario("server").measure(run)
    assert lines[0].startswith("capacity search from ") and "offline throughput at batch" in lines[0]
    steps = lines[1:]
    assert len(steps) == len(m.server.curve) > 1 and m.server.curve[-1].final
    for line, step in zip(steps, m.server.curve, strict=True):
        final = " (final run)" if step.final else ""
        assert line.startswith(f"{step.target_qps:.4g} QPS{final}: {step.n_requests} requests, p90 ")
        assert line.endswith("; valid") if step.valid else f"invalid: {step.invalid_reason}" in line


class _SlowingDown:
    """A model that serves the ceiling probe at full speed, then four times slower: the search's steps
    were measured on a different machine than its ceiling."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch: int) -> float:
        self.calls += 1
        return S if self.calls <= 6 else 4 * S


class _SpeedingUp:
    """A model that is slow while the ceiling is probed, then four times faster."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch: int) -> float:
        self.calls += 1
        return 4 * S if self.calls <= 6 else S


def test_a_capacity_above_the_offline_ceiling_is_flagged():
    settings = ServerSettings(qps="auto", latency_bound_ms=10 * S * 1000, latency_percentile=0.9, min_requests=500,
                              min_duration_s=0.0)
    run, _ = scenario_input(_SpeedingUp(), server=settings)
    run.policy = type(run.policy)(warmup=0, min_iterations=5, min_duration_s=0.0, max_iterations=5, cv_threshold=0.1)
    m = get_scenario("server").measure(run)
    codes = [f["code"] for f in m.flags]
    assert m.capacity_qps > 1.05 * m.extra["capacity_search"]["ceiling_qps"] and "capacity-above-offline" in codes
    assert plausibility.capacity_above_offline(100.0, 96.0, "x") is None  # within 5%: no flag
    assert plausibility.capacity_above_offline(100.0, 90.0, "x")["code"] == "capacity-above-offline"


def test_a_curve_that_falls_as_the_load_rises_is_flagged():
    steps = [CurveStep(target_qps=2.72, percentile_ms=5562.0, ci_lo_ms=5000.0, ci_hi_ms=6000.0),
             CurveStep(target_qps=3.2, percentile_ms=1528.0, ci_lo_ms=1400.0, ci_hi_ms=1700.0)]
    found = plausibility.curve_not_monotone(steps)
    assert found["code"] == "curve-not-monotone" and "speed changed" in found["message"]
    overlapping = [steps[0], replace(steps[1], ci_hi_ms=5100.0)]  # within the interval: noise, not a flag
    assert plausibility.curve_not_monotone(overlapping) is None
    assert plausibility.curve_not_monotone([steps[0], replace(steps[1], ci_lo_ms=None)]) is None
    # and from a search (from the ceiling: a predicted one re-predicts at each step's speed and follows it) on a
    # model that speeds up after its first steps
    settings = ServerSettings(qps="auto", latency_bound_ms=30 * S * 1000, latency_percentile=0.9,
                              min_requests=300, min_duration_s=0.0, search_start="ceiling")
    calls = {"n": 0}

    def faster_later(batch: int) -> float:  # the first 700 batches slow, then ten times faster
        calls["n"] += 1
        return 10 * S if calls["n"] <= 700 else S

    m = get_scenario("server").measure(scenario_input(faster_later, server=settings)[0])
    curve = sorted(m.server.curve, key=lambda s: s.target_qps)
    assert any(f["code"] == "curve-not-monotone" for f in m.flags), curve


def test_flags_never_fire_on_the_committed_baselines():
    records = [r for path in BASELINES.glob("*/results.jsonl") for r in store.records(path.parent)]
    assert records
    for r in records:
        assert plausibility.curve_not_monotone(r.server.curve if r.server else ()) is None
        ceiling = dig(r.extra.capacity_search, "ceiling_qps")
        assert plausibility.capacity_above_offline(r.capacity_qps, ceiling, "ceiling") is None
        assert not r.flags


def test_a_record_with_flags_and_a_bracket_is_well_formed_and_shown_under_the_summary(tmp_path):
    m = get_scenario("server").measure(scenario_input(constant(S), server=ServerSettings(
        qps="auto", latency_bound_ms=5 * S * 1000, latency_percentile=0.9, min_requests=500, min_duration_s=0.0))[0])
    record = {"cell_id": "c1", "status": "ok", "variant": "base", "task": "<CAPTION>", "batch_size": 1,
              "device": "cpu", "dtype": "fp32", "weights": "random", "scenario": "server", "server": m.server.to_dict(),
              "capacity_qps": m.capacity_qps,
              "flags": [plausibility.flag("curve-not-monotone", "the machine's speed changed during the search")]}
    assert store.parse_line(json.dumps(record)) is not None
    assert record["server"]["capacity_bracket"] and record["server"]["percentile_ci_ms"]
    # lists of numbers only where the record has them; flags are tables
    assert store.parse_line(json.dumps({**record, "server": {**m.server.to_dict(), "achieved_qps": [1]}})) is None
    assert store.parse_line(json.dumps({**record, "server": {**m.server.to_dict(), "capacity_bracket": ["a"]}})) is None
    assert store.parse_line(json.dumps({**record, "flags": ["capacity-above-offline"]})) is None
    table = summary.summary_table([record])
    assert table.splitlines()[-1] == ("! base <CAPTION> bs1 cpu server: curve-not-monotone: the machine's speed "
                                      "changed during the search")


def test_a_load_short_for_its_one_slow_request_runs_again_longer_and_an_overload_does_not():
    # p90 with none over the bound needs 44 requests, with one over 64: the one slow batch of the first
    # run makes it short, not slow; the same load runs again, sized to 64, and passes
    calls = []

    def one_slow_batch(batch: int) -> float:
        calls.append(batch)
        return 0.105 if len(calls) == 5 else S

    settings = ServerSettings(qps=5.0, latency_bound_ms=100.0, latency_percentile=0.9, min_requests=8,
                              min_duration_s=0.0)
    m = get_scenario("server").measure(scenario_input(one_slow_batch, server=settings)[0])
    assert m.server.valid, m.server.invalid_reason
    assert m.server.n_requests == 64 and len(calls) == 44 + 64
    # every request over the bound: more requests cannot help, so the load is run once
    calls.clear()
    m = get_scenario("server").measure(scenario_input(lambda batch: calls.append(batch) or 0.15, server=settings)[0])
    assert not m.server.valid and m.server.n_requests == 44 == len(calls)
