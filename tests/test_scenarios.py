"""Scenarios on a fake pipeline with a known service time and a virtual clock: deterministic, no model.

The server with batch 1 and a fixed service time S is an M/D/1 queue, so its measured percentiles and
its capacity under a bound are checked against an M/D/1 queue simulated here (Lindley's recursion).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scenario_fakes import SAMPLES, scenario_input

from bench.core.errors import UsageError
from bench.scenarios import SCENARIOS, ServerSettings, capacity, get_scenario
from bench.scenarios.server import arrival_schedule, serve

S = 0.010  # service time of one image, seconds


def constant(seconds: float):
    return lambda batch: seconds


def md1_sojourn_ms(qps: float, service_s: float, n: int = 200_000, seed: int = 12345) -> np.ndarray:
    """Time in system of each customer of an M/D/1 FIFO queue (independent of bench's own code)."""
    gaps = np.random.default_rng(seed).exponential(1.0 / qps, n)
    wait = np.empty(n)
    w = 0.0
    for k in range(n):
        wait[k] = w
        w = max(0.0, w + service_s - (gaps[k + 1] if k + 1 < n else 0.0))
    return (wait + service_s) * 1000.0


def md1_capacity(bound_ms: float, service_s: float) -> float:
    """The arrival rate at which the M/D/1 p99 time in system equals ``bound_ms`` (bisection)."""
    lo, hi = 0.01 / service_s, 0.999 / service_s
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.percentile(md1_sojourn_ms(mid, service_s, 100_000), 99) <= bound_ms else (lo, mid)
    return lo


def ks_statistic(x: np.ndarray, cdf) -> float:
    x = np.sort(x)
    n = len(x)
    f = cdf(x)
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


def test_inter_arrival_times_are_exponential_at_the_set_rate():
    qps, n = 40.0, 5000
    arrivals = arrival_schedule(qps, n, seed=7)
    gaps = np.diff(arrivals, prepend=0.0)
    critical = 1.36 / math.sqrt(n)  # Kolmogorov-Smirnov, 5% level
    assert ks_statistic(gaps, lambda x: 1 - np.exp(-qps * x)) < critical
    assert gaps.mean() == pytest.approx(1 / qps, rel=0.03)
    assert arrivals[-1] < n / qps  # the whole schedule fits the window, so the offered rate is the target
    # the test has power: the wrong rate, or evenly spaced arrivals at the right rate, fail it
    assert ks_statistic(gaps, lambda x: 1 - np.exp(-1.2 * qps * x)) > critical
    assert ks_statistic(np.full(n, 1 / qps), lambda x: 1 - np.exp(-qps * x)) > critical
    assert np.array_equal(arrivals, arrival_schedule(qps, n, seed=7))  # reproducible from its seed
    assert not np.array_equal(arrivals, arrival_schedule(qps, n, seed=8))


@pytest.mark.parametrize("load", [0.3, 0.6, 0.8])
def test_batch_1_fixed_service_matches_an_md1_queue(load):
    qps = load / S
    settings = ServerSettings(qps=qps, min_requests=20_000, min_duration_s=0.0,
                              max_duration_s=1e6)
    run, _ = scenario_input(constant(S), server=settings)
    measured = serve(run, qps)
    reference = md1_sojourn_ms(qps, S)
    assert measured.valid, measured.invalid_reason
    for q in (50, 99):
        assert measured.percentile(q) == pytest.approx(np.percentile(reference, q), rel=0.15), q
    assert min(measured.latencies_ms) == pytest.approx(S * 1000)  # no request is faster than its service


def test_overload_is_invalid_by_early_stopping_and_says_why():
    settings = ServerSettings(qps=1.5 / S, latency_bound_ms=5 * S * 1000, min_requests=2000, min_duration_s=0.0)
    m = get_scenario("server").measure(scenario_input(constant(S), server=settings)[0])
    reason, es = m.server.invalid_reason, m.server.early_stopping
    assert m.server.valid is False and reason.startswith("early stopping not met") and "over the bound" in reason
    assert es.met is False and es.queries == 2000 and es.overlatency > 1000
    assert es.queries_needed > es.queries
    assert m.server.scheduled_qps == pytest.approx(1.5 / S)  # offered: the target
    assert m.server.completed_qps == pytest.approx(1 / S, rel=0.05)  # served: what one model can do
    assert m.capacity_qps is None and m.server.curve == () and m.server.capacity_bracket is None
    # MLPerf judges latency against a bound, not the achieved rate: without a bound the same run is valid
    unbounded = dataclasses.replace(settings, latency_bound_ms=None)
    m = get_scenario("server").measure(scenario_input(constant(S), server=unbounded)[0])
    assert m.server.valid is True and m.server.early_stopping.met is None


def test_a_latency_bound_is_judged_on_p99():
    settings = ServerSettings(qps=0.8 / S, latency_bound_ms=3 * S * 1000, min_requests=5000, min_duration_s=0.0)
    m = get_scenario("server").measure(scenario_input(constant(S), server=settings)[0])
    assert m.latency.p99 > 3 * S * 1000
    assert m.server.valid is False and "p99" in m.server.invalid_reason
    assert m.server.latency_bound_ms == 30.0


@pytest.mark.parametrize("start", ["ceiling", "predicted"])
def test_capacity_search_finds_the_md1_capacity_for_the_bound(start):
    bound_ms = 5 * S * 1000
    expected = md1_capacity(bound_ms, S)
    settings = ServerSettings(qps="auto", latency_bound_ms=bound_ms, min_requests=4000, min_duration_s=0.0,
                              search_start=start)
    m = get_scenario("server").measure(scenario_input(constant(S), server=settings)[0])
    assert m.capacity_qps == pytest.approx(expected, rel=0.10)
    curve, searched = m.server.curve, m.extra["capacity_search"]
    assert searched["start"] == start and searched["start_qps"] == curve[0].target_qps
    assert searched["search_s"] >= sum(step.n_requests / step.target_qps for step in curve)  # virtual time
    short = [step for step in curve if not step.final]
    assert searched["bracket_s"] >= sum(step.n_requests / step.target_qps for step in short)
    assert searched["bracket_s"] <= searched["search_s"]
    if start == "ceiling":
        assert len(curve) >= 4 and curve[0].target_qps == pytest.approx(1 / S)  # bracketed from offline
        assert searched["prediction"] is None
    else:  # from the prediction of the cell's own batch times, then its neighbours: two or three runs (and
        short = [s for s in curve if not s.final]  # the final run)
        assert len(short) <= 3 and curve[0].target_qps == searched["prediction"]["qps"]
        assert searched["prediction"]["basis"] == "predicted (queueing model from measured batch times)"
        assert list(searched["prediction"]["batch_sizes"]) == [1]
    valid = [s for s in curve if s.valid]
    assert max(s.target_qps for s in valid if s.final) == m.capacity_qps  # signed by final runs
    assert all(s.p99 <= bound_ms for s in valid)
    above = [s.target_qps for s in curve if not s.valid and s.target_qps > m.capacity_qps]
    assert min(above) <= m.capacity_qps * 1.05  # the bracket closed to 5%
    assert m.server.target_qps == m.capacity_qps and m.server.valid  # the cell's figures: at capacity
    assert m.extra["capacity_search"]["ceiling_qps"] == pytest.approx(1 / S)


def test_dynamic_batching_raises_capacity_with_the_batch_size():
    def fixed_plus_per_image(batch: int) -> float:
        return 0.008 + 0.002 * batch  # a batch of 8 serves 8 images in 24 ms instead of 80

    capacity = {}
    for batch_size in (1, 8):
        settings = ServerSettings(qps="auto", latency_bound_ms=100.0, min_requests=3000, min_duration_s=0.0)
        m = get_scenario("server").measure(scenario_input(fixed_plus_per_image, batch_size, settings)[0])
        capacity[batch_size] = m.capacity_qps
        if batch_size == 8:
            assert m.server.batch_size_mean > 2 and m.server.max_batch_size == 8
            # predicted from the cell's own batches of 8 and of 1 (partial batches interpolated between them)
            prediction = m.extra["capacity_search"]["prediction"]
            assert list(prediction["batch_sizes"]) == [1, 8] and len(m.server.curve) <= 3
    assert capacity[8] > 2 * capacity[1]


@pytest.mark.parametrize("delay_ms", [0.0, 20.0])
def test_the_batcher_waits_at_most_the_queue_delay_for_a_fuller_batch(delay_ms):
    # one request per second: a batch of 4 almost never fills, so a request waits the whole delay
    # (for company that rarely comes), then is served; nobody waits longer than the delay plus a busy model
    settings = ServerSettings(qps=1.0, max_queue_delay_ms=delay_ms, min_requests=200, min_duration_s=0.0)
    run, pipeline = scenario_input(constant(S), 4, settings)
    measured = serve(run, 1.0)
    assert pipeline.batch_sizes.count(1) > 0.9 * len(pipeline.batch_sizes)
    assert np.median(measured.latencies_ms) == pytest.approx(delay_ms + S * 1000)
    assert max(measured.latencies_ms) <= delay_ms + 2 * S * 1000 + 1e-6


def test_a_full_batch_goes_at_once_without_waiting_the_delay():
    settings = ServerSettings(qps=1000.0, max_queue_delay_ms=1000.0, min_requests=400, min_duration_s=0.0)
    run, pipeline = scenario_input(constant(0.001), 4, settings)
    measured = serve(run, 1000.0)
    assert pipeline.batch_sizes.count(4) >= len(pipeline.batch_sizes) - 1  # only the last may be short
    assert max(measured.latencies_ms) < 100  # nobody waited anything like the 1 s delay


def test_offline_request_latency_is_the_batch_wall_time():
    run, _ = scenario_input(lambda batch: 0.008 + 0.002 * batch, batch_size=4)
    m = get_scenario("offline").measure(run)
    assert m.latency.p50 == pytest.approx(4 * m.time_per_image.p50)
    assert m.latency.p50 == pytest.approx(16.0) and m.time_per_image.p50 == pytest.approx(4.0)
    assert m.samples_ms == [16.0] * m.iterations
    assert m.throughput.images_per_s == pytest.approx(250.0)
    assert set(m.answers) == {s.image_id for s in SAMPLES}


def test_single_stream_runs_batch_1_only():
    single = SCENARIOS["single-stream"]
    assert single.cell_problem(1) is None and "batch 4" in single.cell_problem(4)
    m = single.measure(scenario_input(constant(S))[0])
    assert m.latency.p50 == pytest.approx(S * 1000) == pytest.approx(m.time_per_image.p50)


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({}, "--server-qps"),
        ({"qps": "auto"}, "--latency-bound-ms"),
        ({"qps": "fast"}, "'fast'"),
        ({"qps": -1}, "-1"),
        ({"qps": 5, "max_queue_delay_ms": -1}, "max_queue_delay_ms"),
        ({"qps": 5, "burst": 3}, "'burst'"),
    ],
)
def test_bad_server_settings_are_one_line_usage_errors(settings, needle):
    with pytest.raises(UsageError, match="accepted") as err:
        ServerSettings.from_dict(settings)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_only_what_is_measured_is_in_a_server_cells_identity():
    base = ServerSettings(qps=5.0)
    assert base.identity() == ServerSettings(qps=5.0, seed=3, min_requests=99, min_duration_s=1).identity()
    assert base.identity() != ServerSettings(qps=6.0).identity()
    assert base.identity() != ServerSettings(qps=5.0, latency_bound_ms=100).identity()


def test_a_bound_below_the_service_time_stops_the_search_as_unreachable():
    settings = ServerSettings(qps="auto", latency_bound_ms=S * 1000 / 2, min_requests=500, min_duration_s=0.0)
    m = get_scenario("server").measure(scenario_input(constant(S), server=settings)[0])
    assert m.capacity_qps is None and m.server.valid is False
    assert m.extra["capacity_search"]["stop"].startswith("unreachable") and len(m.server.curve) <= 2
    # no predicted rate meets the bound: the search starts at the ceiling
    assert m.extra["capacity_search"]["start"] == "ceiling" and m.extra["capacity_search"]["prediction"]["qps"] is None


class _Overloaded:
    """A run that fell behind: its backlog makes even the fastest request slow, beyond the bound."""

    def __init__(self, qps: float) -> None:
        self.target_qps, self.valid, self.kept_up, self.queued = qps, qps <= 20.0, qps <= 20.0, 50
        self.latencies_ms = [5.0] if self.kept_up else [3000.0]
        self.latency_bound_ms, self.too_short = 500.0, None


def test_a_run_that_fell_behind_is_never_taken_for_an_unreachable_bound():
    """Measured on an H200: the first step (at the offline ceiling) fell behind and its fastest request
    waited 3.3 s; the search must halve the load, not stop."""
    found = capacity.search(_Overloaded, ceiling_qps=125.0, bound_ms=500.0)
    assert 20.0 / 1.05 <= found.capacity_qps <= 20.0 and found.stop_reason.startswith("bracket")


def test_a_bound_within_the_service_times_own_spread_is_unreachable():
    calls = []

    def every_fifth_slow(batch: int) -> float:  # median S, but p99 6 S: no load can meet a 3 S bound
        calls.append(batch)
        return 6 * S if len(calls) % 5 == 0 else S

    settings = ServerSettings(qps="auto", latency_bound_ms=3 * S * 1000, min_requests=30, min_duration_s=0.0,
                              max_duration_s=1e6)
    m = get_scenario("server").measure(scenario_input(every_fifth_slow, server=settings)[0])
    assert m.capacity_qps is None and "no request waited" in m.extra["capacity_search"]["stop"]
    assert len(m.server.curve) < capacity.MAX_STEPS and not any(s.valid for s in m.server.curve)


class _Step:
    def __init__(self, qps: float, limit: float, final: bool = False) -> None:
        self.target_qps, self.valid, self.final = qps, qps <= limit, final
        self.latencies_ms, self.latency_bound_ms, self.queued = [1.0], 10.0, 1
        self.kept_up, self.too_short = self.valid, None


@pytest.mark.parametrize(("start", "steps"), [(98.0, 2), (103.0, 2), (93.0, 3), (107.0, 3)])
def test_a_search_from_a_close_prediction_brackets_in_two_or_three_runs(start, steps):
    found = capacity.search(lambda q: _Step(q, 100.0), ceiling_qps=500.0, bound_ms=10.0, start_qps=start)
    assert [s.target_qps for s in found.steps][0] == start and len(found.steps) == steps
    lo, hi = found.bracket
    assert lo <= 100.0 < hi <= lo * 1.05 * (1 + 1e-9) and found.stop_reason.startswith("bracket")


@pytest.mark.parametrize("start", [20.0, 400.0])
def test_a_search_from_a_wrong_prediction_falls_back_to_stepping_and_halving(start):
    found = capacity.search(lambda q: _Step(q, 100.0), ceiling_qps=500.0, bound_ms=10.0, start_qps=start)
    targets = [s.target_qps for s in found.steps]
    assert targets[2] == pytest.approx(start * 1.05 ** 2 if start < 100 else start / 1.05 ** 2)  # neighbours first
    assert targets[3] == pytest.approx(targets[2] * 1.5 if start < 100 else targets[2] / 2)  # then as before
    assert 100.0 / 1.05 <= found.capacity_qps <= 100.0 and found.stop_reason.startswith("bracket")


@pytest.mark.parametrize("start", [80.0, 120.0, 75.0, 125.0])
def test_a_search_guided_by_re_predictions_brackets_a_prediction_up_to_25_percent_off_in_three_runs(start):
    """The machine's speed moved between the prediction and the search: each step's re-prediction (from its
    own batch times) is the capacity, so the second run goes there and the third closes the bracket."""
    found = capacity.search(lambda q: _Step(q, 100.0), ceiling_qps=500.0, bound_ms=10.0, start_qps=start,
                            repredict=lambda step: 100.0)
    targets = [s.target_qps for s in found.steps]
    assert targets[:2] == [start, 100.0] and len(targets) == 3
    lo, hi = found.bracket
    assert lo <= 100.0 < hi <= lo * 1.05 * (1 + 1e-9) and found.stop_reason.startswith("bracket")


@pytest.mark.parametrize("start", [98.0, 103.0])
def test_a_right_prediction_closes_in_two_runs_with_or_without_re_predictions(start):
    for repredict in (None, lambda step: 100.0):
        found = capacity.search(lambda q: _Step(q, 100.0), ceiling_qps=500.0, bound_ms=10.0, start_qps=start,
                                repredict=repredict)
        assert len(found.steps) == 2 and found.bracket[0] <= 100.0 < found.bracket[1]


@pytest.mark.parametrize(("limit", "guess"), [(100.0, 60.0), (100.0, 160.0), (100.0, None), (40.0, 100.0)])
def test_re_predictions_the_runs_refute_never_stop_the_search_closing_on_the_runs_verdicts(limit, guess):
    """A re-prediction biased against the machine (or none) only moves where the runs go: the bracket is the
    runs' own and closes to 5%, with the one-sided walk handed back to 1.5x steps and halving."""
    found = capacity.search(lambda q: _Step(q, limit), ceiling_qps=500.0, bound_ms=10.0, start_qps=guess or 70.0,
                            repredict=lambda step: guess)
    lo, hi = found.bracket
    assert limit / 1.05 <= lo <= limit < hi <= lo * 1.05 * (1 + 1e-9) and len(found.steps) <= 10
    assert all(s.valid == (s.target_qps <= limit) for s in found.steps)


def test_a_prediction_20_percent_low_closes_the_bracket_in_at_most_4_short_steps():
    """The cell's probe ran at S, the search at 0.8 S (the machine sped up, as measured on this CPU): the
    prediction from the probe starts about 20% below the capacity, the first step's re-prediction (from its
    own batch times) is at the new speed, and the bracket closes in at most four short steps."""
    calls = []

    def sped_up(batch: int) -> float:
        calls.append(batch)
        return S if len(calls) <= 5 else 0.8 * S  # the probe's 5 batches, then the search

    bound_ms = 5 * S * 1000
    settings = ServerSettings(qps="auto", latency_bound_ms=bound_ms, min_requests=4000, min_duration_s=0.0)
    m = get_scenario("server").measure(scenario_input(sped_up, server=settings)[0])
    curve, searched = m.server.curve, m.extra["capacity_search"]
    expected = md1_capacity(bound_ms, 0.8 * S)
    assert searched["prediction"]["qps"] <= 0.85 * expected  # the prediction started low
    short = [s for s in curve if not s.final]
    assert len(short) <= 4 and short[0].target_qps == searched["prediction"]["qps"]
    assert short[1].target_qps == pytest.approx(short[0].repredicted_qps, rel=0.01)  # guided by step 1
    assert short[0].repredicted_qps == pytest.approx(expected, rel=0.10)
    assert m.capacity_qps == pytest.approx(expected, rel=0.10) and curve[-1].final and curve[-1].valid
    assert all(s.repredicted_qps is None for s in curve if s.final)


def test_a_prediction_above_the_ceiling_starts_at_the_ceiling():
    found = capacity.search(lambda q: _Step(q, 100.0), ceiling_qps=101.0, bound_ms=10.0, start_qps=300.0)
    assert [s.target_qps for s in found.steps] == pytest.approx([101.0, 101.0 / 1.05])


@pytest.mark.parametrize("limit", [130.0, 37.0, 3.0])
def test_the_search_brackets_up_or_down_from_the_ceiling_and_closes_to_5_percent(limit):
    found = capacity.search(lambda q: _Step(q, limit), ceiling_qps=100.0, bound_ms=10.0)
    assert limit / 1.05 <= found.capacity_qps <= limit
    assert found.stop_reason.startswith("bracket") and len(found.steps) <= capacity.MAX_STEPS
    assert found.representative.target_qps == found.capacity_qps


@pytest.mark.parametrize(("short_limit", "final_limit"), [(37.0, 37.0), (37.0, 30.0), (37.0, 15.0)])
def test_final_runs_sign_the_capacity_or_bring_it_down_to_what_they_pass(short_limit, final_limit):
    """Short steps pass up to ``short_limit`` (a short run passes a small overload), final runs only up to
    ``final_limit``: the capacity is what a final run passed, within 5% of its limit."""
    found = capacity.search(lambda q: _Step(q, short_limit), ceiling_qps=100.0, bound_ms=10.0,
                            final_at=lambda q: _Step(q, final_limit, final=True))
    assert final_limit / 1.05 <= found.capacity_qps <= final_limit
    finals = [s for s in found.steps if s.final]
    assert finals and found.representative.final and found.representative.target_qps == found.capacity_qps
    assert len(finals) <= capacity.MAX_FINAL_STEPS
    assert (len(finals) == 1) == (final_limit == short_limit)  # one final run when the short search held
    low, high = found.bracket
    assert low == found.capacity_qps and high <= 1.05 * low
