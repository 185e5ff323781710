"""``make-checkpoint``: a Florence-2 checkpoint of a variant's real size with random weights, marked random,
so that other tools (optimum-benchmark, OpenVINO's) can run exactly the model measured here."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.core import inputs


def setup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    m = subparsers.add_parser("make-checkpoint", help="write a Florence-2 checkpoint of a variant's real size with "
                              "random weights, marked random (for other tools to run exactly the model measured here)")
    m.add_argument("directory", metavar="DIR")
    m.add_argument("--variant", default="base", help="a registered variant, e.g. base, large (see `variants`)")
    m.add_argument("--seed", type=inputs.bounded("seed"), default=0)
    m.add_argument("--force", action="store_true", help="replace an existing non-empty DIR whole (without it, one "
                    "is refused)")
    return m


def run(args: argparse.Namespace) -> int:
    from bench.backends.transformers.checkpoints import make_checkpoint
    from bench.core.variants import get_variant

    variant = get_variant(args.variant)
    path = make_checkpoint(variant, Path(args.directory), seed=args.seed, force=args.force)
    print(f"Florence-2 {variant.name} checkpoint with RANDOM weights written to {path} (marked random in "
          f"florence2_bench.json; load it with --model-path {path})")
    return 0
