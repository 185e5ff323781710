"""``history``: track runs over time (add, check the newest, find steps, trend report)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.commands.compare import INCONCLUSIVE_HELP
from bench.core import inputs


def setup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    h = subparsers.add_parser("history", help="track runs over time: add, check the newest, find steps, trend report",
                       description=(
        "A history directory keeps one file per run (commit, date, machine class, records). Runs are only "
        "compared within a machine class: CPU model and cores, GPU, torch and transformers major versions. "
        "docs/history.md explains the statistics."))
    hs = h.add_subparsers(dest="action", required=True, metavar="ACTION")
    fail_on = "thresholds as for compare, e.g. latency_p50=5%%,accuracy=-0.5 (default: compare's)"
    ha = hs.add_parser("add", help="add a run directory or a pytest-benchmark JSON file (twice: no-op)")
    ha.add_argument("source", metavar="RUN_DIR|BENCH.json")
    ha.add_argument("--history", required=True, metavar="DIR", help="the history directory (created if missing)")
    ha.add_argument("--commit", help="the commit measured (default: git.commit of env.json / commit_info.id)")
    ha.add_argument("--date", help="ISO date or time of the run (default: its own start time)")
    hc = hs.add_parser("check", help="judge the newest run against its class's previous runs; exit 1 on a regression")
    hc.add_argument("history", metavar="DIR")
    hc.add_argument("--fail-on", help=fail_on)
    hc.add_argument("--markdown", help="also write a markdown summary (e.g. $GITHUB_STEP_SUMMARY)")
    hc.add_argument("--fail-on-inconclusive", action="store_true", help=INCONCLUSIVE_HELP)
    hc.add_argument("--baseline-runs", type=inputs.bounded("baseline_runs"), metavar="K",
                    help="how many previous runs of the class give the baseline median (default 10, at least 3)")
    hst = hs.add_parser("steps", help="list every step over the whole history with the first commit after it")
    hst.add_argument("history", metavar="DIR")
    hst.add_argument("--fail-on", help=fail_on)
    hr = hs.add_parser("report", help="write the trend report (self-contained HTML)")
    hr.add_argument("history", metavar="DIR")
    hr.add_argument("-o", "--output", required=True, metavar="FILE.html")
    hr.add_argument("--fail-on", help=fail_on)
    hr.add_argument("--title", help="page title")
    return h


def run(args: argparse.Namespace) -> int:
    from bench.regression import history

    if args.action == "add":
        return history.run_add(Path(args.source), Path(args.history), args.commit, args.date)
    if args.action == "check":
        markdown = inputs.output_file(args.markdown, "markdown summary") if args.markdown else None
        return history.run_check(Path(args.history), args.fail_on, markdown, args.baseline_runs,
                                 args.fail_on_inconclusive)
    if args.action == "steps":
        return history.run_steps(Path(args.history), args.fail_on)
    return history.run_report(Path(args.history), inputs.output_file(args.output, "trend report"), args.fail_on,
                              args.title)

