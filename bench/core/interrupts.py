"""Ctrl-C (SIGINT) and SIGTERM as exceptions that stop a command between two safe points.

``bench.cli`` turns them into exit 130 and 143 with the command's own advice; a run's finished cells are
already in results.jsonl and the cell that was running leaves no record, so ``--resume`` continues it.
C++ code that cannot unwind a Python exception (LoadGen's test, which calls back into Python) runs under
``deferred``: a signal asks it to end early and is raised once it has returned.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from bench.core.errors import PROG


class Terminated(KeyboardInterrupt):
    """SIGTERM: stops the command like Ctrl-C (so nothing catching ``Exception`` records it as a failure)."""


EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as shells report it
GRACE_S = 5.0  # how long a held signal waits for the block to end by itself before the process ends
# what a stopped run leaves, and how to go on (``run``'s advice; other commands have their own)
RESUME_ADVICE = ("finished cells are in results.jsonl and the stopped cell left no record: --resume runs it "
                 "again; what it had printed (a capacity search's steps) is in progress.log")


def exit_code(exc: KeyboardInterrupt) -> int:
    return EXIT_CODES[signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT]


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def raise_on_terminate() -> None:
    """SIGTERM raises ``Terminated`` in the main thread (Python's default would end without a word)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def deferred(stop: Callable[[], None], advice: str, grace_s: float = GRACE_S) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the block runs code that must not see a Python exception.

    The first signal calls ``stop`` at once (which makes the block end early) and is raised when the block
    is done; if the block has not ended ``grace_s`` later (LoadGen's server test keeps its schedule), or
    at a second signal, the process ends at once with the signal's exit code and ``advice``. The signal
    is read from Python's wakeup fd on a thread of its own: the main thread, inside C++, runs no Python
    handler until the block returns. Off the main thread (where no signal is delivered) the block runs as
    it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    done = threading.Event()
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def end_now() -> None:
        print(f"{PROG}: interrupted; {advice}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(EXIT_CODES[received[0]])

    def watch() -> None:
        while byte := os.read(read_fd, 1):
            if received:
                end_now()
            received.append(byte[0])
            print(f"{PROG}: stopping: the current test ends early (Ctrl-C again to stop at once)",
                  file=sys.stderr, flush=True)
            stop()
            threading.Thread(target=lambda: done.wait(grace_s) or end_now(), daemon=True).start()

    previous = {s: signal.signal(s, lambda signum, frame: None) for s in EXIT_CODES}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="signal-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(previous_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(write_fd)
        watcher.join()
        os.close(read_fd)
    if received:
        raise Terminated() if received[0] == signal.SIGTERM else KeyboardInterrupt()
