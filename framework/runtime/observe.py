"""Observing workflows: waiting for one to end, and telling listeners about each transition.

A runtime remembers which workflows it saw end (or park, waiting only for a signal) when it
saved them, so a waiter in the same process needs no read of the store to learn it; others
(finished by workers elsewhere) are polled. Listeners (telemetry first, then displays) see
every saved transition; a failing listener never breaks the saga.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..models import HistoryEntry, StepStatus, WorkflowState, WorkflowStatus
from ..vocabulary import STEP_BUSY, WORKFLOW_OPEN
from .outage import Outage, is_outage, ride_out
from .transaction import read

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("statesaga.engine")

#: Called after each save with the saved document: the engine goes on working on that object
#: (the next settle starts from it), so a listener copies what it keeps.
Listener = Callable[[WorkflowState, HistoryEntry], None]

_POLL = 0.05
_ENDED_KEPT = 10_000


def waiting_for_signal(wf: WorkflowState) -> bool:
    """Running, with nothing queued or running and no sleep under way: only a signal (or a
    wait's timeout) can move it on."""
    if wf.status is not WorkflowStatus.RUNNING:
        return False
    waiting = False
    for s in wf.steps:
        if s.status in STEP_BUSY or (s.status is StepStatus.WAITING and s.kind == "sleep"):
            return False
        waiting = waiting or (s.status is StepStatus.WAITING and s.kind == "wait")
    return waiting


class Observer:
    """The runtime's memory of what it saved, for waiters, and its listeners."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._ended: dict[str, None] = {}  # ids of workflows this runtime saw end, oldest first
        # Ids of workflows this runtime saw waiting only for signals (see `waiting_for_signal`).
        self._parked: set[str] = set()

    def saved(self, wf: WorkflowState) -> None:
        """Note where a workflow this runtime just saved stands."""
        if wf.status not in WORKFLOW_OPEN:
            self._ended[wf.id] = None
            while len(self._ended) > _ENDED_KEPT:  # forget the oldest; waiters re-read the store
                self._ended.pop(next(iter(self._ended)))
        else:
            self._ended.pop(wf.id, None)  # a restarted workflow runs again
        if waiting_for_signal(wf):
            self._parked.add(wf.id)
        else:
            self._parked.discard(wf.id)

    def notify(self, wf: WorkflowState, entries: Iterable[HistoryEntry]) -> None:
        for entry in entries:
            for listener in self.rt.listeners:
                try:
                    listener(wf, entry)
                except Exception:  # a display must never break the saga
                    log.exception("listener failed")

    def wait(
        self,
        workflow_id: str,
        timeout: float | None,
        on_progress: Callable[[WorkflowState], None] | None,
        until_signal: bool,
    ) -> WorkflowState:
        """See Engine.wait."""
        rt = self.rt
        # Workflows this process finished are known without a read; others (finished by
        # workers elsewhere) are polled from the store, at most every _POLL seconds. A poll
        # that cannot reach the store (a server's pause or restart) is tried again with
        # backoff: waiting goes on, up to `timeout` as ever.
        last_read = 0.0
        outage = Outage(f"waiting for {workflow_id}")
        retry_at = 0.0

        def done() -> bool:
            nonlocal last_read, retry_at
            if workflow_id in self._ended:
                return True
            if until_signal and workflow_id in self._parked:
                return True
            now = time.monotonic()
            if now < retry_at or (on_progress is None and now - last_read < _POLL):
                return False
            last_read = now
            try:
                wf = rt.store.get(workflow_id)
                if on_progress is not None:
                    on_progress(wf)
            except Exception as exc:
                if not is_outage(exc, full_disk=False):
                    raise
                retry_at = time.monotonic() + outage.failed(exc)
                return False
            outage.ok()
            return wf.status not in WORKFLOW_OPEN or (until_signal and waiting_for_signal(wf))

        rt.queue.drain(done, timeout)
        self._ended.pop(workflow_id, None)
        wf = ride_out(read(rt.store, workflow_id), workflow_id)
        if on_progress is not None:
            on_progress(wf)
        return wf
