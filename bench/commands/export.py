"""``export``: a run directory's records as CSV or Parquet (flattened columns)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.core import inputs


def setup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    e = subparsers.add_parser("export", help="export a run directory's records as CSV or Parquet (flattened columns)")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("file", metavar="FILE.csv|FILE.parquet")
    return e


def run(args: argparse.Namespace) -> int:
    from bench.results.store import export

    print(f"exported: {export(Path(args.run_dir), inputs.output_file(args.file, 'export file'))}")
    return 0

