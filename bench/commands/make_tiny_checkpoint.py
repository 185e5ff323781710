"""``make-tiny-checkpoint``: write a complete, tiny, random Florence-2 checkpoint (for tests and trials)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.core import inputs


def setup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    t = subparsers.add_parser("make-tiny-checkpoint", help="write a complete, tiny, random Florence-2 checkpoint")
    t.add_argument("directory", metavar="DIR")
    t.add_argument("--seed", type=inputs.bounded("seed"), default=0)
    t.add_argument("--force", action="store_true", help="replace an existing non-empty DIR whole (without it, one "
                    "is refused)")
    return t


def run(args: argparse.Namespace) -> int:
    from bench.backends.transformers.checkpoints import make_tiny_checkpoint

    path = make_tiny_checkpoint(Path(args.directory), seed=args.seed, force=args.force)
    print(f"tiny Florence-2 checkpoint written to {path} (random weights; load it with --model-path {path})")
    return 0

