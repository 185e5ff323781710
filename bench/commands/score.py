"""``score``: score predictions made elsewhere with the same metric code."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.core import inputs


def setup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("score", help="score predictions made elsewhere with the same metric code")
    s.add_argument("--task", required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--predictions", required=True, help="JSONL predictions (format in the README)")
    s.add_argument("--json", help="also write the metrics as JSON")
    return s


def run(args: argparse.Namespace) -> int:
    from bench.accuracy.metrics import format_metrics, score_file
    from bench.accuracy.tasks import get_task

    metrics = score_file(get_task(args.task).token, args.dataset, Path(args.predictions),
                         inputs.output_file(args.json, "metrics file") if args.json else None)
    print(format_metrics(metrics))
    return 0

