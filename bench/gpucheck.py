"""The GPU check: base and large in fp32/fp16/bf16 at batch 1, 8 and 32 on one CUDA device.

Fails (exit 1) unless every cell's CUDA-event latencies, torch and NVML memory and NVML energy come
back plausible and non-null. Runs from a plain checkout with already-installed packages
(``python -m bench.gpucheck OUT``), so it works on a GPU machine without network; a missing package
is named with the exact install line instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

# import name -> distribution to install (the run path only; the report is optional)
REQUIRED = {"torch": "torch", "transformers": "transformers>=5", "tokenizers": "tokenizers",
            "safetensors": "safetensors", "PIL": "pillow", "numpy": "numpy", "psutil": "psutil",
            "pynvml": "nvidia-ml-py", "huggingface_hub": "huggingface-hub"}
OPTIONAL = {"jinja2": "jinja2", "plotly": "plotly"}


def missing(modules: dict[str, str]) -> list[str]:
    return [dist for name, dist in modules.items() if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpucheck", description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default="runs/gpu-check", help="results directory (default runs/gpu-check)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--variants", default="base,large")
    p.add_argument("--dtypes", default="fp32,fp16,bf16")
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--tasks", default="<CAPTION>")
    args = p.parse_args(argv)

    absent = missing(REQUIRED)
    if absent:
        print(f"gpu_check: missing package(s): {', '.join(absent)}; install with: pip install {' '.join(absent)}",
              file=sys.stderr)
        return 2
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: CUDA is not available (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
              "accepted: a machine with an NVIDIA GPU and a CUDA build of torch", file=sys.stderr)
        return 2

    from bench import store
    from bench.cli import _quiet_libraries, summary_table
    from bench.measure import matmul_gflops, plausibility_problems
    from bench.sweep import SweepConfig, override, run_sweep

    _quiet_libraries()
    config = override(SweepConfig(name="gpu-check", weights="random", dataset="synthetic-smoke", limit=16,
                                  num_beams=[3], repetition={"warmup": 2, "min_iterations": 5,
                                                             "min_duration_s": 1.0, "max_iterations": 50},
                                  energy_idle_s=0.5),
                      variants=args.variants, tasks=args.tasks, dtypes=args.dtypes, batch_sizes=args.batch_sizes,
                      devices=args.device)
    out = Path(args.out)
    if (out / store.RESULTS).exists():
        (out / store.RESULTS).unlink()
    start = time.perf_counter()
    run_sweep(config, out, quiet=True)
    records = store.read_records(out)
    print(summary_table(records))
    for dtype in ("fp32", "bf16", "fp16"):
        print(f"matrix product ({dtype}, 8192^2): {matmul_gflops(args.device, dtype, n=8192):,.0f} GFLOP/s")
    failures = {r["cell_id"]: plausibility_problems(r) for r in records}
    for r in records:
        for problem in failures[r["cell_id"]]:
            print(f"IMPLAUSIBLE {r['variant']} {r['dtype']} bs{r['batch_size']}: {problem}")
    bad = sum(1 for v in failures.values() if v)
    if not missing(OPTIONAL):
        from bench.report import build_report

        print(f"report: {build_report([out], out / store.REPORT)}")
    print(f"gpu_check: {len(records) - bad} passed, {bad} failed in {time.perf_counter() - start:.0f} s; results in {out}")
    return 1 if bad or not records else 0


if __name__ == "__main__":
    raise SystemExit(main())
