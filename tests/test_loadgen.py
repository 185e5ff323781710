"""The official MLPerf LoadGen as a second load generator, against the builtin one on a fake service.

LoadGen runs on the wall clock, so the fake here sleeps: a batch of any size up to the batch size takes
a fixed T. With batch size B the fake's capacity is B / T; below it, the batcher takes everything that
arrived during the previous batch, so a request waits what is left of that batch and then its own:
latency spreads over [T, 2T] whatever the Poisson draw, and p50/p90/p99 are pinned by T, not by the
luck of one schedule (with batch 1, an M/D/1 queue, two schedules' p99 differ by 30% at n = 2000).
T is 100 ms so that a busy machine's scheduler noise (a few ms) stays small; only ratios and lower
bounds (a sleep never ends early) are asserted, never a speed. LoadGen issues each query from its own
thread in real time, so on a machine too busy to wake that thread on time (its trace says how late it
issued) a late query misses its batch and waits one more: the comparison is then skipped, saying so.
"""

from __future__ import annotations

import sys
import time

import pytest
from test_predict import md1_capacity  # M/D/1 theory (Erlang's formula), independent of bench's code

from bench.accuracy.data import Sample
from bench.backends.base import STAGES, BatchResult
from bench.core.measure import RepetitionPolicy
from bench.core.stats import queries_needed
from bench.results import LoadGen
from bench.scenarios import ScenarioInput, ServerSettings, get_load_generator
from bench.scenarios import mlperf as lg_scenarios

needs_loadgen = pytest.mark.skipif(lg_scenarios.import_loadgen() is None, reason="needs the mlperf extra")

T = 0.100  # seconds per batch, any size
B = 32
CAPACITY = B / T
SAMPLES = [Sample(image_id=i, width=32, height=32) for i in range(8)]


class SleepingPipeline:
    """A model whose every batch takes ``seconds`` (T) of wall time (``time.sleep``)."""

    def __init__(self, seconds: float = T) -> None:
        self.seconds = seconds
        self.batch_sizes: list[int] = []
        self.results: list[BatchResult] = []

    def run_batch(self, samples: list[Sample]) -> BatchResult:
        start = time.perf_counter()
        time.sleep(self.seconds)
        batch_ms = (time.perf_counter() - start) * 1000.0
        n = len(samples)
        self.batch_sizes.append(n)
        result = BatchResult({s: batch_ms / n / len(STAGES) for s in STAGES}, batch_ms / n, batch_ms, [3] * n,
                             [f"text {s.image_id}" for s in samples], [f"answer {s.image_id}" for s in samples],
                             list(samples))
        self.results.append(result)
        return result


def scenario_input(tmp_path, batch_size: int, server: ServerSettings | None = None,
                   policy: RepetitionPolicy | None = None, seconds: float = T) -> ScenarioInput:
    policy = policy or RepetitionPolicy(warmup=1, min_iterations=5, min_duration_s=0.3, max_iterations=40,
                                        cv_threshold=0.5)
    return ScenarioInput(SleepingPipeline(seconds), SAMPLES, batch_size, policy, energy_idle_s=0.0, server=server,
                         log_dir=tmp_path / "logs")


@needs_loadgen
@pytest.mark.slow
@pytest.mark.parametrize("load", [0.4, 0.7])
def test_both_generators_give_the_same_percentiles_on_a_service_of_known_time(tmp_path, load):
    """p50/p90/p99 of the builtin server and of LoadGen (its own figures) within 10% of each other."""
    settings = ServerSettings(qps=load * CAPACITY, max_queue_delay_ms=2.0, latency_bound_ms=10 * T * 1000,
                              min_duration_s=2.0, min_requests=8, seed=3)
    builtin = get_load_generator("builtin").measure("server", scenario_input(tmp_path / "b", B, settings))
    mlperf = get_load_generator("mlperf").measure("server", scenario_input(tmp_path / "m", B, settings))
    assert builtin.loadgen is None and mlperf.loadgen is not None
    loadgen = mlperf.loadgen
    assert loadgen["result_validity"] == "VALID", loadgen
    assert mlperf.server["valid"] and builtin.server["valid"], (mlperf.server, builtin.server)
    assert loadgen["query_count"] == len(mlperf.samples_ms) >= queries_needed(0, 0.99, 0.99)
    ratios = {q: loadgen["percentiles_ms"][q] / builtin.latency[q] for q in ("p50", "p90", "p99")}
    late_ms = loadgen["issue_delay_ms"]["p99"]
    if not all(0.9 <= r <= 1.1 for r in ratios.values()) and late_ms > 0.05 * T * 1000:
        pytest.skip(f"the machine was too busy for LoadGen to issue on time (issue delay p99 {late_ms:.1f} ms); "
                    f"LoadGen/builtin percentile ratios {ratios}")
    for q, ratio in ratios.items():
        assert 0.9 <= ratio <= 1.1, (q, loadgen["percentiles_ms"][q], builtin.latency[q])
        # samples_ms are LoadGen's per-query latencies (from its trace): they give its own percentiles
        assert mlperf.latency[q] == pytest.approx(loadgen["percentiles_ms"][q], rel=0.03), q
    # every request waits at least its own batch (a sleep never ends early)
    assert min(mlperf.samples_ms) >= 0.95 * T * 1000 and min(builtin.samples_ms) >= 0.95 * T * 1000
    logs = tmp_path / "m" / "logs" / "step-01"
    assert loadgen["logs"] == str(logs)
    for name in lg_scenarios.LOG_FILES:
        assert (logs / name).stat().st_size > 0


@needs_loadgen
@pytest.mark.slow
def test_the_capacity_search_runs_each_step_under_loadgen_and_takes_its_verdict(tmp_path):
    settings = ServerSettings(qps="auto", max_queue_delay_ms=2.0, latency_bound_ms=2.5 * T * 1000,
                              min_duration_s=0.5, final_min_duration_s=2.0, min_requests=8)
    m = get_load_generator("mlperf").measure("server", scenario_input(tmp_path, B, settings))
    curve = m.server["curve"]
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    steps = [name for name in logs if "-short-" not in name]
    assert steps == [f"step-{k:02d}" for k in range(1, len(curve) + 1)]  # one verdict's LoadGen test per step
    for name in set(logs) - set(steps):  # a run re-run for being short keeps its log beside its step's
        assert name.split("-short-")[0] in steps, logs
    for k, step in enumerate(curve, start=1):  # each step judged by LoadGen: its verdict, from its own log
        verdict = lg_scenarios.read_summary(tmp_path / "logs" / f"step-{k:02d}")["result_validity"]
        assert step["valid"] == (verdict == "VALID"), (k, step)
        assert step["valid"] or step["invalid_reason"].startswith("LoadGen: ")
    assert m.capacity_qps is not None and m.server["valid"] and m.loadgen["result_validity"] == "VALID"
    assert m.server["scheduled_qps"] == m.loadgen["scheduled_samples_per_s"]  # what LoadGen offered
    assert m.server["target_qps"] == m.capacity_qps and curve[-1]["final"]
    assert m.capacity_qps <= 1.2 * CAPACITY  # no more than the fake can serve (a slow machine only lowers it)
    # the cell's LoadGen figures are the final run's at capacity (a short step at the same rate may precede it)
    signed = [k for k, s in enumerate(curve, start=1) if s["target_qps"] == m.capacity_qps and s["final"] and s["valid"]]
    assert signed and m.loadgen["logs"].endswith(f"step-{signed[0]:02d}")


@needs_loadgen
@pytest.mark.slow
def test_a_p90_capacity_search_under_loadgen_lands_on_the_md1_capacity_of_its_own_service_time(tmp_path):
    """Issue 29's done-when with LoadGen: batch 1 and a constant service D is M/D/1, so the p90 capacity
    under a bound of 10 D is the M/D/1 one (rho 0.88) computed from the service the final run measured.
    The final runs last 17 s: as many service times squared over the bound as the default 120 s at the
    tiny checkpoint's 143 ms (docs/scenarios.md, "Final runs")."""
    service = 0.020
    settings = ServerSettings(qps="auto", max_queue_delay_ms=0.0, latency_bound_ms=10 * service * 1000,
                              latency_percentile=0.9, min_duration_s=1.0, final_min_duration_s=17.0)
    m = get_load_generator("mlperf").measure("server", scenario_input(tmp_path, 1, settings, seconds=service))
    [signed] = [s for s in m.server["curve"] if s["final"] and s["valid"] and s["target_qps"] == m.capacity_qps]
    assert m.server["target_qps"] == m.capacity_qps and m.server["valid"]
    measured_s = signed["service_ms"] / 1000  # a sleep overshoots on a busy machine: theory from what ran
    theory = md1_capacity(measured_s, 10 * service, 0.9)
    late_ms = m.loadgen["issue_delay_ms"]["p99"]
    ratio = m.capacity_qps / theory
    if not 0.9 <= ratio <= 1.1 and (late_ms > 0.1 * service * 1000 or measured_s > 1.1 * service):
        pytest.skip(f"the machine was too busy for a constant service: LoadGen's issue delay p99 {late_ms:.1f} ms, "
                    f"median service {measured_s * 1000:.1f} ms for {service * 1000:.0f}; capacity/theory {ratio:.2f}")
    assert 0.9 <= ratio <= 1.1, (m.capacity_qps, theory, m.extra["capacity_search"]["stop"])


@needs_loadgen
@pytest.mark.parametrize("scenario, batch_size", [("single-stream", 1), ("offline", 4)])
def test_closed_loops_run_under_loadgen(tmp_path, scenario, batch_size):
    run = scenario_input(tmp_path, batch_size)
    m = get_load_generator("mlperf").measure(scenario, run)
    loadgen = m.loadgen
    assert loadgen["scenario"] == lg_scenarios.SCENARIOS[scenario].replace("-", "")
    assert loadgen["result_validity"] in ("VALID", "INVALID")
    assert loadgen["sample_count"] >= max(run.policy.min_iterations * batch_size, len(SAMPLES))
    assert loadgen["min_duration_met"] and loadgen["min_queries_met"], loadgen
    if scenario == "single-stream":  # sized for early stopping: LoadGen's estimate of p90 is there
        assert loadgen["result_validity"] == "VALID" and loadgen["early_stopping"]["met"], loadgen
        assert loadgen["early_stopping"]["estimate_ms"] >= loadgen["percentiles_ms"]["p90"]  # an upper bound
    assert set(m.answers) == {s.image_id for s in SAMPLES}  # every image answered once, asked or not
    assert m.iterations == len(m.samples_ms) if scenario == "offline" else len(m.samples_ms) == loadgen["query_count"]
    assert all(n <= batch_size for n in run.pipeline.batch_sizes)
    # a request waits at least its batch (a sleep never ends early), as LoadGen measured it too
    assert min(m.samples_ms) >= T * 1000 and loadgen["min_ms"] >= T * 1000
    if scenario == "single-stream":
        assert loadgen["percentiles_ms"]["p50"] == pytest.approx(m.latency["p50"], rel=0.03)
    assert (tmp_path / "logs" / "mlperf_log_summary.txt").exists()
    # the same token figures as the builtin generator's: the fake's decode stage, 2 tokens after the first
    assert m.per_token_ms is not None and m.per_token_ms["n"] == 0 and m.per_token_ms["p50"] is None
    decode_s = sum(r.stages_ms["decode"] * len(r.samples) for r in run.pipeline.results) / 1000.0
    rate = 2 * sum(run.pipeline.batch_sizes) / decode_s  # every batch the fake ran, warm-up included
    assert m.throughput["decode_tokens_per_s"] == pytest.approx(rate, rel=0.15)


@needs_loadgen
def test_loadgen_settings_map_from_the_cell(tmp_path):
    lg = lg_scenarios.import_loadgen()
    settings = ServerSettings(qps=12.5, latency_bound_ms=250.0, min_duration_s=3.0, min_requests=600, seed=9)
    ts = lg_scenarios.test_settings(lg, "server", scenario_input(tmp_path, 4, settings), 0.0)
    assert ts.scenario == lg.TestScenario.Server and ts.mode == lg.TestMode.PerformanceOnly
    assert (ts.server_target_qps, ts.server_target_latency_ns, ts.min_duration_ms) == (12.5, 250_000_000, 3000)
    assert ts.server_target_latency_percentile == pytest.approx(0.99)
    assert ts.min_query_count == 600 and ts.schedule_rng_seed == ts.sample_index_rng_seed == 9
    # too few requested: raised to what early stopping needs at p99 (LoadGen's own figure: 459)
    few = ServerSettings(qps=12.5, latency_bound_ms=250.0, min_requests=8)
    assert lg_scenarios.test_settings(lg, "server", scenario_input(tmp_path, 4, few), 0.0).min_query_count == 459
    p90 = ServerSettings(qps=12.5, latency_bound_ms=250.0, min_requests=8, latency_percentile=0.9)
    p90_settings = lg_scenarios.test_settings(lg, "server", scenario_input(tmp_path, 4, p90), 0.0)
    assert (p90_settings.server_target_latency_percentile, p90_settings.min_query_count) == (pytest.approx(0.9), 44)
    ss = lg_scenarios.test_settings(lg, "single-stream", scenario_input(tmp_path, 1), 0.025)
    assert ss.single_stream_expected_latency_ns == round(25e6 / lg_scenarios.EXPECTED_MARGIN)
    assert ss.min_query_count == lg_scenarios.SINGLE_STREAM_MIN_QUERIES  # never INVALID for being short


def test_the_verdict_and_figures_are_read_from_loadgens_detail_log(tmp_path):
    lines = {"result_validity": "INVALID", "effective_scenario": "Server", "result_min_duration_met": True,
             "result_min_queries_met": True, "result_perf_constraints_met": False, "early_stopping_met": False,
             "early_stopping_result": " * Run unsuccessful.\n * Processed 44 queries.",
             "result_overlatency_query_count": 3, "result_50.00_percentile_latency_ns": 20_000_000,
             "result_99.90_percentile_latency_ns": 61_500_000, "result_query_count": 44}
    import json

    (tmp_path / "mlperf_log_detail.txt").write_text("".join(
        f':::MLLOG {{"key": {json.dumps(k)}, "value": {json.dumps(v)}, "time_ms": 1.0}}\n' for k, v in lines.items())
        + "not a log line\n")
    summary = lg_scenarios.read_summary(tmp_path)
    assert summary["percentiles_ms"] == {"p50": 20.0, "p99.9": 61.5}
    assert summary["early_stopping"] == {"met": False, "overlatency": 3, "estimate_ms": None,
                                         "result": "* Run unsuccessful. * Processed 44 queries."}
    reason = lg_scenarios._verdict_reason(LoadGen.from_dict(summary))
    assert "latency percentile over the bound" in reason and "early stopping not met" in reason
    assert "minimum duration" not in reason


def _sweep(tiny_checkpoint, **changes):
    from bench.run.sweep import SweepConfig

    base = dict(variants=["base"], tasks=["<CAPTION>"], scenarios=["single-stream", "offline"], batch_sizes=[1, 2],
                num_beams=[1], max_new_tokens=3, limit=2, model_path=str(tiny_checkpoint), weights="random",
                load_generator=["mlperf"], energy_idle_s=0.0, examples=0,
                repetition={"warmup": 1, "min_iterations": 2, "min_duration_s": 0.0, "max_iterations": 4})
    return SweepConfig(**{**base, **changes})


@needs_loadgen
def test_single_stream_and_offline_through_loadgen_make_ok_records(tiny_checkpoint, tmp_path):
    from bench.results import store
    from bench.run.sweep import run_sweep

    out = tmp_path / "run"
    run_sweep(_sweep(tiny_checkpoint), out, quiet=True)
    records = store.records(out)
    assert [(r.scenario, r.batch_size, r.status) for r in records] == [
        ("single-stream", 1, "ok"), ("offline", 1, "ok"), ("offline", 2, "ok")], [r.error for r in records]
    for r in records:
        assert r.settings.load_generator == "mlperf"
        assert r.loadgen.result_validity in ("VALID", "INVALID") and len(r.samples_ms)
        assert "LoadGen" in r.timing.load_generator
        assert ("system under test" if r.scenario == "offline" else "as LoadGen measured it") in r.timing.latency
        logs = out / r.loadgen.logs
        assert logs.parent == out / "loadgen" and logs.name == r.cell_id
        assert (logs / "mlperf_log_detail.txt").exists() and (logs / "mlperf_log_summary.txt").exists()


def test_a_missing_loadgen_package_is_a_skipped_record_with_the_install_hint(tiny_checkpoint, tmp_path,
                                                                              monkeypatch):
    from bench.results import store
    from bench.run.sweep import run_sweep

    monkeypatch.setitem(sys.modules, lg_scenarios.MODULE, None)  # `import mlperf_loadgen` now fails
    out = tmp_path / "run"
    run_sweep(_sweep(tiny_checkpoint, batch_sizes=[1], scenarios=["single-stream"]), out, quiet=True)
    (record,) = store.records(out)
    assert record.status == "skipped" and lg_scenarios.INSTALL_HINT in record.error


def test_the_load_generator_is_in_the_cell_id_only_away_from_its_default():
    import dataclasses

    from bench.results.cell import Cell

    single = Cell("base", "<CAPTION>", "synthetic-smoke", 2, "cpu", "fp32", 1, "sdpa", False, 1, "dynamic", False,
                  "none", "random", None, 3, "single-stream")
    server = Cell("base", "<CAPTION>", "synthetic-smoke", 2, "cpu", "fp32", 4, "sdpa", False, 1, "dynamic", False,
                  "none", "random", None, 3, "server", ServerSettings(qps=2.0, latency_bound_ms=500.0))
    # the ids these cells had before the axis existed (computed with the code of commit 09e09b9)
    assert (single.cell_id, server.cell_id) == ("1a08873297d5b2df", "deffda1ddfaa0538")
    for cell in (single, server):
        mlperf = dataclasses.replace(cell, load_generator="mlperf")
        assert mlperf.cell_id != cell.cell_id and "loadgen-mlperf" in mlperf.label


def test_an_unknown_load_generator_is_refused_naming_the_accepted_ones(tiny_checkpoint):
    from bench.core.errors import UsageError
    from bench.run.sweep import validate

    with pytest.raises(UsageError, match=r"unknown load generator 'loadgen'; accepted: builtin, mlperf"):
        validate(_sweep(tiny_checkpoint, load_generator=["loadgen"]))
