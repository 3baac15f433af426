"""Recovery: find the workflows whose worker was lost and resume or cancel them.

A worker that dies leaves its workflow in an open state with a heartbeat that stops moving.
The store says what should be in flight (the persisted step states), so recovery needs no log
of jobs: `Engine.resume` times out the lost attempt (a new attempt token, so the zombie's late
result is rejected) and puts back every job the queue may have lost (a killed worker, a Redis
restart). Run it once (`statesaga recover --once`) or as a loop next to the workers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from ..errors import StatesagaError, StoreFullError
from ..models import StepStatus, WorkflowState, WorkflowStatus
from ..ports import Clock, Store
from ..vocabulary import STEP_BUSY, WORKFLOW_IN_FLIGHT, WORKFLOW_PAUSED
from .clock import store_clock
from .heartbeat import heartbeat_cutoff
from .outage import is_outage

# The name it logged under before the tree's split: operators filter and alert on it.
log = logging.getLogger("statesaga.recovery")

#: Open states whose progress depends on a live worker (their heartbeat is what tells).
STALE_STATES = WORKFLOW_IN_FLIGHT
#: Parked states recovery always picks up, whatever their heartbeat.
PARKED_STATES = WORKFLOW_PAUSED


class Operated(Protocol):
    """What recovery asks of an engine: its public API (statesaga.engine.Engine is one)."""

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Clock: ...

    def get(self, workflow_id: str) -> WorkflowState: ...

    def has_ended(self, status: str) -> bool: ...

    def resume(self, workflow_id: str, *, by: str | None = None) -> WorkflowState: ...

    def cancel(
        self, workflow_id: str, *, force: bool = False, by: str | None = None
    ) -> WorkflowState: ...


class RecoveryAction(StrEnum):
    RESUME = "resume"
    CANCEL = "cancel"


def get_recoverable_workflows(
    store: Store,
    timeout: float,
    session_id: str | None = None,
    *,
    clock: Clock | None = None,
) -> list[WorkflowState]:
    """RUNNING / CANCELLING / COMPENSATING workflows whose heartbeat is older than `timeout`
    seconds (or missing), plus every SUSPENDED one; oldest first, each listed once."""
    clock = clock or store_clock(store)  # the clock the heartbeats were written by
    cutoff = heartbeat_cutoff(clock, timeout)
    found: dict[str, WorkflowState] = {}
    for wf in store.list_stale(cutoff, STALE_STATES):
        found[wf.id] = wf
    for status in PARKED_STATES:
        for wf in store.list(session_id=session_id, status=status):
            found.setdefault(wf.id, wf)
    now = clock.now()
    out = [
        wf
        for wf in found.values()
        if (session_id is None or wf.session_id == session_id) and not _only_waiting(wf, now)
    ]
    return sorted(out, key=lambda wf: (wf.created_at, wf.id))


def _only_waiting(wf: WorkflowState, now: datetime) -> bool:
    """A RUNNING workflow whose only open work is waits not yet due (a signal, a sleep) has no
    worker to lose: its heartbeat is stale because nothing runs. Once a wait's due time has
    passed, its timer should have fired, so the workflow is recoverable again."""
    if wf.status is not WorkflowStatus.RUNNING:
        return False
    waiting = [s for s in wf.steps if s.status is StepStatus.WAITING]
    if not waiting or any(s.status in STEP_BUSY for s in wf.steps):
        return False
    return all(s.next_attempt_at is None or s.next_attempt_at > now for s in waiting)


def looks_lost(wf: WorkflowState, now: datetime, timeout: float) -> bool:
    """Would a scan with this timeout take the workflow as lost? In flight, its heartbeat
    older than `timeout` seconds (or missing), and not merely waiting for a signal or time."""
    if wf.status not in STALE_STATES:
        return False
    beat = wf.heartbeat_at
    stale = beat is None or (now - beat).total_seconds() > timeout
    return stale and not _only_waiting(wf, now)


@dataclass
class RecoveryReport:
    """What one scan did: ids resumed or cancelled, and the ids that could not be handled."""

    resumed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def handled(self) -> int:
        return len(self.resumed) + len(self.cancelled)


class Recovery:
    """Scans a store for lost workflows and resumes (or cancels) each one through an Engine.

    `timeout` must exceed the workers' heartbeat interval by a margin: a workflow whose handler
    is running has its heartbeat refreshed every `Engine.heartbeat_interval` seconds, and one
    that is merely waiting in a queue is harmlessly re-enqueued (the attempt token lets one
    copy of a job claim the attempt; the other is ignored as stale).
    """

    def __init__(
        self,
        engine: Operated,
        *,
        timeout: float = 30.0,
        action: RecoveryAction | str = RecoveryAction.RESUME,
        by: str = "recovery",
    ) -> None:
        self.engine = engine
        self.timeout = timeout
        self.action = RecoveryAction(action)
        self.by = by

    def scan(self, session_id: str | None = None) -> list[WorkflowState]:
        return get_recoverable_workflows(
            self.engine.store, self.timeout, session_id, clock=self.engine.clock
        )

    def recover(self, workflow_id: str) -> WorkflowState:
        """Resume one workflow, or cancel it: forced, since the step in flight belongs to a
        lost worker and would never finish; then resumed, so that lost attempt is timed out
        and undone and the compensations the queue lost are put back."""
        if self.action is RecoveryAction.RESUME:
            return self.engine.resume(workflow_id, by=self.by)
        wf = self.engine.get(workflow_id)
        if wf.status is not WorkflowStatus.COMPENSATING:
            wf = self.engine.cancel(workflow_id, force=True, by=self.by)
        if self.engine.has_ended(wf.status.value):
            return wf  # past the pivot a cancel halts it (FAILED, with the reason)
        return self.engine.resume(workflow_id, by=self.by)

    def run_once(self, session_id: str | None = None) -> RecoveryReport:
        report = RecoveryReport()
        for wf in self.scan(session_id):
            try:
                self.recover(wf.id)
            except StatesagaError as exc:
                if is_outage(exc):
                    # A full disk or a store gone refuses every workflow alike: the pass
                    # ends, and `recover --every` waits for it as for an outage (one line,
                    # backing off) where it printed a "skipped" line per workflow per pass.
                    raise
                # Finished or changed since the scan (a worker came back): nothing to recover.
                log.info("recovery of %s skipped: %s", wf.id, exc)
                report.errors[wf.id] = str(exc)
                continue
            target = report.resumed if self.action is RecoveryAction.RESUME else report.cancelled
            target.append(wf.id)
            log.info("%s %s (was %s)", self.action.value, wf.id, wf.status.value)
        return report

    def run_forever(
        self,
        every: float,
        *,
        session_id: str | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Scan every `every` seconds until `stop` is set."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.run_once(session_id)
            except Exception as exc:  # a store outage must not end the loop; the next scan retries
                if is_outage(exc):  # unreachable, paused, a full disk: no traceback
                    log.warning("recovery scan failed: %s: %s", type(exc).__name__, exc)
                else:
                    log.exception("recovery scan failed")
            stop.wait(every)


def recover_all(
    engine: Operated,
    ids: Iterable[str],
    action: RecoveryAction | str = RecoveryAction.RESUME,
) -> RecoveryReport:
    """Resume or cancel the given workflows, whatever their heartbeat says."""
    recovery = Recovery(engine, timeout=0.0, action=action)
    report = RecoveryReport()
    for workflow_id in ids:
        try:
            recovery.recover(workflow_id)
        except StatesagaError as exc:
            report.errors[workflow_id] = str(exc)
            continue
        (report.resumed if recovery.action is RecoveryAction.RESUME else report.cancelled).append(
            workflow_id
        )
    return report


__all__ = [
    "PARKED_STATES",
    "Operated",
    "STALE_STATES",
    "Recovery",
    "RecoveryAction",
    "RecoveryReport",
    "get_recoverable_workflows",
    "looks_lost",
    "recover_all",
    "recover_every",
]


def recover_every(
    recovery: Recovery,
    scan_once: Callable[[], object],
    interval: float,
    session_id: str | None = None,
    *,
    stop: threading.Event | None = None,
    fatal: tuple[type[BaseException], ...] = (),
) -> None:
    """`statesaga recover --every S`: call `scan_once` (a `run_once` and whatever its caller
    does with the report) every `interval` seconds until `stop` is set, riding out store and
    queue outages: one log line when one starts and one when it ends, retries backing off in
    between. After an outage, no heartbeat could be written: the live workers get one
    `recovery.timeout` to beat again before their workflows are taken for lost.

    An outage never ends the loop, nor does a bug in one scan (logged with its traceback);
    bad settings do (a refused store, a bad URL: a StatesagaError), as do the `fatal`
    exceptions the caller names (a command's usage error), raised to the caller."""
    from .outage import Outage, is_outage

    outage = Outage("recovery loop")
    stop = stop or threading.Event()
    disk_full = False
    while not stop.is_set():
        try:
            if outage.down and not disk_full:
                recovery.scan(session_id)  # read-only: is the store back?
                outage.ok()
                stop.wait(recovery.timeout)
                continue
            # A full disk still reads: only a pass that writes tells it has space again
            # (a read-only probe called it back on every pass, one warning each).
            scan_once()
        except fatal:
            raise
        except Exception as exc:
            if is_outage(exc):
                disk_full = isinstance(exc, StoreFullError)
                stop.wait(outage.failed(exc))
                continue
            if isinstance(exc, StatesagaError):
                raise
            log.exception("recovery scan failed")
        outage.ok()
        stop.wait(interval)
