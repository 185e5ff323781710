"""bench.tools.perf's report: the verdict on the device's target after the run's own self-check
(``bench.run.selfcheck``: rounds, the A/A control, host load), its lines, the table and ``perf.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.core import host
from bench.core.measure import device_kind
from bench.results import Roofline
from bench.run import selfcheck
from bench.run.optimize import agreement, roofline
from bench.tools.perf_runners import SettingResult
from bench.tools.perf_settings import NUM_BEAMS, TASK, Candidate

# issue 12's targets over the model-card snippet: the 2-core CPU, and one H100/H200 end to end at its best
TARGETS = {"cpu": 1.5, "cuda": 30.0}
PERF_FILE = "perf.json"  # what to_dict writes, in the --out folder; bench.tools.targets reads it
EXIT_NOT_JUDGED = 4  # a target exists but the run could not judge it (bench.run.selfcheck); 0 when judged


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
            backend = s.candidate.backend if s.candidate else "transformers"
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
    def measured(self) -> int:
        """How many harness settings were measured."""
        return sum(1 for s in self.settings if s.images_per_s)

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
        control = next((s for s in self.settings if s.candidate == Candidate() and s.error is None and s.batch_s),
                       None)
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
        return (f"host load: {start}" + (f"; after each round {rounds}" if rounds else "")
                + "; readings after the start count this run's own threads")

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

    def roofline_of(self, s: SettingResult) -> Roofline:
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
                f"{_fmt(s.vision_ms_per_image, '.1f'):>7s} {_fmt(r.vision_gflops_per_s, '.0f'):>8s} "
                f"{_fmt(r.matmul_gflops_per_s, '.0f'):>8s} {_fmt(r.fraction, '.2f'):>5s} "
                f"{_fmt(self.agreement_of(s), '.2f'):>5s} {s.warmup_s:6.1f}s {load:>6s}"
            )
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        def one(s: SettingResult) -> dict[str, Any]:
            expected = s.candidate.token_preserving if s.candidate else True
            return {
                **asdict(s),
                "expected_same_tokens": expected,
                "images_per_s": s.images_per_s,
                "images_per_s_mean": s.images_per_s_mean,
                "vision_ms_per_image": s.vision_ms_per_image,
                "roofline": self.roofline_of(s).to_dict(),
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
            "measured": self.measured,
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

