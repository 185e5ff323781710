"""Overlap: prepare the next batch on a background thread while the device runs the current one.

A ``Prefetcher`` knows nothing about models: it calls ``prepare(item)`` for the items of an iterator,
``depth`` items ahead of the caller, on one worker thread. While the caller executes batch k (which
waits on the device and releases the GIL), the worker decodes, tokenises and copies batch k+1. So the
wall time of N batches approaches ``max(prepare, execute) * N`` instead of their sum; each stage's own
time is still measured where it runs, and throughput must come from the wall time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Prefetcher(Generic[T, R]):
    """``next(prefetcher)`` returns ``prepare(item)`` for the next item, prepared ahead on a worker thread."""

    def __init__(self, prepare: Callable[[T], R], items: Iterator[T], depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth {depth}; accepted: >= 1")
        self._prepare, self._items, self._depth = prepare, items, depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._pending: deque[Future[R]] = deque()
        self._fill()

    def _fill(self) -> None:
        while len(self._pending) < self._depth:
            try:
                item = next(self._items)
            except StopIteration:
                return
            self._pending.append(self._pool.submit(self._prepare, item))

    def __iter__(self) -> Prefetcher[T, R]:
        return self

    def __next__(self) -> R:
        if not self._pending:
            raise StopIteration
        ready = self._pending.popleft()
        self._fill()  # the worker starts on the next item before the caller gets this one
        return ready.result()

    def close(self) -> None:
        """Drop what was prepared ahead and stop the worker (waits for an item in progress)."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
