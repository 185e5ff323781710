"""``compare``: compare two run directories; exit 1 on a significant regression."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.core import inputs

INCONCLUSIVE_HELP = ("strict CI: exit 2 when nothing regressed but a verdict is inconclusive (the figures cannot "
                     "rule out a change beyond the threshold); 1 stays a regression")


def setup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    c = subparsers.add_parser("compare", help="compare two run directories; exit 1 on a significant regression")
    c.add_argument("baseline", metavar="BASELINE_DIR")
    c.add_argument("current", metavar="CURRENT_DIR")
    c.add_argument("--fail-on", help="thresholds, e.g. latency_p50=5%%,accuracy=-0.5")
    c.add_argument("--markdown", help="also write a markdown summary (for CI)")
    c.add_argument("--fail-on-inconclusive", action="store_true", help=INCONCLUSIVE_HELP)
    return c


def run(args: argparse.Namespace) -> int:
    from bench.regression.compare import run_compare

    return run_compare(Path(args.baseline), Path(args.current), args.fail_on,
                       inputs.output_file(args.markdown, "markdown summary") if args.markdown else None,
                       args.fail_on_inconclusive)

