"""Serving an `sqlq://` queue: the SQLite side of `statesaga worker` (SQLiteQueue.serve).

The worker claims the first due job (statesaga.adapters.queues.sqlite.queue: by its revision),
runs it with the engine's runner, and deletes it with its next claim; with `?threads=N`, N loops
do so at once, on N threads. A thread beats for the worker every `lease / 5` seconds and frees
the jobs of workers that stopped beating. With nothing due, it sleeps until the next job falls
due, at most `poll_interval` at first, backing off to half a second, so an idle worker costs a
read now and then.

SIGTERM (or Ctrl+C) is a warm shutdown, as on RQ: the job in flight finishes and is saved,
the engine claims no next step (`ServeOptions.on_stop`), then the worker leaves; a second
signal stops at once (the job is freed when the worker leaves, or by the others' lease when
the process dies).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from statesaga.errors import AdapterError
from statesaga.ports import JobRunner, ServeOptions

if TYPE_CHECKING:
    from .queue import SQLiteQueue  # noqa: TID251 (relative, so mypy reads the class)

log = logging.getLogger("statesaga.worker")

#: The longest an idle worker sleeps between two looks at the queue.
_IDLE_MAX = 0.5


class QueueWorker:
    """One worker serving one SQLite queue in this process."""

    def __init__(self, queue: SQLiteQueue, runner: JobRunner, options: ServeOptions) -> None:
        self.queue = queue
        self.runner = runner
        self.options = options
        self.name = options.name
        self.stop = threading.Event()
        #: Row ids of jobs that ran and were not deleted yet (a loop's, when it ended).
        self.done: list[int] = []
        self.worked = False
        self._failed: list[BaseException] = []
        self._lock = threading.Lock()

    def run(self) -> bool:
        """Serve until stopped or, with `burst`, until no job is due. True when a job ran."""
        queue = self.queue
        queue.beat(self.name)
        beating = threading.Thread(target=self._beat, name=f"{self.name}.beat", daemon=True)
        beating.start()
        # `threads` loops: this thread runs one, daemon threads the others (a second signal
        # ends the process without waiting for their jobs; the lease frees them).
        others = [
            threading.Thread(target=self._loop_here, name=f"{self.name}.{i}", daemon=True)
            for i in range(1, queue.threads)
        ]
        try:
            with self._signals():
                for thread in others:
                    thread.start()
                self._loop()
                for thread in others:
                    thread.join()
        finally:
            self.stop.set()
            beating.join()
            queue.leave(self.name, self.done)
        if self._failed:
            raise self._failed[0]
        return self.worked

    def _loop_here(self) -> None:
        """A loop on another thread: what ends it ends the worker."""
        try:
            self._loop()
        except BaseException as exc:
            self._failed.append(exc)
            self.stop.set()

    def _loop(self) -> None:
        done: list[int] = []
        idle = self.queue.poll_interval
        try:
            while not self.stop.is_set():
                claimed = self.queue.claim(self.name, done)
                done = []
                if claimed is None:
                    if self.options.burst:
                        return
                    self._wait(idle)
                    idle = min(idle * 1.5, _IDLE_MAX)
                    continue
                idle = self.queue.poll_interval
                job_id, job = claimed
                if job is not None:
                    try:
                        self.runner(job)
                    except Exception:
                        # As a failed RQ job: logged, not retried here; the workflow's stale
                        # heartbeat brings recovery to it.
                        log.exception("job %s (%s) failed", job_id, job.description or job.kind)
                    self.worked = True
                done.append(job_id)
        finally:
            with self._lock:
                self.done += done

    def _wait(self, longest: float) -> None:
        """Sleep until the next job falls due, `longest` at most, or a stop."""
        due = self.queue.next_due()
        pause = longest if due is None else min(longest, max(due - time.time(), 0.0))
        self.stop.wait(pause)

    def _beat(self) -> None:
        every = self.queue.lease / 5
        while not self.stop.wait(every):
            try:
                freed = self.queue.beat(self.name)
            except AdapterError as exc:
                log.warning("worker %s could not beat: %s", self.name, exc)
                continue
            if freed:
                log.warning("freed %d job(s) of workers that stopped beating", freed)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM / SIGINT: the first is a warm shutdown, the second stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum: int, frame: Any) -> None:
            if self.stop.is_set():
                raise KeyboardInterrupt
            log.info("worker %s: stopping after the job in flight", self.name)
            if self.options.on_stop is not None:
                self.options.on_stop()
            self.stop.set()

        for sig in previous:
            signal.signal(sig, on_signal)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


__all__ = ["QueueWorker"]
