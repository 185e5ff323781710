"""``env``: print the environment fingerprint (what a run records in env.json)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def setup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    return subparsers.add_parser("env", help="print the environment fingerprint")


def run(args: argparse.Namespace) -> int:
    from bench.run.environment import fingerprint

    print(json.dumps(fingerprint(), indent=2, sort_keys=True, default=str))
    return 0

