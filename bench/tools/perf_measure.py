"""bench.tools.perf's measuring loop: the snippet and every candidate in interleaved rounds, models loaded lazily
and shared, warm-ups and rounds within a time budget that does not count loading."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

from bench.accuracy.data import Sample
from bench.backends.base import LoadedModel
from bench.backends.registry import get_backend
from bench.backends.transformers.settings import vision_flops
from bench.core import host
from bench.run.optimize import matmul_reference
from bench.run.runner import cuda_oom_reason, free_memory, is_cuda_oom
from bench.scenarios.base import cycle_batches
from bench.tools.perf_report import PerfReport
from bench.tools.perf_runners import PipelineRunner, SettingResult, SnippetRunner
from bench.tools.perf_settings import NEW_TOKENS, NUM_BEAMS, VARIANT, Candidate

Loader = Callable[[str, str], LoadedModel]


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


class Rounds:
    """One measurement's state: the models loaded so far (shared where their key agrees), each live setting's
    runner and batch stream, the time spent (loading apart) and the notes for the report."""

    def __init__(self, load_model: Loader, device: str, max_new_tokens: int, budget_s: float,
                 compiled_warmup_s: float, log: Callable[[str], None], clock: Callable[[], float]) -> None:
        self.load_model, self.device, self.max_new_tokens = load_model, device, max_new_tokens
        self.budget_s, self.compiled_warmup_s, self.log, self.clock = budget_s, compiled_warmup_s, log, clock
        self.started, self.loading = clock(), 0.0
        self.notes: list[str] = []
        self.models: dict[tuple, LoadedModel] = {}
        self.runners: dict[int, Any] = {}
        self.batches: dict[int, Any] = {}
        self.last_round: dict[int, float] = {}  # seconds each setting's last measurement took

    def spent(self) -> float:
        """Seconds warming up and measuring: what the budget counts."""
        return self.clock() - self.started - self.loading

    def model_for(self, candidate: Candidate, result: SettingResult) -> LoadedModel:
        """The candidate's model: loaded (and timed, on ``result``) the first time its key is needed."""
        backend = get_backend(candidate.backend)
        cell = SimpleNamespace(**asdict(candidate), device=self.device)
        key = (candidate.model_key, backend.load_key(cell))
        if key not in self.models:
            t0 = self.clock()
            loaded = self.load_model(backend.load_dtype(candidate), candidate.attn)
            backend.prepare(loaded, cell)
            self.models[key] = loaded
            result.load_s = self.clock() - t0
            self.loading += result.load_s
        return self.models[key]

    def fail(self, result: SettingResult, exc: BaseException, when: str) -> None:
        """Out of device memory skips the setting, naming the memory; anything else is its error."""
        if is_cuda_oom(exc):
            result.error, result.skipped = f"skipped: {cuda_oom_reason(self.device, result.batch_size, exc)}", "oom"
        else:
            result.error = _one_line(exc)
        self.log(f"  {result.name}: {when} failed: {result.error}")
        self.runners.pop(id(result), None)
        free_memory()

    def one_batch(self, result: SettingResult) -> tuple[float, list[float]]:
        seconds, vision, texts = self.runners[id(result)].run(self.batches[id(result)])
        for image_id, text in texts.items():
            result.texts.setdefault(image_id, text)
        return seconds, vision

    def measure(self, result: SettingResult) -> None:
        """One measured batch of the setting (a failure ends it)."""
        t0 = self.clock()
        try:
            seconds, vision = self.one_batch(result)
        except (Exception, MemoryError) as exc:
            self.fail(result, exc, "measuring")
            self.last_round[id(result)] = 0.0
            return
        result.batch_s.append(seconds)
        result.vision_ms += vision
        self.last_round[id(result)] = self.clock() - t0

    def refused(self, result: SettingResult, candidate: Candidate) -> bool:
        """Whether the candidate is not started: its backend does not support it here, or its warm-up would start
        after 3/4 of the budget (a compiled one: when less than its estimated compilation is left)."""
        reason = get_backend(candidate.backend).unsupported_reason(SimpleNamespace(**asdict(candidate),
                                                                                   device=self.device))
        if reason:
            result.error, result.skipped = f"skipped: {reason}", "unsupported"
            self.log(f"  {result.name}: {result.error}")
            return True
        spent, late = self.spent(), self.spent() > 0.75 * self.budget_s
        if not late and not (candidate.compiled and spent + self.compiled_warmup_s > self.budget_s):
            return False
        result.error = f"skipped: {spent:.0f} s of the {self.budget_s:.0f} s budget spent before its warm-up"
        if not late:
            result.error += f" (compiling is estimated at {self.compiled_warmup_s:.0f} s)"
        result.skipped = "budget"
        self.notes.append(f"{result.name}: {result.error}")
        self.log(f"  {self.notes[-1]}")
        return True

    def first_round(self, result: SettingResult, candidate: Candidate | None) -> None:
        """Round 1 of one setting: its runner made (the snippet's is given), warmed up and measured once. The
        snippet failing its warm-up ends the run: nothing can be compared with it."""
        if candidate is not None:
            if self.refused(result, candidate):
                return
            try:
                self.runners[id(result)] = PipelineRunner(self.model_for(candidate, result), candidate, self.device,
                                                          self.max_new_tokens)
            except (Exception, MemoryError) as exc:
                self.fail(result, exc, "loading")
                return
        t0 = self.clock()
        try:
            for _ in range(candidate.warmup_batches if candidate else 1):
                self.one_batch(result)
        except (Exception, MemoryError) as exc:
            self.fail(result, exc, "warm-up")
            if candidate is None:
                raise RuntimeError(f"the model-card snippet failed: {result.error}") from exc
            return
        result.warmup_s = self.clock() - t0
        self.log(f"  warm-up {result.warmup_s:6.1f}s  {result.name}")
        self.measure(result)

    def next_round(self, results: list[SettingResult], rounds: int, done: int) -> bool:
        """One more batch of every live setting, unless the last round's time would overrun the budget (then
        False, and a note says how far the rounds were cut)."""
        live = [r for r in results if id(r) in self.runners and not r.error]
        round_s = sum(self.last_round.get(id(r), 0.0) for r in live)
        if self.spent() + round_s > self.budget_s:
            self.notes.append(f"rounds cut from {rounds} to {done} to stay within the {self.budget_s:.0f} s budget "
                              f"(one round ~{round_s:.0f} s here, {self.spent():.0f} s spent)")
            self.log(f"  {self.notes[-1]}")
            return False
        for result in live:
            self.measure(result)
        return True


def measure_settings(
    load_model: Loader,
    candidates: Sequence[Candidate],
    *,
    device: str,
    samples: list[Sample],
    rounds: int,
    max_new_tokens: int = NEW_TOKENS,
    budget_s: float = 420.0,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.perf_counter,
    compiled_warmup_s: float = 60.0,
    read_load: host.LoadReader = os.getloadavg,
) -> PerfReport:
    """Measure the snippet and every candidate in interleaved rounds, within a time budget.

    ``load_model(dtype, attn)`` returns a freshly loaded model; model-level settings (quantisation,
    channels_last, compile) are applied here with the backend's ``prepare`` (transformers':
    ``bench.backends.transformers.settings.apply_model_settings``). Models are loaded and warmed up lazily,
    in the candidates' order, when a setting is first needed; loading is timed apart and not counted in
    ``budget_s``. A setting whose warm-up would start after 3/4 of the budget
    is skipped (and says so), and so is a compiled one when less than ``compiled_warmup_s`` (the
    estimated compilation time) is left; further rounds run while the budget allows one more (never
    below one).
    Running out of device memory skips a setting, naming the memory; other failures are errors.
    ``read_load`` reads the host's load averages: at the start, after every round and at the end.
    """
    host_load: dict[str, Any] = {**host.host_load(read_load), "rounds": []}
    state = Rounds(load_model, device, max_new_tokens, budget_s, compiled_warmup_s, log, clock)
    baseline = SettingResult("", 1, "fp32", "model-card snippet")
    plain = state.model_for(Candidate(), baseline)
    baseline.name = f"{VARIANT} fp32 batch 1 num_beams={NUM_BEAMS} {plain.model.config._attn_implementation} " \
                    "(transformers default)"
    settings = [SettingResult(c.name, c.batch_size, c.dtype, "harness Pipeline", candidate=c, key=c.key)
                for c in candidates]
    state.runners[id(baseline)] = SnippetRunner(plain, device, max_new_tokens)
    state.batches = {id(r): cycle_batches(samples, r.batch_size) for r in [baseline, *settings]}
    for result, candidate in [(baseline, None), *zip(settings, candidates, strict=True)]:
        state.first_round(result, candidate)
    host_load["rounds"].append(host.load_average(read_load))
    done = 1
    while done < rounds and state.next_round([baseline, *settings], rounds, done):
        done += 1
        host_load["rounds"].append(host.load_average(read_load))
        log(f"  round {done}/{rounds} done at {state.spent():.0f} s")
    host_load["end"] = host.load_average(read_load)
    measured = [r for r in [baseline, *settings] if r.batch_s]
    mm = {dt: matmul_reference(device, dt) for dt in sorted({r.dtype for r in measured})}
    if any(r.candidate and r.candidate.quant != "none" for r in measured):
        state.notes.append("int8 rows are compared with the fp32 matrix product (their fraction may exceed 1)")
    return PerfReport(device, len(samples), done, max_new_tokens, baseline, settings, mm,
                      vision_flops(plain.model) / 1e9, state.notes, budget_s=budget_s, spent_s=state.spent(),
                      load_s=state.loading, host_load=host_load)
