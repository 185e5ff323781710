"""The florence2-bench command line: one subcommand per job (``bench/commands/``, one module each, a thin
layer over the modules that do the work); here the parser they hang on, the exit codes and the error output.

Exit codes: 0 all good; 1 a regression (compare, history check) or at least one failed cell (run); 2 bad
usage or bad input, with one line naming the offending value and what is accepted; 3 an unexpected error
(a bug), with one line and the path of a file holding the full traceback (or saying why none could be
written); 130 and 143 Ctrl-C and SIGTERM, with the command's advice. A crash is never exit 1, which
`compare` and `history check` reserve for a regression, and a lost stdout (a closed pipe, a full disk)
changes no exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import logging
import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from bench.commands import COMMANDS
from bench.core import interrupts
from bench.core.errors import PROG, UsageError
from bench.core.paths import temp_file


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
        command.setup_arguments(sub).set_defaults(
            func=command.run, interrupted=getattr(command, "INTERRUPTED", INTERRUPTED))
    return p


EXIT_USAGE, EXIT_CRASH = 2, 3  # 0 and 1 are what the commands return (README: exit codes)
# what a stopped command says unless its module states its own ``INTERRUPTED`` (``run``: how to resume)
INTERRUPTED = "nothing it writes is left half-written (files are written whole); run the command again"


def main(argv: list[str] | None = None) -> int:
    if problem := _environment_problem(sys.argv[1:] if argv is None else argv):
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        _quiet_libraries()
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt as exc:  # while the libraries load: nothing has started
        print(f"{PROG}: interrupted; {INTERRUPTED}", file=sys.stderr)
        return interrupts.exit_code(exc)
    interrupts.raise_on_terminate()
    with _guarded_stdout() as stdout:
        code = _run(args, argv)
    if stdout.failure is not None and stdout.failure.errno != errno.EPIPE:  # a reader that left is no news
        print(f"{PROG}: warning: the output to stdout was lost ({stdout.failure.strerror}); the exit code and "
              "the files written are not affected", file=sys.stderr)
    return code


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    try:
        with _one_line_warnings():
            return args.func(args)
    except UsageError as exc:
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (interrupts.Terminated)
        print(f"{PROG}: interrupted; {args.interrupted}", file=sys.stderr)
        return interrupts.exit_code(exc)
    except Exception as exc:  # the last resort: a bug, never mistaken for "regression" or "failed cell"
        return _crashed(exc, argv)


def _environment_problem(argv: list[str]) -> str | None:
    """What about the process makes every command fail before it starts: a working folder that was
    deleted, an argument that is not UTF-8 (a path the records and reports could not hold)."""
    try:
        os.getcwd()
    except OSError as exc:
        return (f"the current folder cannot be read ({exc.strerror}: deleted?); accepted: a command run from an "
                "existing folder (cd to one)")
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            return f"argument '{shown}' is not UTF-8; accepted: UTF-8 arguments and paths"
    return None


class _GuardedStdout:
    """stdout for a command: a reader that went away (``| head -1``) or a full device is remembered and
    ends the output, never the command (its files and its exit code are what it would have been)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream, self.failure = stream, None

    def write(self, text: str) -> int:
        if self.failure is None:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self._fail(exc)
        return len(text)

    def flush(self) -> None:
        if self.failure is None:
            try:
                self._stream.flush()
            except OSError as exc:
                self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """Later writes, and Python's own flush at exit, go to /dev/null instead."""
        self.failure = exc
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    @property
    def stream(self) -> TextIO:
        return self._stream

    def __getattr__(self, name: str) -> Any:
        if "_stream" not in self.__dict__:  # never recurse into itself (a copy, half-built)
            raise AttributeError(name)
        return getattr(self.__dict__["_stream"], name)


_GUARD_LOCK = threading.Lock()
_guard_users = 0  # commands running in this process under the one guard (tests call main from threads)


@contextlib.contextmanager
def _guarded_stdout() -> Iterator[_GuardedStdout]:
    """One guard per process, however many commands run at once: each installing and restoring its own
    would leave another's wrapper in place (a chain of wrappers, and a crash in a thread)."""
    global _guard_users
    with _GUARD_LOCK:
        original = sys.stdout
        if isinstance(original, _GuardedStdout):
            guarded = original
        else:
            if original is None:  # started with stdout closed: print() writes nowhere
                original = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
            if (getattr(original, "encoding", None) or "utf-8").lower().replace("-", "") != "utf8":
                with contextlib.suppress(AttributeError, ValueError):  # an ASCII locale: no UnicodeEncodeError
                    original.reconfigure(errors="backslashreplace")
            guarded = _GuardedStdout(original)
            sys.stdout = guarded  # type: ignore[assignment]
        _guard_users += 1
    try:
        yield guarded
    finally:
        guarded.flush()
        with _GUARD_LOCK:
            _guard_users -= 1
            if not _guard_users and sys.stdout is guarded:
                sys.stdout = guarded.stream


def _crashed(exc: Exception, argv: list[str] | None) -> int:
    """One line for a bug, and its traceback in a file; if no file can be written, the line says so."""
    summary = f"{type(exc).__name__}: {_one_line(str(exc))}"
    try:
        where = f"full traceback in {_write_traceback(argv)}"
    except Exception as failure:  # no temp folder, nothing writable: the line is all there is
        where = f"the traceback could not be saved ({type(failure).__name__}: {_one_line(str(failure), 120)})"
    with contextlib.suppress(Exception):
        print(f"{PROG}: internal error: {summary}; {where}", file=sys.stderr)
    return EXIT_CRASH


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _write_traceback(argv: list[str] | None) -> Path:
    """The current exception's full traceback in a file of its own (the terminal gets one line): in the
    temp folder, else the working folder. UTF-8 whatever the locale; what is not text is escaped."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = f"{PROG} {' '.join(sys.argv[1:] if argv is None else argv)}\n\n{traceback.format_exc()}"
    for folder in (None, os.getcwd()):
        try:
            fd, path = temp_file(f"{PROG}-crash-{stamp}-", ".txt", folder)
        except OSError as exc:
            failure = exc
            continue
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(text)
        return path
    raise failure


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings print as one ``florence2-bench: warning: ...`` line, not Python's two-line format."""
    original = warnings.formatwarning
    warnings.formatwarning = lambda message, *args, **kwargs: f"{PROG}: warning: {_one_line(str(message))}\n"
    try:
        yield
    finally:
        warnings.formatwarning = original
