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


class ScheduledPreparer(Generic[T, R]):
    """``prepare(item)`` for each item at its scheduled time, on a pool of ``workers`` threads.

    A server's requests arrive while the model is busy with an earlier batch; each is prepared as it
    arrives, so the batch the server takes next is ready when the model frees up. One worker prepares
    one request at a time: when preparing a request costs more than the model's share of it (a large
    batch on a fast device), requests pile up before the model and the server is bound by preparation.
    With ``workers`` threads, each takes the next item in order, waits for its time and prepares it, so
    up to ``workers`` requests are prepared at once (``prepare`` must be safe to call from several threads
    at once). ``take(indices)`` waits for those items (a pool that falls behind makes the server wait:
    it shows in latency).
    """

    def __init__(self, prepare: Callable[[T], R], items: list[T], due: list[float], sleep_until: Callable[[float],
                 None], workers: int = 1) -> None:
        import threading

        if workers < 1:
            raise ValueError(f"preparation workers {workers}; accepted: >= 1")
        self._prepare, self._items, self._due, self._sleep_until = prepare, items, due, sleep_until
        self._ready = [threading.Event() for _ in items]
        self._results: list[R | None] = [None] * len(items)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._threads = [threading.Thread(target=self._work, name=f"prefetch-arrivals-{i}", daemon=True)
                         for i in range(min(workers, max(1, len(items))))]
        for thread in self._threads:
            thread.start()

    def _claim(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._next >= len(self._items):
                return None
            k, self._next = self._next, self._next + 1
            return k

    def _work(self) -> None:
        while (k := self._claim()) is not None:
            self._sleep_until(self._due[k])
            try:
                self._results[k] = self._prepare(self._items[k])
            except BaseException as exc:  # handed to the caller by take()
                self._error = exc
                self._stop.set()
                for event in self._ready:
                    event.set()
                return
            self._ready[k].set()

    def take(self, indices: list[int]) -> list[R]:
        for k in indices:
            self._ready[k].wait()
        if self._error is not None:
            raise self._error
        return [self._results[k] for k in indices]  # type: ignore[misc]

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
