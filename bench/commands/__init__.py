"""The command line's subcommands: one module per command, registered in ``COMMANDS``.

A command module has ``setup_arguments(subparsers)``, which adds its parser (name, help, arguments) and
returns it, and ``run(args) -> int``, its exit code; it may state ``INTERRUPTED``, what Ctrl-C or SIGTERM
tells the user (exit 130/143; ``bench.cli.INTERRUPTED`` otherwise). ``bench.cli`` walks ``COMMANDS`` to build the parser, in
this order (a run's workflow: run, read, compare, track; then the helpers), which is the order `--help` lists.
To add a command: a module here and an entry in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol

from bench.commands import (
    compare,
    datasets,
    env,
    export,
    history,
    make_checkpoint,
    make_tiny_checkpoint,
    report,
    run,
    score,
    variants,
)


class Command(Protocol):
    def setup_arguments(self, subparsers: Any) -> argparse.ArgumentParser:
        """Add this command's parser to ``subparsers`` (argparse's sub-parser action) and return it."""
        ...

    def run(self, args: argparse.Namespace) -> int:
        """Do the command; the exit code (0 good, 1 a regression or a failed cell)."""
        ...


COMMANDS: tuple[Command, ...] = (run, report, compare, history, score, export, variants, datasets, env,
                                 make_tiny_checkpoint, make_checkpoint)
