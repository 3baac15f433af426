"""Heartbeats: how a running handler shows it is alive, and what counts as stale."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from ..ports import Clock

# The name it logged under before the tree's split: operators filter and alert on it.
log = logging.getLogger("statesaga.heartbeat")


class Heartbeats:
    """One thread beats for every workflow whose handler is running in this process.

    A thread per step would cost a thread start on the hot path of every step.
    """

    def __init__(self, beat: Callable[[str], None], interval: Callable[[], float]) -> None:
        self._beat = beat
        self._interval = interval
        self._active: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, workflow_id: str) -> None:
        with self._lock:
            self._active[workflow_id] = self._active.get(workflow_id, 0) + 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, daemon=True, name="statesaga-heartbeat"
                )
                self._thread.start()

    def discard(self, workflow_id: str) -> None:
        with self._lock:
            n = self._active.get(workflow_id, 0) - 1
            if n > 0:
                self._active[workflow_id] = n
            else:
                self._active.pop(workflow_id, None)

    def _loop(self) -> None:
        while True:
            time.sleep(self._interval())
            with self._lock:
                ids = list(self._active)
            for workflow_id in ids:
                try:
                    self._beat(workflow_id)
                except Exception as exc:  # a missed beat is what recovery is for
                    # One line (a full disk or an outage fails every beat): never a traceback
                    # in the log of a step that goes on, nor a crash of it.
                    log.warning(
                        "heartbeat for %s failed: %s: %s", workflow_id, type(exc).__name__, exc
                    )
                    log.debug("heartbeat for %s failed", workflow_id, exc_info=True)


def heartbeat_cutoff(clock: Clock, timeout: float) -> datetime:
    """Heartbeats older than this are stale."""
    return clock.now() - timedelta(seconds=timeout)
