"""The official MLPerf LoadGen as a second load generator (``load_generator = "mlperf"``).

The builtin generator (``closed_loop``, ``server``) is this project's own; LoadGen (PyPI
``mlcommons-loadgen``, import ``mlperf_loadgen``, the optional extra ``mlperf``) is the one MLPerf
results are measured with. With it, LoadGen decides when each query is issued and judges the run; the
system under test is the same as the builtin one: the same dynamic batcher (``bench.scenarios.batcher``)
and the same pipeline. It runs through LoadGen's own seam: ``ConstructSUT`` (issue and flush callbacks),
``ConstructQSL``, ``StartTestWithLogSettings``, ``QuerySamplesComplete``.

- The SUT: ``issue`` queues each query with the time it was issued; one worker thread forms batches by
  the batcher's rule (no more queries come once LoadGen has flushed) and answers each batch with
  ``QuerySamplesComplete``. Single-stream and offline use the batcher without a queue delay.
- Settings map from the cell (``test_settings``); LoadGen writes ``mlperf_log_summary.txt`` and
  ``mlperf_log_detail.txt`` into the cell's log folder, and its verdict (``result_validity``), its
  percentiles and its early-stopping result are read back from the detail log into the record's
  ``loadgen`` field. Each query's latency as LoadGen measured it (from its scheduled issue) is read from
  its trace, which is then deleted: these are ``samples_ms`` for single-stream and server.
- LoadGen picks which image each query asks for; images it did not ask for are answered after the run,
  outside the measurement, so accuracy still covers every image once.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
import statistics
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from bench.backends.base import BatchResult
from bench.core import interrupts
from bench.core.errors import CellSkipped, UsageError
from bench.core.paths import move_in, private_dir, read_text, remove_file, rename
from bench.core.stats import queries_needed
from bench.results import LoadGen, Throughput
from bench.scenarios.base import (
    FirstAnswers,
    Measurement,
    ScenarioInput,
    Tracking,
    batch_figures,
    stats,
    token_figures,
)
from bench.scenarios.batcher import Batcher
from bench.scenarios.server import Server, ServerRun, judge

MODULE = "mlperf_loadgen"
INSTALL_HINT = "pip install -e '.[mlperf]'"
SCENARIOS = {"single-stream": "SingleStream", "offline": "Offline", "server": "Server"}
CONFIDENCE = 0.99  # LoadGen's early stopping confidence (fixed inside LoadGen)
SINGLE_STREAM_MIN_QUERIES = 64  # LoadGen's single-stream early stopping needs at least this many
# LoadGen pre-generates a closed loop's queries from the expected speed; a run faster than expected ends
# before the minimum duration (INVALID), so the warm-up's speed is taken this much faster
EXPECTED_MARGIN = 1.5
NO_BOUND_NS = 3600 * 10**9  # LoadGen needs a server latency target; without a bound, one hour
LOG_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")  # kept in the cell's log folder
TRACE = "mlperf_log_trace.json"  # read for the per-query latencies, then deleted (it grows with the queries)
_TRACE_SAMPLE = re.compile(r'"name":"Sample".*"ph":"b".*"issue_start_ns":(\d+).*"complete_ns":(\d+)')
LATENCY_BASIS = {
    "single-stream": ("request latency as LoadGen measured it: from the query's scheduled issue to its "
                      "QuerySamplesComplete (read from LoadGen's trace); one sample per query"),
    "offline": ("request latency = the batch's wall time, first preprocess to last postprocess, measured by the "
                "system under test, as the builtin offline (LoadGen issues every query at the start: its own "
                "latencies, in loadgen, are time since the start); one sample per batch"),
    "server": ("request latency as LoadGen measured it: from the query's scheduled arrival (LoadGen's Poisson "
               "schedule) to its QuerySamplesComplete, queueing included (read from LoadGen's trace); one sample "
               "per request"),
}


def import_loadgen() -> ModuleType | None:
    """The LoadGen module, or None when the optional package is not installed."""
    try:
        return importlib.import_module(MODULE)
    except ImportError:
        return None


def unavailable_reason() -> str | None:
    """Why a cell with the mlperf load generator cannot run here (a ``skipped`` record), or None."""
    if import_loadgen() is None:
        return (f"the mlperf load generator needs the optional package mlcommons-loadgen (import {MODULE}); "
                f"install it: {INSTALL_HINT}")
    return None


def _loadgen() -> ModuleType:
    lg = import_loadgen()
    if lg is None:
        raise CellSkipped(unavailable_reason() or "")
    return lg


# ---------------------------------------------------------------------------------- the SUT


@dataclass
class Query:
    """One LoadGen query (one sample) and what happened to it, host seconds."""

    id: int
    index: int  # the sample LoadGen asked for
    issued_s: float
    dispatched_s: float = math.nan
    completed_s: float = math.nan


class BatchingSUT:
    """LoadGen's system under test: the dynamic batcher in front of the pipeline, on one worker thread."""

    def __init__(self, lg: ModuleType, run: ScenarioInput, batcher: Batcher, first: FirstAnswers) -> None:
        self.lg, self.run, self.batcher, self.first = lg, run, batcher, first
        self.queries: list[Query] = []  # in issue order
        self.results: list[BatchResult] = []
        self.error: BaseException | None = None
        self._waiting: deque[Query] = deque()
        self._flushed = self._closed = self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="loadgen-sut", daemon=True)
        self._thread.start()

    def issue(self, samples: list[Any]) -> None:
        now = self.run.timer.now()
        with self._cond:
            for s in samples:
                query = Query(s.id, s.index, now)
                self.queries.append(query)
                self._waiting.append(query)
            self._cond.notify()

    def flush(self) -> None:
        """LoadGen has issued its last query: a partial batch need not wait for company."""
        with self._cond:
            self._flushed = True
            self._cond.notify()

    def stop(self) -> None:
        """Answer every query from now on unserved, so that LoadGen's test ends early (Ctrl-C, SIGTERM)."""
        self._stopped = True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _next_batch(self) -> list[Query] | None:
        timer = self.run.timer
        with self._cond:
            while True:
                if self._closed:
                    return None
                if not self._waiting:
                    self._cond.wait()
                    continue
                deadline = self.batcher.wait_until(len(self._waiting), self._waiting[0].issued_s,
                                                   more_coming=not self._flushed)
                now = timer.now()
                if deadline is None or now >= deadline:
                    taken = self.batcher.take(self._waiting)
                    for query in taken:
                        query.dispatched_s = now
                    return taken
                self._cond.wait(deadline - now)

    def _work(self) -> None:
        samples, timer = self.run.samples, self.run.timer
        while (taken := self._next_batch()) is not None:
            if self.error is None and not self._stopped:  # else answered unserved, so that LoadGen ends
                try:
                    result = self.run.pipeline.run_batch([samples[q.index] for q in taken])
                    self.results.append(result)
                    self.first.add(result)
                except BaseException as exc:  # raised by measure() once LoadGen has returned
                    self.error = exc
            done = timer.now()
            for query in taken:
                query.completed_s = done
            self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(q.id, 0, 0) for q in taken])


# ----------------------------------------------------------------------------- one LoadGen run


@dataclass
class LoadGenRun:
    """What one LoadGen test measured: the SUT's view of each query, the batches, and LoadGen's verdict."""

    queries: list[Query]
    results: list[BatchResult]
    summary: LoadGen  # the record's ``loadgen`` table
    loadgen_latencies_ms: list[float] = field(default_factory=list)  # LoadGen's own, one per query

    @property
    def start_s(self) -> float:
        return min(q.issued_s for q in self.queries)

    @property
    def wall_s(self) -> float:
        """From the first issue to the last completion."""
        return max(q.completed_s for q in self.queries) - self.start_s


def test_settings(lg: ModuleType, scenario: str, run: ScenarioInput, expected_batch_s: float,
                  at_least: int = 0) -> Any:
    """LoadGen's settings for a cell: its scenario, run length and seed, and for the server the target QPS,
    the latency bound and its percentile, and at least ``at_least`` queries (a re-run sized to the count
    over the bound an earlier run saw). ``expected_batch_s`` (the warm-up's batch time) sizes the closed
    loops as LoadGen asks."""
    policy, n_images = run.policy, len(run.samples)
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, SCENARIOS[scenario])
    ts.mode = lg.TestMode.PerformanceOnly
    seed = run.server.seed if scenario == "server" and run.server is not None else 0
    ts.qsl_rng_seed = ts.sample_index_rng_seed = ts.schedule_rng_seed = seed
    if scenario == "single-stream":
        ts.min_duration_ms = round(policy.min_duration_s * 1000)
        ts.min_query_count = max(policy.min_iterations, n_images, SINGLE_STREAM_MIN_QUERIES)
        ts.max_query_count = max(policy.max_iterations, ts.min_query_count)
        ts.single_stream_expected_latency_ns = max(1, round(expected_batch_s / EXPECTED_MARGIN * 1e9))
    elif scenario == "offline":
        ts.min_duration_ms = round(policy.min_duration_s * 1000)
        ts.min_query_count = max(policy.min_iterations * run.batch_size, n_images)
        ts.offline_expected_qps = run.batch_size / expected_batch_s * EXPECTED_MARGIN
    else:
        settings = run.server
        assert settings is not None
        ts.server_target_qps = float(settings.qps)  # type: ignore[arg-type]
        bound = settings.latency_bound_ms
        ts.server_target_latency_ns = NO_BOUND_NS if bound is None else round(bound * 1e6)
        ts.server_target_latency_percentile = settings.latency_percentile
        ts.min_duration_ms = round(settings.min_duration_s * 1000)
        ts.min_query_count = max(settings.min_requests, n_images,
                                 queries_needed(0, settings.latency_percentile, CONFIDENCE), at_least)
    return ts


def run_loadgen(lg: ModuleType, run: ScenarioInput, settings: Any, batcher: Batcher, first: FirstAnswers,
                log_dir: Path) -> LoadGenRun:
    """One LoadGen test against the batching SUT. LoadGen's C++ writers follow links, so they write into a
    fresh private folder; its logs (but the trace, read here) are then moved into ``log_dir`` through the door."""
    with private_dir("florence2-bench-loadgen-") as private:
        log = lg.LogSettings()
        log.log_output.outdir = str(private)
        log.log_output.copy_summary_to_stdout = False
        log.enable_trace = True  # its only record of each query's latency
        sut = BatchingSUT(lg, run, batcher, first)
        n = len(run.samples)
        sut_handle = lg.ConstructSUT(sut.issue, sut.flush)
        qsl_handle = lg.ConstructQSL(n, n, lambda _: None, lambda _: None)  # samples load lazily, in the pipeline
        try:
            with interrupts.deferred(sut.stop, interrupts.RESUME_ADVICE):  # LoadGen cannot unwind an exception
                lg.StartTestWithLogSettings(sut_handle, qsl_handle, settings, log)
        finally:
            sut.close()
            lg.DestroyQSL(qsl_handle)
            lg.DestroySUT(sut_handle)
        if sut.error is not None:
            raise sut.error
        trace = private / TRACE
        issue_delays, latencies = read_trace(trace)
        remove_file(trace, "load generator log")
        summary = read_summary(private)
        summary["logs"] = str(log_dir)
        move_in(private, log_dir, "load generator log")
    if issue_delays:  # how late LoadGen's own thread issued the queries: a busy machine shows here first
        summary["issue_delay_ms"] = {f"p{q}": float(np.percentile(issue_delays, q)) for q in (50, 90, 99)}
    counted = LoadGen.from_dict(summary)
    if len(latencies) != counted.sample_count:
        raise RuntimeError(f"LoadGen's trace holds {len(latencies)} per-query latencies for {counted.sample_count} "
                           f"samples (LoadGen {counted.version}: has its trace format changed?)")
    return LoadGenRun(sut.queries, sut.results, counted, latencies)


def read_trace(trace: Path) -> tuple[list[float], list[float]]:
    """Each query's issue delay and latency (ms) as LoadGen measured them from its scheduled issue time, in
    its trace."""
    if not trace.exists():
        return [], []
    lines = read_text(trace, "load generator log", errors="replace").splitlines()
    pairs = [(int(m.group(1)) / 1e6, int(m.group(2)) / 1e6) for line in lines if (m := _TRACE_SAMPLE.search(line))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def read_detail(path: Path) -> dict[str, Any]:
    """The ``:::MLLOG {json}`` lines of LoadGen's detail log, key -> value (the last of each key)."""
    values: dict[str, Any] = {}
    for line in read_text(path, "load generator log", errors="replace").splitlines():
        if line.startswith(":::MLLOG "):
            try:
                entry = json.loads(line[len(":::MLLOG "):])
            except ValueError:
                continue
            values[entry.get("key")] = entry.get("value")
    return values


# the record's ``loadgen`` fields copied as they are from LoadGen's detail log: field -> the log's key
LOG_FIELDS = {"result_validity": "result_validity", "scenario": "effective_scenario", "version": "loadgen_version",
              "min_duration_met": "result_min_duration_met", "min_queries_met": "result_min_queries_met",
              "perf_constraints_met": "result_perf_constraints_met", "query_count": "result_query_count"}


def read_summary(log_dir: Path) -> dict[str, Any]:
    """LoadGen's verdict, percentiles and early stopping, from its detail log (ns -> ms)."""
    d = read_detail(log_dir / "mlperf_log_detail.txt")

    def ms(key: str) -> float | None:
        value = d.get(key)
        return value / 1e6 if isinstance(value, (int, float)) else None

    percentiles = {}
    for key in d:
        if key.startswith("result_") and key.endswith("_percentile_latency_ns"):
            q = float(key[len("result_"):-len("_percentile_latency_ns")])
            percentiles[f"p{q:g}"] = ms(key)
    estimate = next((ms(k) for k in ("early_stopping_latency_ss", "early_stopping_latency_ms")
                     if d.get(k)), None)  # single- and multi-stream; LoadGen's server reports none
    return {
        **{name: d.get(key) for name, key in LOG_FIELDS.items()},
        "invalid_reason": d.get("result_invalid_reason") or None,
        "sample_count": _product(d.get("result_query_count"), d.get("generated_samples_per_query")),
        "samples_per_s": d.get("result_completed_samples_per_sec", d.get("result_samples_per_second")),
        "scheduled_samples_per_s": d.get("result_scheduled_samples_per_sec"),
        "percentiles_ms": percentiles,
        "mean_ms": ms("result_mean_latency_ns"),
        "min_ms": ms("result_min_latency_ns"),
        "max_ms": ms("result_max_latency_ns"),
        "early_stopping": {
            "met": d.get("early_stopping_met"),
            "overlatency": d.get("result_overlatency_query_count"),
            "estimate_ms": estimate,
            "result": " ".join(str(d.get("early_stopping_result") or "").split()),
        },
        "logs": str(log_dir),
    }


def _product(a: Any, b: Any) -> int | None:
    return a * b if isinstance(a, int) and isinstance(b, int) else None


def _verdict_reason(summary: LoadGen) -> str | None:
    """Why LoadGen called the run INVALID, in its own terms (None when VALID)."""
    if summary.result_validity == "VALID":
        return None
    checks = ((summary.min_duration_met, "minimum duration not met"),
              (summary.min_queries_met, "minimum query count not met"),
              (summary.perf_constraints_met, "latency percentile over the bound"))
    reasons = [text for met, text in checks if met is False]
    if summary.early_stopping is not None and summary.early_stopping.met is False:
        reasons.append(f"early stopping not met ({summary.early_stopping.result})")
    return "LoadGen: " + ("; ".join(reasons) or str(summary.invalid_reason or "INVALID"))


def _warm(run: ScenarioInput) -> float:
    """The warm-up, at least one batch (LoadGen sizes a closed-loop run from the expected batch time):
    the median warm-up batch time, seconds."""
    warm = run.batches(run.samples, run.batch_size)
    times_ms = [run.pipeline.run_batch(next(warm)).batch_ms for _ in range(max(1, run.policy.warmup))]
    return statistics.median(times_ms) / 1000.0


def _answer_the_rest(run: ScenarioInput, first: FirstAnswers) -> None:
    """Images LoadGen did not ask for, answered after the measured run so accuracy covers every image."""
    missing = [s for s in run.samples if s.image_id not in first.answers]
    for k in range(0, len(missing), run.batch_size):
        first.add(run.pipeline.run_batch(missing[k:k + run.batch_size]))


def _log_dir(run: ScenarioInput, name: str | None = None) -> Path:
    if run.log_dir is None:
        raise UsageError("the mlperf load generator needs a folder for LoadGen's logs (ScenarioInput.log_dir)")
    return run.log_dir / name if name else run.log_dir


# ----------------------------------------------------------------------------------- scenarios


def closed_loop(scenario: str, run: ScenarioInput) -> Measurement:
    """Single-stream or offline, with LoadGen issuing the queries and the batcher serving them."""
    lg = _loadgen()
    expected_s = _warm(run)
    first = FirstAnswers()
    settings = test_settings(lg, scenario, run, expected_s)
    with Tracking(run.device, run.energy_idle_s) as tracking:
        measured = run_loadgen(lg, run, settings, Batcher(run.batch_size, 0.0), first, _log_dir(run))
    _answer_the_rest(run, first)
    results, policy = measured.results, run.policy
    n_images = sum(len(r.samples) for r in results)
    time_per_image, stages, tokens = batch_figures(results, policy.cv_threshold)
    samples_ms = [r.batch_ms for r in results] if scenario == "offline" else measured.loadgen_latencies_ms
    latency = stats(samples_ms, policy.cv_threshold)
    memory, energy = tracking.fields(n_images, run.weights_bytes)
    wall_s = measured.wall_s
    per_token, decode_tokens_per_s = token_figures(results)  # the same token figures as the builtin's
    return Measurement(
        samples_ms=samples_ms, latency=latency, time_per_image=time_per_image, stages_ms=stages,
        throughput=Throughput(images_per_s=n_images / wall_s, tokens_per_s=sum(tokens) / wall_s, wall_s=wall_s,
                              decode_tokens_per_s=decode_tokens_per_s),
        memory=memory, energy=energy, gen_tokens_mean=sum(tokens) / len(tokens), iterations=len(results),
        latency_basis=LATENCY_BASIS[scenario], answers=first.answers, texts=first.texts,
        unstable=latency.unstable, loadgen=measured.summary, per_token_ms=per_token)


class LoadGenServer(Server):
    """The server scenario with LoadGen's Poisson schedule: each load (a fixed QPS, or each step of the
    capacity search) is one LoadGen test, judged by LoadGen's verdict."""

    def __init__(self) -> None:
        self._runs = 0
        self._short = 0

    def _step_log(self, run: ScenarioInput, rerun: bool) -> Path:
        """The step's log folder: one per step of the curve, holding the run its verdict came from; a run
        re-run for being short keeps its log beside it as ``step-NN-short-K``."""
        if not rerun:
            self._runs, self._short = self._runs + 1, 0
        step = _log_dir(run, f"step-{self._runs:02d}")
        if rerun and step.is_dir():
            self._short += 1
            rename(step, _log_dir(run, f"{step.name}-short-{self._short}"), "load generator log folder")
        return step

    def serve_once(self, run: ScenarioInput, qps: float, first: FirstAnswers, workers: int = 1,
                   at_least: int = 0) -> ServerRun:
        """One LoadGen test at ``qps`` of at least ``at_least`` queries (``Server.serve`` re-runs a short one
        as the builtin's). ``workers`` is the builtin's preparation pool: prefetch is measured with the
        builtin generator only."""
        lg = _loadgen()
        settings = run.server
        assert settings is not None
        step = self._step_log(run, rerun=at_least > 0)
        at_qps = dataclasses.replace(run, server=dataclasses.replace(settings, qps=qps))
        measured = run_loadgen(lg, at_qps, test_settings(lg, "server", at_qps, 0.0, at_least),
                               Batcher(run.batch_size, settings.max_queue_delay_ms / 1000.0), first, step)
        start = measured.start_s
        times = {name: np.array([getattr(q, name) - start for q in measured.queries])
                 for name in ("issued_s", "dispatched_s", "completed_s")}
        served = ServerRun(qps, times["issued_s"], times["dispatched_s"], times["completed_s"], measured.results,
                           run.batch_size, settings.max_queue_delay_ms, settings.latency_bound_ms,
                           settings.latency_percentile, CONFIDENCE)
        served.latencies_ms = measured.loadgen_latencies_ms  # LoadGen's, from its scheduled arrivals
        verdict = measured.summary
        served.offered_qps = verdict.scheduled_samples_per_s  # what LoadGen offered
        judge(served, settings)
        served.valid = verdict.result_validity == "VALID"  # LoadGen's verdict decides
        served.invalid_reason = _verdict_reason(verdict)
        served.loadgen = measured.summary
        return served

    def measure(self, run: ScenarioInput) -> Measurement:
        self._runs = 0
        m = super().measure(run)
        m.latency_basis = LATENCY_BASIS[self.name]
        return m


def measure(scenario: str, run: ScenarioInput) -> Measurement:
    """A cell's measurement with LoadGen generating the load."""
    if scenario == "server":
        return LoadGenServer().measure(run)
    return closed_loop(scenario, run)
