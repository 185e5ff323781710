"""``nox -s perf``: how much faster the harness runs Florence-2 than the model card's snippet, here.

One process, one machine, one run: the model card's snippet (processor -> generate with
num_beams=3 -> batch_decode -> post_process_generation; batch 1, fp32) and a few candidate fast
settings run through the harness's own ``Pipeline``, so the best one is what users of the harness get.
Every setting does the same work: <CAPTION>, num_beams=3, exactly 20 new tokens per image.

Machines here are shared, so the settings are measured in interleaved rounds (one batch of each
setting per round) rather than one after the other: a burst of someone else's load hits every
setting alike. Warm-up batches (and torch.compile's compilation) are timed separately. Models are
built on the device in their dtype and only when a setting is reached (lazily, cheapest settings
first); building is timed apart from the time budget, which counts warming up and measuring.

Each setting also gets a roofline figure (vision GFLOP/s against a matrix product measured now, in
its dtype; no fraction where it would exceed 1, a reference that under-read the machine) and the
exact-match agreement of its texts with the fp32 snippet's.

The run judges itself before it judges the speedup (``bench.run.selfcheck``): the harness's fp32 batch 1
and the snippet do the same work, so their ratio is an A/A control; the speedup carries a bootstrap
interval over rounds; the host load is read at the start, after each round and at the end. The target
is "met" only when the interval's lower end clears it, at least 3 rounds ran, the A/A control lies
within 10% of 1 and the host was not busy; otherwise "not judged". Exit codes: 0 judged (met or not) or
no target for the device, 2 bad usage, ``EXIT_NOT_JUDGED`` (4) a target not judged.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.accuracy.data import Sample, synthetic_smoke
from bench.accuracy.tasks import get_task
from bench.backends.base import CheckpointRef, GenerationSettings, LoadedModel, LoadOptions
from bench.backends.registry import get_backend
from bench.backends.transformers.checkpoints import load, resolve
from bench.backends.transformers.settings import vision_flops
from bench.core import host
from bench.core.errors import UsageError
from bench.core.measure import clock_for, device_kind
from bench.core.paths import write_output
from bench.core.variants import get_variant
from bench.run import selfcheck
from bench.run.optimize import (
    TOKEN_PRESERVING,
    agreement,
    matmul_reference,
    roofline,
)
from bench.run.runner import cuda_oom_reason, free_memory, is_cuda_oom
from bench.scenarios.base import cycle_batches, run_batches

TASK = "<CAPTION>"
NEW_TOKENS = 20
NUM_BEAMS = 3
VARIANT = "base"
# issue 12's targets over the model-card snippet: the 2-core CPU, and one H100/H200 end to end at its best
TARGETS = {"cpu": 1.5, "cuda": 30.0}
EXIT_NOT_JUDGED = 4  # a target exists but the run could not judge it (bench.run.selfcheck); 0 when judged
PREFETCH_STREAM = 3  # batches per measurement of a prefetching setting (the first one's preparation is not hidden)


@dataclass(frozen=True)
class Candidate:
    """One harness setting: the sweep axes that matter for speed (names and values as in ``sweep.Cell``)."""

    dtype: str = "fp32"
    attn: str = "sdpa"
    batch_size: int = 1
    cache: str = "dynamic"
    compile: bool | str = False
    channels_last: bool = False
    quant: str = "none"
    compile_vision: bool | str = False
    preprocess: str = "host"
    prefetch: bool = False
    backend: str = "transformers"

    @property
    def model_key(self) -> tuple:
        """Candidates with the same key share one loaded model (where their backend's ``load_key`` agrees too)."""
        return (self.backend, self.dtype, self.attn, self.quant, self.channels_last, self.compile,
                self.compile_vision)

    @property
    def compiled(self) -> bool:
        return bool(self.compile or self.compile_vision)

    @property
    def warmup_batches(self) -> int:
        """CUDA graphs record on their second call and replay from the third; compilation is the first."""
        if "graphs" in (self.compile, self.compile_vision):
            return 3
        return 2 if self.compiled else 1

    @property
    def name(self) -> str:
        extras = [
            label
            for label, on in (
                (self.quant, self.quant != "none"),
                ("channels_last", self.channels_last),
                ("static cache", self.cache == "static"),
                ("compile", self.compile is True),
                ("decoder CUDA graphs", self.compile == "graphs"),
                ("vision compiled", self.compile_vision is True),
                ("vision CUDA graphs", self.compile_vision == "graphs"),
                ("device preprocess", self.preprocess == "device"),
                ("prefetch", self.prefetch),
                (self.backend, self.backend != "transformers"),
            )
            if on
        ]
        return " ".join(
            [VARIANT, self.dtype, self.attn, f"batch {self.batch_size}", f"num_beams={NUM_BEAMS}", *extras]
        )

    @property
    def key(self) -> str:
        """A short id for ``--candidates``: DTYPE-bN plus its flags, e.g. ``fp16-b64-dev-prefetch``."""
        on = [flag for flag, (axis, value) in FLAGS.items() if getattr(self, axis) == value
              and type(getattr(self, axis)) is type(value)]
        return "-".join([self.dtype, f"b{self.batch_size}", *on])

    @property
    def token_preserving(self) -> bool:
        """Expected to give the snippet's fp32 tokens: no precision-changing axis (``optimize.TOKEN_PRESERVING``)
        moved from its default."""
        return all(TOKEN_PRESERVING[f.name] or getattr(self, f.name) == f.default for f in fields(self))


# the flags of a candidate key: flag -> (axis, value)
FLAGS: dict[str, tuple[str, Any]] = {
    "eager": ("attn", "eager"),
    "static": ("cache", "static"),
    "compile": ("compile", True),
    "graphs": ("compile", "graphs"),
    "vision": ("compile_vision", True),
    "vgraphs": ("compile_vision", "graphs"),
    "cl": ("channels_last", True),
    "int8": ("quant", "int8-dynamic"),
    "int8w": ("quant", "int8-weights"),
    "ov": ("backend", "openvino"),
    "dev": ("preprocess", "device"),
    "prefetch": ("prefetch", True),
}
KEY_SYNTAX = f"DTYPE-bN[-FLAG...], DTYPE fp32/fp16/bf16, FLAG one of {', '.join(FLAGS)} (e.g. fp16-b64-dev-prefetch)"


def parse_candidate(key: str) -> Candidate:
    """The candidate a key names (the inverse of ``Candidate.key``); UsageError names a bad part."""
    parts = key.strip().split("-")
    if len(parts) < 2 or parts[0] not in ("fp32", "fp16", "bf16") or not re.fullmatch(r"b[1-9]\d*", parts[1]):
        raise UsageError(f"bad candidate {key!r}; accepted: {KEY_SYNTAX}")
    values: dict[str, Any] = {"dtype": parts[0], "batch_size": int(parts[1][1:])}
    for flag in parts[2:]:
        if flag not in FLAGS:
            raise UsageError(f"bad candidate {key!r}: unknown flag {flag!r}; accepted: {KEY_SYNTAX}")
        axis, value = FLAGS[flag]
        values[axis] = value
    return Candidate(**values)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return next(
        (set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set()
    )


def cpu_candidates() -> list[Candidate]:
    """Two cores: the vision tower is compute-bound, so precision and the runtime are what pay; bf16 only
    where native. OpenVINO settings first (their conversion is loading, outside the budget).

    Measured here (2-core EPYC, avx512_bf16, docs/performance.md): OpenVINO with its decoder converted
    is the fastest runtime at every precision; its batches gain a little up to 4 (one stream per core,
    a batch's images split across them), while transformers' int8 is fastest at batch 1; int8 weights
    with activations quantised per call (``int8``: int8-dynamic, on either backend) are each runtime's
    fastest.
    """
    bf16 = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
    ov = Candidate(backend="openvino")
    out = [Candidate(), ov]
    if bf16:
        out += [replace(ov, dtype="bf16", batch_size=2)] + [
            replace(ov, dtype="bf16", batch_size=n, quant="int8-dynamic") for n in (2, 4)]
    else:
        out += [replace(ov, quant="int8-dynamic")]
    out += [Candidate(quant="int8-dynamic")]
    if bf16:
        out += [Candidate(dtype="bf16"), Candidate(dtype="bf16", batch_size=2)]
    return out


def cuda_candidates() -> list[Candidate]:
    """One GPU, cheapest first (warm-ups are lazy and budgeted, so the eager settings are always measured):
    half precision up to batch 128 with pixels made on the GPU and the next batch prepared while one runs;
    the host-pixel batch 64 shows what that buys. fp32 batch 1, the snippet's setting through the harness,
    comes second: it is the A/A control that lets the run judge itself (``bench.run.selfcheck``), so the budget
    must never skip it. Then the settings that compile: CUDA graphs for batch 1 (launch-bound) and batches
    64/128."""
    fast = {"preprocess": "device", "prefetch": True}
    graphs = {"cache": "static", "compile": "graphs"}
    return [
        Candidate(dtype="fp16"),
        Candidate(),
        Candidate(dtype="fp16", batch_size=32, **fast),
        Candidate(dtype="fp16", batch_size=64, **fast),
        Candidate(dtype="fp16", batch_size=128, **fast),
        Candidate(dtype="bf16", batch_size=64, **fast),
        Candidate(dtype="fp16", batch_size=64),
        Candidate(dtype="fp16", batch_size=1, compile_vision="graphs", preprocess="device", **graphs),
        Candidate(dtype="fp16", batch_size=64, compile_vision=True, **graphs, **fast),
        Candidate(dtype="fp16", batch_size=128, compile_vision=True, **graphs, **fast),
    ]


CANDIDATES: dict[str, Callable[[], list[Candidate]]] = {"cpu": cpu_candidates, "cuda": cuda_candidates}


# ------------------------------------------------------------------------------------- measuring


@dataclass
class SettingResult:
    """What one setting measured: per-batch wall times and the texts it produced per image id."""

    name: str
    batch_size: int
    dtype: str
    kind: str  # "model-card snippet" | "harness Pipeline"
    batch_s: list[float] = field(default_factory=list)
    vision_ms: list[float] = field(default_factory=list)  # per image, per batch
    warmup_s: float = 0.0
    load_s: float | None = None  # building the model (shared models: counted once, by the first setting)
    texts: dict[int, str] = field(default_factory=dict)
    candidate: dict[str, Any] | None = None
    key: str | None = None
    error: str | None = None
    skipped: str | None = None  # "budget" | "oom" | "unsupported": why the setting was not measured

    @property
    def images_per_s(self) -> float | None:
        """Batch size / median batch time: one burst of someone else's load does not move it."""
        return self.batch_size / statistics.median(self.batch_s) if self.batch_s else None

    @property
    def images_per_s_mean(self) -> float | None:
        total = sum(self.batch_s)
        return len(self.batch_s) * self.batch_size / total if total > 0 else None

    @property
    def vision_ms_per_image(self) -> float | None:
        return statistics.median(self.vision_ms) if self.vision_ms else None

    @property
    def spread(self) -> dict[str, float] | None:
        """How far the rounds' batch times spread: min, median, max and (max - min) / median."""
        if not self.batch_s:
            return None
        low, mid, high = min(self.batch_s), statistics.median(self.batch_s), max(self.batch_s)
        return {"batches": len(self.batch_s), "min_s": low, "median_s": mid, "max_s": high,
                "range_rel": (high - low) / mid if mid > 0 else None}


class SnippetRunner:
    """The model card's snippet, verbatim apart from the forced token count of random weights."""

    def __init__(self, loaded: LoadedModel, device: str, max_new_tokens: int) -> None:
        self.loaded, self.device, self.max_new_tokens = loaded, device, max_new_tokens
        self.clock = clock_for(device)
        self.batch_size = 1

    def run(self, batches) -> tuple[float, list[float], dict[int, str]]:
        (sample,) = next(batches)
        clock, inner = self.clock, self.loaded.model.model
        marks: list[
            object
        ] = []  # vision tower start and projector end: timing only, the snippet is unchanged
        hooks = [
            inner.vision_tower.register_forward_pre_hook(lambda *_: marks.append(clock.mark())),
            inner.multi_modal_projector.register_forward_hook(lambda *_: marks.append(clock.mark())),
        ]
        try:
            start = clock.mark()
            text = self.snippet(sample)
            end = clock.mark()
            clock.sync()
        finally:
            for hook in hooks:
                hook.remove()
        vision = [clock.elapsed_ms(marks[0], marks[1])] if len(marks) == 2 else []
        return clock.elapsed_ms(start, end) / 1000.0, vision, {sample.image_id: text}

    def snippet(self, sample: Sample) -> str:
        """The model card's code for one image (its answer is computed and, as there, not used here)."""
        import torch

        processor, model = self.loaded.processor, self.loaded.model
        image = sample.load_image()
        inputs = processor(text=TASK, images=image, return_tensors="pt").to(self.device, torch.float32)
        with torch.inference_mode():
            generated_ids = model.generate(
                input_ids=inputs["input_ids"],
                pixel_values=inputs["pixel_values"],
                num_beams=NUM_BEAMS,
                max_new_tokens=self.max_new_tokens,
                min_new_tokens=self.max_new_tokens,
                do_sample=False,
            )
        generated_text = processor.batch_decode(generated_ids, skip_special_tokens=False)[0]
        processor.post_process_generation(generated_text, task=TASK, image_size=(image.width, image.height))
        return generated_text


class PipelineRunner:
    """A candidate through the harness's Pipeline: what a sweep cell with these settings runs.

    A prefetching candidate is measured over a stream of ``PREFETCH_STREAM`` batches (a fresh
    Prefetcher each time, so the first batch's preparation is not hidden): wall time / batches.
    """

    def __init__(self, loaded: LoadedModel, candidate: Candidate, device: str, max_new_tokens: int) -> None:
        generation = GenerationSettings(NUM_BEAMS, max_new_tokens, forced=True, cache=candidate.cache)
        self.pipeline = get_backend(candidate.backend).pipeline(
            loaded, get_task(TASK), generation, device=device, dtype=candidate.dtype, clock=clock_for(device),
            preprocess=candidate.preprocess, prefetch=candidate.prefetch,
        )
        self.batch_size = candidate.batch_size
        self.prefetch = candidate.prefetch

    def run(self, batches) -> tuple[float, list[float], dict[int, str]]:
        """Seconds per batch, vision ms per image of each batch, and the texts by image id."""
        n = PREFETCH_STREAM if self.prefetch else 1
        stream = (next(batches) for _ in range(n))  # exactly n: a prefetcher takes no batch beyond them
        # with prefetch, wall time: execute() synchronised the device
        results, total_s = run_batches(self.pipeline, stream, n, prefetch=self.prefetch, now=time.perf_counter)
        seconds = total_s / len(results)
        texts = {s.image_id: t for r in results for s, t in zip(r.samples, r.texts, strict=True)}
        return seconds, [r.stages_ms["vision"] for r in results], texts


@dataclass
class PerfReport:
    device: str
    n_images: int
    rounds: int
    max_new_tokens: int
    baseline: SettingResult
    settings: list[SettingResult]
    matmul_gflops: dict[str, float]
    vision_gflop_per_image: float
    notes: list[str] = field(default_factory=list)
    budget_s: float | None = None
    spent_s: float = 0.0  # warming up and measuring: what the budget counts
    load_s: float = 0.0  # building models, timed apart from the budget
    host_load: dict[str, Any] | None = None  # cores, 1/5/15-min load at the start, after each round, at the end

    @property
    def best(self) -> SettingResult | None:
        ok = [s for s in self.settings if s.error is None and s.images_per_s]
        return max(ok, key=lambda s: s.images_per_s) if ok else None

    def best_by_backend(self) -> dict[str, SettingResult]:
        """The fastest measured setting of each backend."""
        out: dict[str, SettingResult] = {}
        for s in self.settings:
            backend = (s.candidate or {}).get("backend", "transformers")
            if s.error is None and s.images_per_s and (backend not in out or
                                                       s.images_per_s > out[backend].images_per_s):
                out[backend] = s
        return out

    def backends_intervals(self) -> dict[str, selfcheck.RatioInterval]:
        """The best setting of each other backend over the best transformers one, with its interval over rounds."""
        best = self.best_by_backend()
        base = best.get("transformers")
        if base is None:
            return {}
        return {name: ratio for name, s in best.items() if name != "transformers"
                and (ratio := selfcheck.round_ratio(s.batch_s, s.batch_size, base.batch_s, base.batch_size))}

    def backends_line(self) -> str | None:
        """The best setting of each other backend against the best transformers one (None with one backend)."""
        best, ratios = self.best_by_backend(), self.backends_intervals()
        if not ratios:
            return None
        return "backends: " + "; ".join(
            f"best {name} {best[name].key} {ratio.text} the best transformers {best['transformers'].key}"
            for name, ratio in ratios.items())

    @property
    def speedup(self) -> float | None:
        best, base = self.best, self.baseline.images_per_s
        return best.images_per_s / base if best and base else None

    def speedup_interval(self) -> selfcheck.RatioInterval | None:
        best = self.best
        return selfcheck.round_ratio(best.batch_s, best.batch_size, self.baseline.batch_s, 1) if best else None

    def aa_control(self) -> selfcheck.RatioInterval | None:
        """The harness's fp32 batch 1 over the snippet: the same work, so ~1 on a machine that gives like work
        like speed (None when that setting was not measured)."""
        same = asdict(Candidate())
        control = next((s for s in self.settings if s.candidate == same and s.error is None and s.batch_s), None)
        return selfcheck.round_ratio(control.batch_s, 1, self.baseline.batch_s, 1) if control else None

    def aa_line(self) -> str:
        aa = self.aa_control()
        if aa is None:
            return "A/A control: not measured (add fp32-b1 to the candidates)"
        inside = abs(aa.value - 1.0) <= selfcheck.AA_TOLERANCE
        return (f"A/A control (harness fp32 batch 1 / model-card snippet, the same work): {aa.text}, "
                f"{'within' if inside else 'OUTSIDE'} 1 ± {selfcheck.AA_TOLERANCE:.2f}")

    def host_line(self) -> str:
        load = self.host_load or {}
        rounds = ", ".join(f"{r[0]:.2f}" for r in load.get("rounds") or [] if r)
        start = host.describe_load(load) or "not readable"
        return f"host load: {start}" + (f"; after each round {rounds}" if rounds else "")

    def judgement(self) -> selfcheck.Judgement | None:
        """The verdict on this device's target (None when there is none): ``bench.run.selfcheck.judge`` of the
        speedup's interval, given the rounds, the A/A control and the host load."""
        target = TARGETS.get(device_kind(self.device))
        if target is None:
            return None
        if self.speedup is None:
            return selfcheck.Judgement(selfcheck.NOT_MEASURED, (str(self.why_no_speedup()),))
        ci = self.speedup_interval()
        return selfcheck.judge(self.speedup, ci.low if ci else None, ci.high if ci else None, target, True,
                               self.self_check())

    def self_check(self) -> list[str]:
        """Why this run cannot judge a target (``bench.run.selfcheck.preconditions``; empty when it can)."""
        return selfcheck.preconditions(rounds=self.rounds, aa=self.aa_control(), host_load=self.host_load)

    def exit_code(self) -> int:
        """0 when the target was judged (met or not) or there is none; ``EXIT_NOT_JUDGED`` otherwise."""
        verdict = self.judgement()
        return EXIT_NOT_JUDGED if verdict and verdict.verdict in (selfcheck.NOT_JUDGED, selfcheck.NOT_MEASURED) else 0

    def roofline_of(self, s: SettingResult) -> dict[str, float | None]:
        reference = self.matmul_gflops.get(s.dtype if s.dtype in self.matmul_gflops else "fp32")
        return roofline(s.vision_ms_per_image, self.vision_gflop_per_image * 1e9, reference)

    def agreement_of(self, s: SettingResult) -> float | None:
        return agreement(self.baseline.texts, s.texts) if self.baseline.texts and s.texts else None

    def why_no_speedup(self) -> str | None:
        """Why no speedup can be computed (None when it can): what happened to every setting."""
        if self.speedup is not None:
            return None
        if not self.baseline.images_per_s:
            return f"the model-card snippet was not measured ({self.baseline.error or 'no batch finished'})"
        if not self.settings:
            return "no harness setting was given"
        counts: dict[str, int] = {}
        for s in self.settings:
            what = {"budget": "skipped by the time budget", "oom": "out of device memory",
                    "unsupported": "not supported here"}.get(
                s.skipped or "", "failed" if s.error else "not measured")
            counts[what] = counts.get(what, 0) + 1
        first = next((s.error for s in self.settings if s.error and not s.skipped), None)
        detail = ", ".join(f"{n} {what}" for what, n in counts.items())
        return f"no harness setting was measured: {detail}" + (f" (first failure: {first})" if first else "")

    def speedup_line(self) -> str:
        best, speedup = self.best, self.speedup
        snippet = (
            f"model-card snippet: {self.baseline.name}, {_fmt(self.baseline.images_per_s, '.3f')} images/s"
        )
        if best is None or speedup is None:
            return f"speedup: n/a: {self.why_no_speedup()}; {snippet}"
        ci = self.speedup_interval()
        return (
            f"speedup: {speedup:.2f}x ({ci.interval_text + '; ' if ci else ''}best: {best.name} via the harness Pipeline, "
            f"{best.images_per_s:.3f} images/s vs {snippet})"
        )

    def target_line(self) -> str:
        kind = device_kind(self.device)
        target = TARGETS.get(kind)
        verdict = self.judgement()
        if target is None or verdict is None:
            return f"target: none for {kind} (issue 12 sets targets for {' and '.join(TARGETS)} only)"
        if verdict.verdict == selfcheck.NOT_MEASURED:
            return f"target: >= {target:.1f}x on {kind}: not measured ({self.why_no_speedup()})"
        line = f"target: >= {target:.1f}x on {kind}: {verdict.text}"
        if verdict.verdict == selfcheck.NOT_JUDGED:
            aa = self.aa_control()
            line += f" ({self.host_line()}; A/A control {aa.text if aa else 'not measured'})"
        return line

    def table(self) -> str:
        head = (
            f"{'setting':72s} {'kind':9s} {'img/s':>8s} {'ms/img':>8s} {'vis ms':>7s} {'vis GF/s':>8s} "
            f"{'mm GF/s':>8s} {'roof':>5s} {'agree':>5s} {'warmup':>7s} {'load':>6s}"
        )
        rows = [head, "-" * len(head)]
        for s in [self.baseline, *self.settings]:
            if s.error:
                rows.append(f"{s.name:72s} {'ERROR' if not s.skipped else 'SKIPPED'} {s.error}")
                continue
            r = self.roofline_of(s)
            ips = s.images_per_s
            kind = "snippet" if s is self.baseline else "harness"
            load = f"{s.load_s:5.1f}s" if s.load_s is not None else "shared"
            rows.append(
                f"{s.name:72s} {kind:9s} {_fmt(ips, '.3f'):>8s} {_fmt(1000 / ips if ips else None, '.1f'):>8s} "
                f"{_fmt(s.vision_ms_per_image, '.1f'):>7s} {_fmt(r['vision_gflops_per_s'], '.0f'):>8s} "
                f"{_fmt(r['matmul_gflops_per_s'], '.0f'):>8s} {_fmt(r['fraction'], '.2f'):>5s} "
                f"{_fmt(self.agreement_of(s), '.2f'):>5s} {s.warmup_s:6.1f}s {load:>6s}"
            )
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        def one(s: SettingResult) -> dict[str, Any]:
            expected = Candidate(**s.candidate).token_preserving if s.candidate else True
            return {
                **asdict(s),
                "expected_same_tokens": expected,
                "images_per_s": s.images_per_s,
                "images_per_s_mean": s.images_per_s_mean,
                "vision_ms_per_image": s.vision_ms_per_image,
                "roofline": self.roofline_of(s),
                "agreement_with_fp32_snippet": self.agreement_of(s),
                "spread": s.spread,
            }

        def interval(ratio: selfcheck.RatioInterval | None) -> dict[str, Any] | None:
            return ratio.to_dict() if ratio else None

        best, verdict = self.best, self.judgement()
        return {
            "device": self.device,
            "task": TASK,
            "num_beams": NUM_BEAMS,
            "max_new_tokens": self.max_new_tokens,
            "n_images": self.n_images,
            "rounds": self.rounds,
            "budget_s": self.budget_s,
            "spent_s": self.spent_s,
            "load_s": self.load_s,
            "matmul_gflops": self.matmul_gflops,
            "vision_gflop_per_image": self.vision_gflop_per_image,
            "flop_convention": "multiply-add = 2 FLOPs",
            "baseline": one(self.baseline),
            "settings": [one(s) for s in self.settings],
            "measured": sum(1 for s in self.settings if s.images_per_s),
            "best": best.name if best else None,
            "best_key": best.key if best else None,
            "speedup": self.speedup,
            "speedup_interval": interval(self.speedup_interval()),
            "aa_control": interval(self.aa_control()),
            "aa_tolerance": selfcheck.AA_TOLERANCE,
            "min_rounds": selfcheck.MIN_ROUNDS,
            "host_load": self.host_load,
            "self_check": self.self_check(),
            "judgement": {"verdict": verdict.verdict, "reasons": list(verdict.reasons)} if verdict else None,
            "why_no_speedup": self.why_no_speedup(),
            "speedup_line": self.speedup_line(),
            "target": TARGETS.get(device_kind(self.device)),
            "target_line": self.target_line(),
            "best_by_backend": {name: {"key": s.key, "images_per_s": s.images_per_s}
                                for name, s in self.best_by_backend().items()},
            "backends_intervals": {name: r.to_dict() for name, r in self.backends_intervals().items()},
            "backends_line": self.backends_line(),
            "notes": self.notes,
        }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def measure_settings(
    load_model: Callable[[str, str], LoadedModel],
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
    started = clock()
    loading = 0.0
    notes: list[str] = []
    models: dict[tuple, LoadedModel] = {}

    def spent() -> float:
        return clock() - started - loading

    def model_for(candidate: Candidate, result: SettingResult) -> LoadedModel:
        nonlocal loading
        backend = get_backend(candidate.backend)
        cell = SimpleNamespace(**asdict(candidate), device=device)
        key = (candidate.model_key, backend.load_key(cell))
        if key not in models:
            t0 = clock()
            loaded = load_model(backend.load_dtype(candidate), candidate.attn)
            backend.prepare(loaded, cell)
            models[key] = loaded
            result.load_s = clock() - t0
            loading += result.load_s
        return models[key]

    baseline = SettingResult("", 1, "fp32", "model-card snippet")
    plain = model_for(Candidate(), baseline)
    attn_used = plain.model.config._attn_implementation
    baseline.name = f"{VARIANT} fp32 batch 1 num_beams={NUM_BEAMS} {attn_used} (transformers default)"
    settings = [SettingResult(c.name, c.batch_size, c.dtype, "harness Pipeline", candidate=asdict(c), key=c.key)
                for c in candidates]
    runners: dict[int, Any] = {id(baseline): SnippetRunner(plain, device, max_new_tokens)}
    batches = {id(r): cycle_batches(samples, r.batch_size) for r in [baseline, *settings]}
    order = [(baseline, None), *zip(settings, candidates, strict=True)]

    def fail(result: SettingResult, exc: BaseException, when: str) -> None:
        if is_cuda_oom(exc):
            result.error, result.skipped = f"skipped: {cuda_oom_reason(device, result.batch_size, exc)}", "oom"
        else:
            result.error = _one_line(exc)
        log(f"  {result.name}: {when} failed: {result.error}")
        runners.pop(id(result), None)
        free_memory()

    def one_batch(result: SettingResult) -> tuple[float, list[float]]:
        seconds, vision, texts = runners[id(result)].run(batches[id(result)])
        for image_id, text in texts.items():
            result.texts.setdefault(image_id, text)
        return seconds, vision

    def measure(result: SettingResult) -> float:
        t0 = clock()
        try:
            seconds, vision = one_batch(result)
        except (Exception, MemoryError) as exc:
            fail(result, exc, "measuring")
            return 0.0
        result.batch_s.append(seconds)
        result.vision_ms += vision
        return clock() - t0

    last_round: dict[int, float] = {}
    for result, candidate in order:  # round 1: each setting is warmed up (lazily) and measured once
        if candidate is not None:
            reason = get_backend(candidate.backend).unsupported_reason(SimpleNamespace(**asdict(candidate),
                                                                                       device=device))
            if reason:
                result.error, result.skipped = f"skipped: {reason}", "unsupported"
                log(f"  {result.name}: {result.error}")
                continue
            late = spent() > 0.75 * budget_s
            if late or (candidate.compiled and spent() + compiled_warmup_s > budget_s):
                result.error = f"skipped: {spent():.0f} s of the {budget_s:.0f} s budget spent before its warm-up"
                if not late:
                    result.error += f" (compiling is estimated at {compiled_warmup_s:.0f} s)"
                result.skipped = "budget"
                notes.append(f"{result.name}: {result.error}")
                log(f"  {notes[-1]}")
                continue
            try:
                runners[id(result)] = PipelineRunner(model_for(candidate, result), candidate, device, max_new_tokens)
            except (Exception, MemoryError) as exc:
                fail(result, exc, "loading")
                continue
        t0 = clock()
        try:
            for _ in range(candidate.warmup_batches if candidate else 1):
                one_batch(result)
        except (Exception, MemoryError) as exc:
            fail(result, exc, "warm-up")
            if result is baseline:
                raise RuntimeError(f"the model-card snippet failed: {result.error}") from exc
            continue
        result.warmup_s = clock() - t0
        log(f"  warm-up {result.warmup_s:6.1f}s  {result.name}")
        last_round[id(result)] = measure(result)
    host_load["rounds"].append(host.load_average(read_load))
    done = 1
    while done < rounds:
        live = [r for r, _ in order if id(r) in runners and not r.error]
        round_s = sum(last_round.get(id(r), 0.0) for r in live)
        if spent() + round_s > budget_s:
            notes.append(
                f"rounds cut from {rounds} to {done} to stay within the {budget_s:.0f} s budget "
                f"(one round ~{round_s:.0f} s here, {spent():.0f} s spent)"
            )
            log(f"  {notes[-1]}")
            break
        for result in live:
            last_round[id(result)] = measure(result)
        done += 1
        host_load["rounds"].append(host.load_average(read_load))
        log(f"  round {done}/{rounds} done at {spent():.0f} s")
    host_load["end"] = host.load_average(read_load)

    live_results = [r for r, _ in order if r.batch_s]
    dtypes = sorted({r.dtype for r in live_results})
    mm = {dt: matmul_reference(device, dt) for dt in dtypes}
    if any(r.candidate and r.candidate["quant"] != "none" for r in live_results):
        notes.append("int8 rows are compared with the fp32 matrix product (their fraction may exceed 1)")
    flops = vision_flops(plain.model) / 1e9
    return PerfReport(device, len(samples), done, max_new_tokens, baseline, settings, mm, flops, notes,
                      budget_s=budget_s, spent_s=spent(), load_s=loading, host_load=host_load)


# ------------------------------------------------------------------------------------------ main


def random_model_loader(device: str, model_path: str | None = None) -> Callable[[str, str], LoadedModel]:
    """Random base weights through ``checkpoints.load``, built on the device in their dtype (no host
    init and copy); the exact architecture, the offline processor. ``model_path``: that checkpoint
    instead (a fine-tune, or a tiny checkpoint for a dry run)."""
    variant = get_variant(VARIANT)
    ref = CheckpointRef("random", f"random:{VARIANT}", None)
    if model_path:
        ref = resolve(variant, LoadOptions(model_path=model_path))

    def load_model(dtype: str, attn: str) -> LoadedModel:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load(variant, ref, device=device, dtype=dtype, attn=attn)

    return load_model


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tools.perf", description=__doc__.split("\n\n")[0],
        epilog="Default candidates: cpu: " + ", ".join(c.key for c in cpu_candidates())
        + "; cuda: " + ", ".join(c.key for c in cuda_candidates())
        + f". Exit codes: 0 the target was judged (met or not) or the device has none; 2 bad usage; "
        f"{EXIT_NOT_JUDGED} the target was not judged (too few rounds, the A/A control fp32-b1 missing or off "
        "by more than 10%, a busy host, or no speedup).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument(
        "--images", type=int, default=None, help="synthetic-smoke images (default: 4 cpu, 16 cuda)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (default 5)")
    parser.add_argument(
        "--budget-s", type=float, default=420.0,
        help="seconds for warming up and measuring, model loading not counted (default 420)"
    )
    parser.add_argument("--compiled-warmup-s", type=float, default=60.0,
                        help="estimated warm-up of a setting that compiles; it starts only if that much of the "
                        "budget is left (default 60)")
    parser.add_argument("--candidates", help=f"comma-separated settings to measure instead of the device's "
                        f"default list: {KEY_SYNTAX}")
    parser.add_argument("--model-path", help="measure this checkpoint instead of random base weights (e.g. a "
                        "tiny checkpoint for a dry run)")
    parser.add_argument("--out", default="runs/perf", help="folder for perf.json (default: runs/perf)")
    args = parser.parse_args(argv)
    kind = device_kind(args.device)
    if kind not in CANDIDATES:
        raise UsageError(f"perf runs on {args.device!r}: unsupported; accepted: cpu, cuda, cuda:N")
    args.images = (4 if kind == "cpu" else 16) if args.images is None else args.images
    args.rounds = 5 if args.rounds is None else args.rounds
    if args.images < 1 or args.rounds < 1 or args.budget_s <= 0:
        raise UsageError("bad --images/--rounds/--budget-s; accepted: positive numbers")
    if args.candidates is not None:
        keys = [k for k in args.candidates.split(",") if k.strip()]
        if not keys:
            raise UsageError(f"empty --candidates; accepted: {KEY_SYNTAX}")
        args.candidates = [parse_candidate(k) for k in keys]
    else:
        args.candidates = CANDIDATES[kind]()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    try:
        args = parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kind = device_kind(args.device)
    if kind == "cuda" and not torch.cuda.is_available():
        print("error: CUDA is not available here; accepted: --device cpu", file=sys.stderr)
        return 2
    candidates = args.candidates
    samples = synthetic_smoke(args.images)
    print(
        f"perf: {args.model_path or VARIANT + ' (random weights)'}, {TASK}, num_beams={NUM_BEAMS}, {NEW_TOKENS} new tokens, "
        f"{len(samples)} images, up to {args.rounds} rounds, {args.device}, torch threads {torch.get_num_threads()}, "
        f"budget {args.budget_s:.0f} s (loading not counted)"
    )
    print(f"candidates: {', '.join(c.key for c in candidates)}", flush=True)
    wall = time.perf_counter()
    report = measure_settings(
        random_model_loader(args.device, args.model_path),
        candidates,
        device=args.device,
        samples=samples,
        rounds=args.rounds,
        budget_s=args.budget_s,
        compiled_warmup_s=args.compiled_warmup_s,
    )
    from bench.run.environment import fingerprint

    out = Path(args.out)
    data = {**report.to_dict(), "wall_s": time.perf_counter() - wall, "env": fingerprint()}
    write_output(out / "perf.json", json.dumps(data, indent=2, default=str))
    print(report.table())
    print(
        f"vision: {report.vision_gflop_per_image:.1f} GFLOP per image (multiply-add = 2 FLOPs); roof = vision "
        "GFLOP/s / matrix-product GFLOP/s in the same dtype, measured in this run"
    )
    print(f"time: {report.spent_s:.0f} s warming up and measuring (budget {args.budget_s:.0f} s), "
          f"{report.load_s:.1f} s building models, {data['wall_s']:.0f} s in all; "
          f"{data['measured']} of {len(candidates)} settings measured")
    for note in report.notes:
        print(f"note: {note}")
    print(report.host_line())
    print(report.aa_line())
    print(report.speedup_line())
    if line := report.backends_line():
        print(line)
    print(report.target_line())
    print(f"wrote {out / 'perf.json'}")
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())
