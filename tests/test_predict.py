"""Predicted server capacity (bench.scenarios.predict): the simulated batcher against queueing theory, the
service-time table, determinism, and the extraction of batch times from committed records."""

from __future__ import annotations

import math
from array import array
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.results import Record, store
from bench.scenarios import predict
from bench.scenarios.batcher import Batcher
from bench.scenarios.predict import (
    Prediction,
    batch_times,
    predict_capacity,
    predictions,
    setting_key,
    simulate,
)

BASELINES = Path(__file__).resolve().parents[1] / "reports" / "baselines"
MD1_TOLERANCE = 0.08  # a p99 capacity from 20,000 simulated requests, against the exact M/D/1 figure


def md1_wait_cdf(t: float, rate: float, service: float) -> float:
    """P(wait <= t) in M/D/1 (Erlang's formula): (1 - rho) sum_{k <= t/S} (rate (kS - t))^k / k! e^{-rate (kS - t)}."""
    return (1 - rate * service) * sum((rate * (k * service - t)) ** k / math.factorial(k)
                                      * math.exp(-rate * (k * service - t)) for k in range(int(t // service) + 1))


def md1_capacity(service: float, bound: float, percentile: float) -> float:
    """The highest rate (per ms) whose response time (wait + service) meets ``bound`` at ``percentile``."""
    lo, hi = 0.0, 1.0 / service
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if md1_wait_cdf(bound - service, mid, service) >= percentile else (lo, mid)
    return lo


def test_constant_service_and_max_batch_one_is_md1_mean_wait():
    service, rho, n = 10.0, 0.5, 200_000
    arrivals = np.cumsum(np.random.default_rng(1).exponential(service / rho, n)).tolist()
    table = [[], [service]]
    latencies = simulate(arrivals, table, [0] * n, Batcher(1, 0.005))
    assert np.mean(latencies) - service == pytest.approx(rho * service / (2 * (1 - rho)), rel=0.03)


@pytest.mark.parametrize(("bound", "percentile"), [(50.0, 0.99), (30.0, 0.9), (100.0, 0.99)])
def test_constant_service_and_max_batch_one_gives_the_md1_capacity(bound, percentile):
    found = predict_capacity({1: [10.0]}, bound_ms=bound, percentile=percentile, max_batch=1)
    assert found.qps == pytest.approx(md1_capacity(10.0, bound, percentile) * 1000.0, rel=MD1_TOLERANCE)
    assert found.p_ms <= bound
    assert found.batch_sizes == (1,) and found.note == ""


def test_the_batcher_waits_for_a_fuller_batch_until_the_oldest_deadline():
    batcher, table = Batcher(2, 0.005), [[], [10.0], [10.0]]
    assert simulate([0.0], table, [0], batcher).tolist() == [10.0]  # the last request: no more coming
    assert simulate([0.0, 1.0], table, [0], batcher).tolist() == [11.0, 10.0]  # fills at 1 ms
    # the second arrives after the first one's 5 ms deadline: the first goes alone at 5 ms, the second when
    # the model is free again
    assert simulate([0.0, 7.0], table, [0, 0], batcher).tolist() == pytest.approx([15.0, 18.0])


def test_instances_share_one_queue():
    table = [[], [10.0]]
    one = simulate([0.0, 0.0], table, [0, 0], Batcher(1, 0.005))
    two = simulate([0.0, 0.0], table, [0, 0], Batcher(1, 0.005), instances=2)
    assert one.tolist() == [10.0, 20.0] and two.tolist() == [10.0, 10.0]


def test_sizes_between_measured_ones_are_interpolated_and_below_the_smallest_take_its_time():
    table = predict._service_table({2: [20.0], 6: [60.0]}, 5)
    assert [row[0] for row in table[1:]] == pytest.approx([20.0, 20.0, 30.0, 40.0, 50.0])


def test_a_measured_size_draws_its_raw_samples():
    table = predict._service_table({1: [3.0, 1.0, 2.0]}, 1)
    assert sorted(set(table[1])) == [1.0, 2.0, 3.0]


def test_never_extrapolates_past_the_largest_measured_size():
    with pytest.raises(ValueError, match="max_batch 8 is past the largest measured batch size 4"):
        predict_capacity({1: [10.0], 4: [30.0]}, bound_ms=100, percentile=0.99, max_batch=8)


def test_sizes_above_max_batch_beyond_the_next_measured_one_play_no_part():
    times = {1: [10.0, 11.0], 4: [30.0, 33.0]}
    found = predict_capacity({**times, 16: [1.0]}, bound_ms=100, percentile=0.99, max_batch=4)
    assert found == predict_capacity(times, bound_ms=100, percentile=0.99, max_batch=4)
    assert found.batch_sizes == (1, 4)
    between = predict_capacity({1: [10.0], 8: [40.0]}, bound_ms=100, percentile=0.99, max_batch=4)
    assert between.batch_sizes == (1, 8)  # sizes 2..4 interpolate towards 8's times


def test_batching_raises_the_capacity_when_a_batch_costs_little_more_than_one_image():
    times = {1: [10.0], 4: [12.0]}
    one = predict_capacity(times, bound_ms=60, percentile=0.99, max_batch=1)
    four = predict_capacity(times, bound_ms=60, percentile=0.99, max_batch=4)
    assert four.qps > 2 * one.qps


def test_deterministic_per_seed():
    times = {1: [9.0, 10.0, 14.0, 11.0], 4: [25.0, 31.0, 28.0]}
    runs = [predict_capacity(times, bound_ms=80, percentile=0.99, max_batch=4, seed=s) for s in (3, 3, 4)]
    assert runs[0] == runs[1]
    assert runs[0].p_ms != runs[2].p_ms


def test_no_rate_meets_a_bound_below_the_service_time():
    found = predict_capacity({4: [300.0]}, bound_ms=200, percentile=0.99, max_batch=2, instances=2)
    assert found.qps is None and found.p_ms is None
    assert "> the bound 200 ms" in found.note
    assert "fewer than 4 take the measured time of 4" in found.note and "2 instances" in found.note
    assert Prediction.BASIS == "predicted (queueing model from measured batch times)"


@pytest.mark.parametrize(("kw", "message"), [
    ({"bound_ms": 0}, "bad bound_ms 0"), ({"percentile": 1.0}, "bad percentile 1.0"),
    ({"instances": 0}, "bad instances 0"), ({"max_queue_delay_ms": -1}, "bad max_queue_delay_ms -1"),
])
def test_bad_input_is_named(kw, message):
    with pytest.raises(ValueError, match=message):
        predict_capacity({1: [10.0]}, **{"bound_ms": 50, "percentile": 0.99, "max_batch": 1, **kw})
    with pytest.raises(ValueError, match="bad batch times for batch size 1"):
        predict_capacity({1: [float("nan")]}, bound_ms=50, percentile=0.99, max_batch=1)


def _records(name: str) -> list[Record]:
    return store.records(BASELINES / name)


def test_batch_times_from_committed_records():
    records = _records("gpu-nvidia-h200")
    found = batch_times(records)
    ok = [r for r in records if r.status == "ok"]
    assert sum(len(v) for sizes in found.values() for v in sizes.values()) == sum(len(r.samples_ms) for r in ok)
    single = next(r for r in ok if r.scenario == "single-stream")
    assert found[setting_key(single)][1] == single.samples_ms.tolist()  # a batch of one: its wall time as recorded
    for r in ok:
        if r.scenario == "offline":  # prefetch: scaled to the wall time, the spread kept
            times = found[setting_key(r)][r.batch_size]
            assert np.mean(times) == pytest.approx(r.throughput.wall_s * 1000 / r.timing.iterations)
            assert np.argmax(times) == np.argmax(r.samples_ms)
    offline_base = [r for r in ok if r.scenario == "offline" and r.variant == "base"]
    assert set(found[setting_key(offline_base[0])]) == {64, 128}  # one setting, two batch sizes


def test_setting_key_ignores_batch_size_scenario_and_prefetch_only():
    record = next(r for r in _records("gpu-nvidia-h200") if r.scenario == "offline" and r.status == "ok")
    same = replace(record, batch_size=1, scenario="single-stream", samples_ms=array("d", [1.0]),
                   settings=replace(record.settings, prefetch=False))
    assert setting_key(same) == setting_key(record)
    assert setting_key(replace(record, dtype="fp32")) != setting_key(record)
    assert setting_key(replace(record, settings=replace(record.settings, quant="int8"))) != setting_key(record)


def test_predictions_one_per_measured_batch_size():
    found = predictions(_records("gpu-nvidia-h200"), bound_ms=2000, percentile=0.99)
    times = batch_times(_records("gpu-nvidia-h200"))
    assert {k: [p.max_batch for p in v] for k, v in found.items()} == {k: sorted(v) for k, v in times.items()}
    assert all(p.qps is not None and p.p_ms <= 2000 for v in found.values() for p in v)

