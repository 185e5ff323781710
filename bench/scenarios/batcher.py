"""The dynamic batcher's rule, one model: shared by the builtin server loop and LoadGen's system under test.

Whenever the model is free, the batcher takes the waiting requests, up to the batch size. With fewer
waiting than that, it waits for more until the oldest waiting request has waited ``max_queue_delay_s``
(or no more requests will come), then takes what is there. Both load generators ask this one rule, so
the system under test is the same whichever generator drives it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Batcher:
    max_batch_size: int
    max_queue_delay_s: float

    def wait_until(self, n_waiting: int, oldest_arrival_s: float, more_coming: bool) -> float | None:
        """None: dispatch now (a full batch, or no more requests will come); else the time until which the
        batcher waits for a fuller batch (the caller dispatches then, or earlier once the batch fills)."""
        if n_waiting >= self.max_batch_size or not more_coming:
            return None
        return oldest_arrival_s + self.max_queue_delay_s

    def take(self, waiting: deque[T]) -> list[T]:
        """The next batch: the oldest waiting requests, up to the batch size."""
        return [waiting.popleft() for _ in range(min(self.max_batch_size, len(waiting)))]
