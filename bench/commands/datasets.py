"""``datasets``: list, fetch or verify datasets."""

from __future__ import annotations

import argparse
from typing import Any

from bench.core.errors import PROG, UsageError


def setup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    d = subparsers.add_parser("datasets", help="list, fetch or verify datasets")
    d.add_argument("action", choices=("list", "fetch", "verify"))
    d.add_argument("name", nargs="?")
    d.add_argument("--cache-dir", help="default: $FLORENCE2_BENCH_DATA or ~/.cache/florence2-bench/datasets")
    return d


def run(args: argparse.Namespace) -> int:
    from bench.accuracy import fetch

    if args.action == "list":
        print(fetch.format_rows(fetch.list_datasets(args.cache_dir)))
        return 0
    if args.action == "fetch":
        path = fetch.fetch(_need_name(args), cache_dir=args.cache_dir)
        print(f"ready: {path}")
        return 0
    report = fetch.verify(_need_name(args), cache_dir=args.cache_dir)
    print(report)
    return 0 if report.ok else 1


def _need_name(args: argparse.Namespace) -> str:
    if not args.name:
        raise UsageError(f"datasets {args.action} needs a dataset NAME; see `{PROG} datasets list`")
    return args.name

