"""Issue 12's GPU targets: the cells that measure them, and each target said measured, met or not.

The work is fixed: Florence-2-base (or -large) with random weights, ``<CAPTION>``, num_beams 3, 20
new tokens, one CUDA device. A target is a declarative entry (``TARGETS``): what it reads from the
run directory's records or from ``perf.json``, its threshold and direction. Records from any other
device, or other work, never count: without a GPU every target reads "not measured" and none is met.

``TARGET_CELLS`` are the sweep cells that measure the targets, in the order ``bench.tools.gpucheck
--targets`` runs them under its time budget (cheap eager cells first, compiled ones after).

``python -m bench.tools.targets RUN_DIR`` prints the table and writes ``RUN_DIR/targets.json``; it reads
``RUN_DIR/perf.json`` when ``python -m bench.tools.perf --out RUN_DIR`` wrote one there.

A target is judged as perf judges itself (``bench.run.selfcheck``): "met" only when the figure's interval
clears the threshold (the lower end of a throughput's, the upper end of a latency's) and the run could
judge: the speedup carries perf's own self-check (rounds, A/A control, host load), the records' targets
the host load in the run's ``env.json``. Otherwise "not judged" and why.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.core.numbers import finite_number, is_finite
from bench.core.paths import write_output
from bench.report.uncertainty import judge as record_interval
from bench.report.uncertainty import percentile_figure
from bench.results import Record, dig, figure, samples, store
from bench.run import selfcheck
from bench.scenarios import traits_of
from bench.tools.perf_report import PERF_FILE

TASK, NUM_BEAMS, NEW_TOKENS = "<CAPTION>", 3, 20
TARGETS_FILE = "targets.json"


@dataclass(frozen=True)
class Measured:
    """A target's figure, its interval (None: none could be had), where it came from (or why there is none),
    and why the run that measured it cannot judge it (empty when it can)."""

    value: float | None
    source: str
    low: float | None = None
    high: float | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class PerfSummary:
    """What the targets read of ``perf.json`` (``bench.tools.perf``): the speedup, its interval and perf's own
    self-check (None: a perf.json written before perf judged itself)."""

    device: str | None
    speedup: float | None
    low: float | None = None
    high: float | None = None
    self_check: tuple[str, ...] | None = None
    best: str | None = None
    measured: int | None = None
    why_no_speedup: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> PerfSummary:
        """The summary of parsed ``perf.json`` (untrusted JSON: a missing or misplaced key is None)."""
        checked = dig(data, "self_check")
        return cls(dig(data, "device"), finite_number(dig(data, "speedup")),
                   finite_number(dig(data, "speedup_interval", "low")),
                   finite_number(dig(data, "speedup_interval", "high")), tuple(checked) if isinstance(checked, list) else None,
                   dig(data, "best"), dig(data, "measured"), dig(data, "why_no_speedup"))


Measure = Callable[[list[Record], PerfSummary | None], Measured]


@dataclass(frozen=True)
class Outcome:
    """One target as judged: its goal, the measured value and interval, the verdict, why (when not plainly met)
    and where the value came from; ``to_dict`` is its entry in ``targets.json``."""

    key: str
    description: str
    goal: str
    threshold: float
    unit: str
    higher_is_better: bool
    value: float | None
    low: float | None
    high: float | None
    verdict: str
    why: tuple[str, ...]
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "why": list(self.why)}


@dataclass(frozen=True)
class Target:
    key: str
    description: str
    threshold: float
    unit: str
    higher_is_better: bool
    measure: Measure
    # the vision roofline has no interval of its own: its guard is the matrix product measured just before
    # and after its cell (a fraction above 1, a reference that under-read the machine, is never a result)
    point_value: bool = False

    def judgement(self, measured: Measured, host_load: dict[str, Any] | None = None) -> selfcheck.Judgement:
        low, high = (measured.value, measured.value) if self.point_value else (measured.low, measured.high)
        reasons = [*measured.reasons, *selfcheck.busy_reasons(host_load)]
        return selfcheck.judge(measured.value, low, high, self.threshold, self.higher_is_better, reasons)

    @property
    def goal(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {self.threshold:g} {self.unit}"


def _describe(r: Record) -> str:
    s = r.settings
    parts = [r.variant, r.dtype, f"bs{r.batch_size}", r.scenario or "", f"cache={s.cache or 'dynamic'}"]
    parts += [f"compile={r.compile}"] if r.compile else []
    parts += [f"compile_vision={s.compile_vision}"] if s.compile_vision else []
    parts += [f"preprocess={s.preprocess}"] if s.preprocess not in (None, "host") else []
    parts += ["prefetch"] if s.prefetch else []
    return " ".join(p for p in parts if p) + f" (cell {r.cell_id})"


def _the_work(records: list[Record], variant: str) -> list[Record]:
    """ok CUDA records of the targets' work for one variant."""
    return [r for r in records if r.status == "ok" and str(r.device or "").startswith("cuda")
            and r.variant == variant and r.task == TASK and r.num_beams == NUM_BEAMS
            and r.max_new_tokens == NEW_TOKENS]


def _none(records: list[Record], variant: str, what: str) -> Measured:
    ok = [r for r in records if r.status == "ok" and r.variant == variant]
    devices = ", ".join(sorted({str(r.device) for r in ok}))
    where = f"{variant}: {len(ok)} ok record(s) on {devices}" if ok else f"no ok record of {variant}"
    return Measured(None, f"no CUDA record of {variant} {TASK}, num_beams {NUM_BEAMS}, {NEW_TOKENS} tokens "
                          f"{what} ({where})")


def _best_offline(variant: str) -> Measure:
    def measure(records: list[Record], perf: PerfSummary | None) -> Measured:
        rows = [r for r in _the_work(records, variant)
                if traits_of(r).reads == "throughput"
                and figure(r, "throughput.images_per_s") is not None]
        if not rows:
            return _none(records, variant, "in the offline scenario")
        best = max(rows, key=lambda r: figure(r, "throughput.images_per_s"))
        ci = record_interval(best)
        return Measured(figure(best, "throughput.images_per_s"), f"best of {len(rows)}: {_describe(best)}",
                        ci.low if ci else None, ci.high if ci else None)

    return measure


def _single_stream(records: list[Record], perf: PerfSummary | None) -> Measured:
    rows = [r for r in _the_work(records, "base")
            if traits_of(r).reads == "latency" and figure(r, "latency_ms.p50")]
    if not rows:
        return _none(records, "base", "in the single-stream scenario")
    best = min(rows, key=lambda r: figure(r, "latency_ms.p50"))
    finite = sorted(float(v) for v in samples(best) if is_finite(v))
    low, high = (percentile_figure(finite, 0.5)[1] if finite else None) or (None, None)
    return Measured(figure(best, "latency_ms.p50"), f"best of {len(rows)}: {_describe(best)}", low, high)


def _speedup(records: list[Record], perf: PerfSummary | None) -> Measured:
    if perf is None:
        return Measured(None, f"no {PERF_FILE} (run python -m bench.tools.perf --device cuda --out RUN_DIR)")
    if not str(perf.device or "").startswith("cuda"):
        return Measured(None, f"{PERF_FILE} was measured on {perf.device!r}, not a CUDA device")
    if perf.speedup is None:
        return Measured(None, f"{PERF_FILE}: {perf.why_no_speedup or 'no speedup computed'}")
    reasons = perf.self_check if perf.self_check is not None else (
        f"{PERF_FILE} has no self-check (written by a perf before it judged itself)",)
    return Measured(perf.speedup, f"{PERF_FILE}: {perf.best} vs the model-card snippet "
                                  f"({perf.measured} settings measured)", perf.low, perf.high, reasons)


def _vision_fraction(records: list[Record], perf: PerfSummary | None) -> Measured:
    rows = [r for r in _the_work(records, "base") if figure(r, "extra.roofline.fraction")]
    if not rows:
        return _none(records, "base", "with a vision time and a matrix-product rate")
    best = max(rows, key=lambda r: figure(r, "extra.roofline.fraction"))
    roof = best.extra.roofline
    return Measured(roof.fraction, f"{roof.vision_gflops_per_s:.0f} of {roof.matmul_gflops_per_s:.0f} "
                                   f"GFLOP/s ({roof.matmul_dtype} {roof.matmul_n or ''}² matrix "
                                   f"product, same run): {_describe(best)}")


TARGETS: dict[str, Target] = {t.key: t for t in (
    Target("base_offline", "base offline throughput, best setting", 300.0, "images/s", True, _best_offline("base")),
    Target("base_single_stream_p50", "base single-stream p50 latency, best setting", 40.0, "ms", False,
           _single_stream),
    Target("large_offline", "large offline throughput, best setting", 120.0, "images/s", True,
           _best_offline("large")),
    Target("perf_speedup", "bench.tools.perf speedup over the model-card snippet", 30.0, "x", True, _speedup),
    Target("vision_roofline", "vision tower, fraction of the matrix-product rate in its dtype", 0.35, "", True,
           _vision_fraction, point_value=True),
)}

# The cells that measure the targets, in the order they run (each a set of sweep-axis overrides on
# <CAPTION>, num_beams 3, random weights, one CUDA device). Eager first: they are cheap and always fit.
_FAST = {"preprocess": ["device"], "prefetch": [True]}
_GRAPHS = {"cache": ["static"], "compile": ["graphs"]}
EAGER_CELLS: list[dict[str, Any]] = [
    {"variants": ["base"], "dtypes": ["fp32"], "batch_sizes": [1]},  # the eager fp32 reference of agreement
    {"variants": ["base"], "dtypes": ["fp16"], "batch_sizes": [1]},
    {"variants": ["base"], "dtypes": ["fp16"], "batch_sizes": [64, 128], **_FAST},
    {"variants": ["large"], "dtypes": ["fp16"], "batch_sizes": [64, 128], **_FAST},
]
COMPILED_CELLS: list[dict[str, Any]] = [
    {"variants": ["base"], "dtypes": ["fp16"], "batch_sizes": [1], "compile_vision": ["graphs"],
     "preprocess": ["device"], **_GRAPHS},
    {"variants": ["base"], "dtypes": ["fp16"], "batch_sizes": [128], "compile_vision": [True], **_GRAPHS, **_FAST},
]
LATE_CELLS: list[dict[str, Any]] = [  # after the plausibility cells, if the budget allows
    {"variants": ["base"], "dtypes": ["fp32"], "batch_sizes": [1], **_GRAPHS},  # do CUDA graphs keep fp32 tokens?
    {"variants": ["large"], "dtypes": ["fp16"], "batch_sizes": [128], "compile_vision": [True], **_GRAPHS, **_FAST},
]


def evaluate(records: list[Record], perf: PerfSummary | None,
             host_load: dict[str, Any] | None = None) -> list[Outcome]:
    """Every target as judged. ``host_load``: the run's (``env.json``), for the records' targets (the speedup
    carries perf's own)."""
    out = []
    for target in TARGETS.values():
        measured = target.measure(records, perf)
        judged = target.judgement(measured, None if target.key == "perf_speedup" else host_load)
        out.append(Outcome(target.key, target.description, target.goal, target.threshold, target.unit,
                           target.higher_is_better, measured.value, measured.low, measured.high, judged.verdict,
                           tuple(judged.reasons), measured.source))
    return out


def table(results: list[Outcome]) -> str:
    lines = [f"{'target':62s} {'goal':>14s} {'measured':>10s}  verdict", "-" * 100]
    for r in results:
        value = "-" if r.value is None else f"{r.value:.3g}"
        why = f": {'; '.join(r.why)}" if r.why else ""
        lines.append(f"{r.description:62s} {r.goal:>14s} {value:>10s}  {r.verdict}{why}")
        if r.low is not None and r.high is not None:
            lines.append(f"    95% interval {r.low:.3g}-{r.high:.3g}")
        lines.append(f"    {r.source}")
    return "\n".join(lines)


def evaluate_run(run_dir: Path, perf_path: Path | None = None, *, records: list[Record] | None = None) -> list[Outcome]:
    """Evaluate a run directory (latest record per cell) and write ``targets.json`` into it.

    ``records``: the run's latest record per cell where the caller has already read them.
    """
    if records is None:
        records = list(store.latest_by_cell(store.records(run_dir)).values())
    perf_path = perf_path or run_dir / PERF_FILE
    perf = PerfSummary.from_dict(json.loads(perf_path.read_text())) if perf_path.exists() else None
    results = evaluate(records, perf, store.read_env(run_dir).get("host_load"))
    write_output(run_dir / TARGETS_FILE, json.dumps(
        {"work": {"task": TASK, "num_beams": NUM_BEAMS, "max_new_tokens": NEW_TOKENS, "weights": "random"},
         "targets": [r.to_dict() for r in results]}, indent=2))
    return results


def cell_overrides(variant_map: dict[str, str] | None = None) -> list[list[dict[str, Any]]]:
    """EAGER_CELLS, COMPILED_CELLS, LATE_CELLS with variants renamed (a dry run maps them to 'custom')."""
    def rename(entry: dict[str, Any]) -> dict[str, Any]:
        if not variant_map:
            return dict(entry)
        return {**entry, "variants": sorted({variant_map.get(v, v) for v in entry["variants"]})}

    return [[rename(e) for e in group] for group in (EAGER_CELLS, COMPILED_CELLS, LATE_CELLS)]


def expand_overrides(config: Any, entries: Sequence[dict[str, Any]]) -> list[Any]:
    """The cells of each override entry applied to ``config`` (a ``sweep.SweepConfig``), in order."""
    from bench.run.sweep import expand

    cells = []
    for entry in entries:
        cells += expand(dataclasses.replace(config, tasks=[TASK], num_beams=[NUM_BEAMS], **entry))
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tools.targets", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run directory written by bench.tools.gpucheck --targets (or any run)")
    p.add_argument("--perf", help=f"perf.json to read (default: RUN_DIR/{PERF_FILE})")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / store.RESULTS).exists():
        print(f"error: not a run directory: {run_dir} (no {store.RESULTS}); accepted: a directory written by "
              "bench.tools.gpucheck or florence2-bench run", file=sys.stderr)
        return 2
    results = evaluate_run(run_dir, Path(args.perf) if args.perf else None)
    print(table(results))
    counts = Counter(r.verdict for r in results)
    print(f"targets: {counts[selfcheck.MET]} met, {counts[selfcheck.NOT_MET]} not met, "
          f"{counts[selfcheck.NOT_JUDGED]} not judged, {counts[selfcheck.NOT_MEASURED]} not measured; "
          f"wrote {run_dir / TARGETS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
