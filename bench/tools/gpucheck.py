"""The GPU check: base and large in fp32/fp16/bf16 at batch 1, 8 and 32 on one CUDA device.

Fails (exit 1) unless every measured cell's CUDA-event latencies, torch and NVML memory and NVML
energy come back plausible and non-null. Runs from a plain checkout with already-installed packages
(``python -m bench.tools.gpucheck OUT``), so it works on a GPU machine without network; a missing package
is named with the exact install line instead of a traceback.

``--targets`` also runs the cells that measure issue 12's targets (``bench.tools.targets``) and prints
every target as measured, met or not; ``--budget-s`` bounds the wall time: a cell that would not fit
(eager cells are estimated at ``--eager-cell-s``, compiled ones at ``--compiled-cell-s``: compilation
dominates) becomes a ``skipped`` record saying so. ``--device cpu`` with ``--model-path`` is a dry run
of the same code on a small checkpoint (its figures are not GPU figures and meet no target).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.results import Record

# import name -> distribution to install (the run path only; the report is optional)
REQUIRED = {"torch": "torch", "transformers": "transformers>=5", "tokenizers": "tokenizers",
            "safetensors": "safetensors", "PIL": "pillow", "numpy": "numpy", "psutil": "psutil",
            "pynvml": "nvidia-ml-py", "huggingface_hub": "huggingface-hub"}
OPTIONAL = {"jinja2": "jinja2", "plotly": "plotly"}


def missing(modules: dict[str, str]) -> list[str]:
    return [dist for name, dist in modules.items() if importlib.util.find_spec(name) is None]


def budget_gate(budget_s: float | None, eager_s: float, compiled_s: float, clock=time.monotonic):
    """``gate(cell)`` for ``runner.run_cells``: refuses a cell whose estimate exceeds what is left."""
    started = clock()

    def gate(cell) -> str | None:
        if budget_s is None:
            return None
        left = budget_s - (clock() - started)
        compiled = bool(cell.compile or cell.compile_vision)
        need = compiled_s if compiled else eager_s
        if need > left:
            return (f"not run: {max(left, 0.0):.0f} s of the GPU check's {budget_s:.0f} s budget left, "
                    f"{'a compiled' if compiled else 'an eager'} cell is estimated at {need:.0f} s")
        return None

    return gate


def plan(config, targets: bool, variant_map: dict[str, str] | None, max_batch_size: int | None = None,
         dtype: str | None = None) -> list:
    """The cells to run, in order, without duplicates: with ``targets``, the eager target cells, the
    compiled ones, the plausibility matrix, then the late target cells. ``max_batch_size`` caps every
    batch size and ``dtype`` replaces every cell's (dry runs on a CPU, which may lack native fp16)."""
    from bench.run.sweep import expand, unique_cells

    check = expand(config)
    if targets:
        from bench.tools.targets import cell_overrides, expand_overrides

        eager, compiled, late = (expand_overrides(config, group) for group in cell_overrides(variant_map))
        check = [*eager, *compiled, *check, *late]
    if max_batch_size:
        check = [dataclasses.replace(c, batch_size=min(c.batch_size, max_batch_size)) for c in check]
    if dtype:
        check = [dataclasses.replace(c, dtype=dtype) for c in check]
    return unique_cells(check)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.tools.gpucheck", description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", default="runs/gpu-check", help="results directory (default runs/gpu-check)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N; cpu for a dry run")
    p.add_argument("--variants", default="base,large")
    p.add_argument("--dtypes", default="fp32,fp16,bf16")
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--tasks", default="<CAPTION>")
    p.add_argument("--limit", type=int, default=16, help="synthetic-smoke images (default 16)")
    p.add_argument("--targets", action="store_true", help="also measure and print issue 12's targets")
    p.add_argument("--budget-s", type=float, help="wall-time budget for the cells, seconds (default: none)")
    p.add_argument("--eager-cell-s", type=float, default=15.0, help="budget estimate of an eager cell (15)")
    p.add_argument("--compiled-cell-s", type=float, default=90.0,
                   help="budget estimate of a cell that compiles (90: torch.compile's warm-up)")
    p.add_argument("--model-path", help="a checkpoint for every variant (dry runs on a tiny checkpoint)")
    p.add_argument("--max-new-tokens", type=int, help="override the generation length (dry runs)")
    p.add_argument("--max-batch-size", type=int, help="cap every cell's batch size (dry runs)")
    p.add_argument("--dtype", help="run every cell, target cells included, in this dtype (dry runs on a CPU "
                   "without native fp16, where fp16 cells would all be skipped)")
    return p


def unusable(device: str) -> str | None:
    """Why the check cannot run here (a missing package, no CUDA), with what is accepted; None when it can."""
    absent = missing(REQUIRED)
    if absent:
        return f"missing package(s): {', '.join(absent)}; install with: pip install {' '.join(absent)}"
    import torch

    from bench.core.measure import device_kind

    if device_kind(device) == "cuda" and not torch.cuda.is_available():
        return (f"CUDA is not available (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                "accepted: a machine with an NVIDIA GPU and a CUDA build of torch")
    return None


def sweep_config(args: argparse.Namespace):
    """The check's sweep: random weights on synthetic-smoke, num_beams 3, short repetition; with ``--model-path``
    every variant is that checkpoint. Returns the config and the variant map the target cells need."""
    from bench.run.sweep import SweepConfig, override, validate

    config = override(SweepConfig(name="gpu-check", weights="random", dataset="synthetic-smoke", limit=args.limit,
                                  num_beams=[3], repetition={"warmup": 3, "min_iterations": 5,
                                                             "min_duration_s": 1.0, "max_iterations": 50},
                                  energy_idle_s=0.5, max_new_tokens=args.max_new_tokens),
                      variants=args.variants, tasks=args.tasks, dtypes=args.dtypes, batch_sizes=args.batch_sizes,
                      devices=args.device)
    variant_map = None
    if args.model_path:
        config = dataclasses.replace(config, model_path=args.model_path, weights="pretrained", variants=["custom"])
        variant_map = {"base": "custom", "large": "custom"}
    validate(config)
    return config, variant_map


def run_check(args: argparse.Namespace, config, cells: list, out: Path) -> None:
    """Run the cells into ``out`` under the budget, with the host's load in env.json before and after."""
    from bench.core import host
    from bench.core.paths import make_dir, remove_file
    from bench.results import store
    from bench.run.environment import fingerprint
    from bench.run.runner import run_cells

    remove_file(out / store.RESULTS, "results file")
    make_dir(out, "run directory")
    load = host.host_load()  # the end is filled in after the cells: targets judge nothing on a busy host
    env = {**fingerprint(), "sweep": dataclasses.asdict(config), "host_load": load,
           "gpucheck": {"targets": args.targets, "budget_s": args.budget_s, "cells": len(cells)}}
    store.write_env(out, env)
    if warning := host.busy_warning(load):
        print(f"gpu_check: {warning}; targets will not be judged")
    budget = f", budget {args.budget_s:.0f} s" if args.budget_s else ""
    print(f"gpu_check: {len(cells)} cells{budget}", flush=True)
    run_cells(config, cells, out, quiet=True,
              gate=budget_gate(args.budget_s, args.eager_cell_s, args.compiled_cell_s))
    load["end"] = host.load_average()
    store.write_env(out, env)


def implausible(records: list[Record]) -> int:
    """Print the skipped cells and what is implausible about each measured one; the count of bad cells."""
    from bench.results import plausibility

    for r in records:
        if r.status == "skipped":
            print(f"skipped {r.variant} {r.dtype} bs{r.batch_size}: {r.error}")
    bad = 0
    for r in records:
        if r.status == "skipped":
            continue
        problems = plausibility.problems(r)
        for problem in problems:
            print(f"IMPLAUSIBLE {r.variant} {r.dtype} bs{r.batch_size}: {problem}")
        bad += bool(problems)
    return bad


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if why := unusable(args.device):
        print(f"gpu_check: {why}", file=sys.stderr)
        return 2
    from bench.cli import _quiet_libraries
    from bench.core.measure import device_kind, matmul_gflops
    from bench.report.summary import summary_table
    from bench.results import store
    from bench.run.optimize import MATMUL_N

    kind = device_kind(args.device)
    if kind != "cuda":
        print(f"gpu_check: dry run on {args.device}: the code paths run, the figures are not GPU figures")
    _quiet_libraries()
    config, variant_map = sweep_config(args)
    cells = plan(config, args.targets, variant_map, args.max_batch_size, args.dtype)
    out = Path(args.out)
    start = time.perf_counter()
    run_check(args, config, cells, out)
    records = list(store.latest_by_cell(store.records(out)).values())
    print(summary_table(records))
    n = MATMUL_N[kind]
    for dtype in ("fp32", "bf16", "fp16") if kind == "cuda" else ("fp32",):
        print(f"matrix product ({dtype}, {n}^2): {matmul_gflops(args.device, dtype, n=n):,.0f} GFLOP/s")
    bad = implausible(records)
    measured = sum(r.status != "skipped" for r in records)
    if not missing(OPTIONAL):
        from bench.report.report import build_report

        print(f"report: {build_report([out], out / store.REPORT)}")
    if args.targets:
        from bench.tools.targets import evaluate_run, table

        print(table(evaluate_run(out, records=records)))
    print(f"gpu_check: {measured - bad} passed, {bad} failed, {len(records) - measured} skipped in "
          f"{time.perf_counter() - start:.0f} s; results in {out}")
    return 1 if bad or not measured else 0


if __name__ == "__main__":
    raise SystemExit(main())
