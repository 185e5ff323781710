"""``compare``: compare two run directories; exit 1 on a significant regression."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench import inputs


def setup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    c = subparsers.add_parser("compare", help="compare two run directories; exit 1 on a significant regression")
    c.add_argument("baseline", metavar="BASELINE_DIR")
    c.add_argument("current", metavar="CURRENT_DIR")
    c.add_argument("--fail-on", help="thresholds, e.g. latency_p50=5%%,accuracy=-0.5")
    c.add_argument("--markdown", help="also write a markdown summary (for CI)")
    return c


def run(args: argparse.Namespace) -> int:
    from bench.compare import run_compare

    return run_compare(Path(args.baseline), Path(args.current), args.fail_on,
                       inputs.output_file(args.markdown, "markdown summary") if args.markdown else None)

