"""The florence2-bench command line: one subcommand per job (``bench/commands/``, one module each, a thin
layer over the modules that do the work); here the parser they hang on, the exit codes and the error output.

Exit codes: 0 all good; 1 a regression (compare, history check) or at least one failed cell (run); 2 bad
usage or bad input, with one line naming the offending value and what is accepted; 3 an unexpected error
(a bug), with one line and the path of a file holding the full traceback. A crash is never exit 1, which
`compare` and `history check` reserve for a regression.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

from bench.commands import COMMANDS
from bench.errors import PROG, UsageError
from bench.paths import temp_file


def _quiet_libraries() -> None:
    """Keep library chatter (progress bars, torchvision hints) out of the benchmark's output."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit 2) like every other bad input."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=(
        "Benchmark Florence-2 models: accuracy, latency (per stage), throughput, memory and energy, "
        "across variants, tasks, precisions, batch sizes and devices."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.setup_arguments(sub).set_defaults(func=command.run)
    return p


EXIT_USAGE, EXIT_CRASH = 2, 3  # 0 and 1 are what the commands return (README: exit codes)


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with _one_line_warnings():
            return args.func(args)
    except UsageError as exc:
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished cells are in results.jsonl (use --resume), and what the cell that "
              "was stopped had printed (a capacity search's steps) in progress.log", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: a bug, never mistaken for "regression" or "failed cell"
        path = _write_traceback(argv)
        print(f"{PROG}: internal error: {type(exc).__name__}: {_one_line(str(exc))}; full traceback in {path}",
              file=sys.stderr)
        return EXIT_CRASH


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _write_traceback(argv: list[str] | None) -> Path:
    """The current exception's full traceback in a file of its own (the terminal gets one line)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fd, path = temp_file(f"{PROG}-crash-{stamp}-", ".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{PROG} {' '.join(sys.argv[1:] if argv is None else argv)}\n\n{traceback.format_exc()}")
    return path


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings print as one ``florence2-bench: warning: ...`` line, not Python's two-line format."""
    original = warnings.formatwarning
    warnings.formatwarning = lambda message, *args, **kwargs: f"{PROG}: warning: {_one_line(str(message))}\n"
    try:
        yield
    finally:
        warnings.formatwarning = original
