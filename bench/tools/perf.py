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
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.accuracy.data import synthetic_smoke
from bench.backends.base import CheckpointRef, LoadedModel, LoadOptions
from bench.backends.transformers.checkpoints import load, resolve
from bench.core.errors import UsageError
from bench.core.measure import device_kind
from bench.core.paths import write_output
from bench.core.variants import get_variant
from bench.tools.perf_measure import measure_settings
from bench.tools.perf_report import EXIT_NOT_JUDGED, PERF_FILE, PerfReport
from bench.tools.perf_settings import (
    CANDIDATES,
    KEY_SYNTAX,
    NEW_TOKENS,
    NUM_BEAMS,
    TASK,
    VARIANT,
    cpu_candidates,
    cuda_candidates,
    parse_candidate,
)


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


def print_report(report: PerfReport, budget_s: float, wall_s: float, candidates: int) -> None:
    """The table, then the lines that say what the run can claim: time, notes, host load, A/A control, speedup,
    backends and the verdict on the target."""
    print(report.table())
    print(
        f"vision: {report.vision_gflop_per_image:.1f} GFLOP per image (multiply-add = 2 FLOPs); roof = vision "
        "GFLOP/s / matrix-product GFLOP/s in the same dtype, measured in this run"
    )
    print(f"time: {report.spent_s:.0f} s warming up and measuring (budget {budget_s:.0f} s), "
          f"{report.load_s:.1f} s building models, {wall_s:.0f} s in all; "
          f"{report.measured} of {candidates} settings measured")
    for note in report.notes:
        print(f"note: {note}")
    print(report.host_line())
    print(report.aa_line())
    print(report.speedup_line())
    if line := report.backends_line():
        print(line)
    print(report.target_line())


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    try:
        args = parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if device_kind(args.device) == "cuda" and not torch.cuda.is_available():
        print("error: CUDA is not available here; accepted: --device cpu", file=sys.stderr)
        return 2
    samples = synthetic_smoke(args.images)
    print(
        f"perf: {args.model_path or VARIANT + ' (random weights)'}, {TASK}, num_beams={NUM_BEAMS}, {NEW_TOKENS} new tokens, "
        f"{len(samples)} images, up to {args.rounds} rounds, {args.device}, torch threads {torch.get_num_threads()}, "
        f"budget {args.budget_s:.0f} s (loading not counted)"
    )
    print(f"candidates: {', '.join(c.key for c in args.candidates)}", flush=True)
    wall = time.perf_counter()
    report = measure_settings(random_model_loader(args.device, args.model_path), args.candidates, device=args.device,
                              samples=samples, rounds=args.rounds, budget_s=args.budget_s,
                              compiled_warmup_s=args.compiled_warmup_s)
    from bench.run.environment import fingerprint

    wall_s = time.perf_counter() - wall
    path = Path(args.out) / PERF_FILE
    write_output(path, json.dumps({**report.to_dict(), "wall_s": wall_s, "env": fingerprint()}, indent=2, default=str))
    print_report(report, args.budget_s, wall_s, len(args.candidates))
    print(f"wrote {path}")
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())
