"""``variants``: list the variant registry with parameter counts."""

from __future__ import annotations

import argparse
from typing import Any


def setup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    return subparsers.add_parser("variants", help="list the variant registry with parameter counts")


def run(args: argparse.Namespace) -> int:
    from bench.core.variants import VARIANTS

    print(f"{'variant':10s} {'params':>9s}  {'hub id (original)':32s} {'native id':38s} description")
    for v in VARIANTS.values():
        print(f"{v.name:10s} {v.params / 1e6:8.1f}M  {v.hub_id:32s} {v.native_id:38s} {v.description}")
    return 0

