"""`inline://`: runs jobs in the calling process, one at a time, honouring their delays.

`enqueue` only records the job; `drain` runs them. Running a job can enqueue more, so jobs
are taken from a heap ordered by due time instead of recursing.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from statesaga.errors import AdapterError
from statesaga.ports import Job, JobRunner, Queue


class InlineQueue(Queue):  # type: ignore[misc]  # mypy reads statesaga.* as Any here
    #: Jobs run in the process that enqueues them, in `drain` (the CLI waits here for them).
    in_process = True

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._runner: JobRunner | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self.ran = 0

    @classmethod
    def from_url(cls, url: str) -> InlineQueue:
        return cls()

    def bind(self, runner: JobRunner) -> None:
        self._runner = runner

    def enqueue(self, job: Job, delay: float = 0.0) -> None:
        with self._lock:
            heapq.heappush(self._heap, (self._clock() + max(delay, 0.0), next(self._seq), job))

    def pending(self) -> int:
        return len(self._heap)

    def drain(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> None:
        if self._runner is None:
            raise AdapterError("inline queue has no runner: bind it to an engine first")
        deadline = None if timeout is None else self._clock() + timeout
        while self._heap and not (until is not None and until()):
            due = self._heap[0][0]
            now = self._clock()
            if deadline is not None and now >= deadline:
                return
            if due > now:
                # At most a second at a time, so `until` (a caller's progress report, a
                # cancel seen in the store) is asked during a long retry delay or sleep too.
                left = deadline - now if deadline is not None else due - now
                time.sleep(min(due - now, left, 1.0))
                continue
            with self._lock:
                _, _, job = heapq.heappop(self._heap)
            self._runner(job)
            self.ran += 1

    def close(self) -> None:
        self._heap.clear()
