"""The transaction kernel: one event is load, fire on a working copy, save, then act outside.

Each event loads the instance, fires triggers on a working copy (the effects of each
transition run on that copy and may ask for follow-up workflow triggers), saves with the
revision check, and only then runs what the effects deferred (enqueue, notify, listeners). If
the save loses the revision check nothing happened and the event is re-evaluated against the
new state, so replaying an event can never apply a transition twice. Everything else in the
runtime (commands, jobs) is an `apply` function handed to `Kernel.transact`, and a change
that fires no trigger goes through `Kernel.update`: this is the one load-modify-save loop.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from ..charts.machine import State, below_top, top
from ..errors import (
    ConflictError,
    InputError,
    NotFoundError,
    Problem,
    StateError,
    TransitionError,
)
from ..models import HistoryEntry, SagaStep, StepStatus, WorkflowState, WorkflowStatus
from ..ports import Clock, Job, Queue, Store
from ..security.limits import NOT_UNICODE, is_unicode
from .outage import is_pause, ride_out

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("statesaga.engine")
#: Transitions whose table names the `emit` effect are published here after the save.
events = logging.getLogger("statesaga.events")

_CONFLICT_RETRIES = 20
_FOLLOWUPS_MAX = 1000


@dataclass
class Txn:
    """The working copy of one event, and what its transitions asked for."""

    wf: WorkflowState
    by: str | None = None
    persist: bool = False
    deferred: list[Callable[[], None]] = field(default_factory=list)
    #: Jobs to enqueue once saved, with their delays (kept apart from other deferred actions
    #: so the runtime can run the next step itself; see Runtime.eager).
    jobs: list[tuple[Job, float]] = field(default_factory=list)
    #: The step this save also dispatched, run by this process right after it (Runtime.eager).
    claimed: Job | None = None
    followups: deque[str] = field(default_factory=deque)
    entries: list[HistoryEntry] = field(default_factory=list)
    emitted: list[HistoryEntry] = field(default_factory=list)
    #: A command's arguments for the effects of its transition (e.g. restart's from_step).
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TransitionContext:
    """What guards and effects see: the working copy (`txn`, `workflow`), the step (if any),
    the history entry of this transition, the time, the ports, and two ways to ask for more:
    `then` (a workflow trigger once this transition is done) and `fire_step`."""

    _kernel: Kernel
    txn: Txn
    step: SagaStep | None
    entry: HistoryEntry | None = None

    @property
    def workflow(self) -> WorkflowState:
        return self.txn.wf

    @property
    def now(self) -> datetime:
        return self._kernel.rt.clock.now()

    @property
    def store(self) -> Store:
        """For reads only: the event's own changes go on `workflow` and are saved by the
        kernel (a write here would be lost to the revision check)."""
        return self._kernel.rt.store

    @property
    def queue(self) -> Queue:
        return self._kernel.rt.queue

    @property
    def clock(self) -> Clock:
        return self._kernel.rt.clock

    def then(self, trigger: str) -> None:
        """Fire a workflow trigger once the current transition is done."""
        self.txn.followups.append(trigger)

    def fire_step(self, step: SagaStep, trigger: str, detail: str | None = None) -> None:
        self._kernel.fire(self.txn, step, trigger, detail)


class Kernel:
    """Runs events as transactions on a Runtime's store, charts and registry."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def create(self, wf: WorkflowState, apply: Callable[[Txn], None], by: str | None) -> None:
        """The first save of a new workflow: `apply` fires its first triggers, then it is
        created in the store (which refuses an id already there)."""
        texts(by=by, session_id=wf.session_id)
        txn = Txn(wf, by=by)
        apply(txn)
        self.followups(txn)
        wf.updated_at = self.rt.clock.now()
        try:
            self.rt.store.create(wf)
        except Exception as exc:
            if not is_pause(exc) or not self.created(wf):
                raise
        self.after_commit(txn)

    def command(
        self, workflow_id: str, apply: Callable[[Txn], bool], by: str | None
    ) -> WorkflowState:
        """An operator's event: `apply` always applies or raises."""
        texts(workflow_id=workflow_id, by=by)
        wf = self.transact(workflow_id, apply, by=by)
        assert wf is not None
        return wf

    def transact(
        self,
        workflow_id: str,
        apply: Callable[[Txn], bool],
        *,
        by: str | None = None,
        job: Job | None = None,
        first: WorkflowState | None = None,
    ) -> WorkflowState | None:
        """Load, apply on a working copy, save with the revision check, then run deferred
        effects. A lost revision check re-runs `apply` on the fresh document. Returns the saved
        document, or None when `apply` decided there was nothing to do. `first` is a document
        this process saved itself, used instead of the first read (its revision still checks
        that nothing was saved since)."""
        rt = self.rt
        for _ in range(_CONFLICT_RETRIES):
            # A pause of the store's server (seconds) is waited out, not an error.
            wf = first if first is not None else ride_out(read(rt.store, workflow_id), workflow_id)
            first = None
            txn = Txn(wf, by=by)
            if not apply(txn):
                return None
            self.followups(txn)
            if not txn.persist:
                self.after_commit(txn)
                return wf
            wf.updated_at = rt.clock.now()
            try:
                rt.store.save(wf)
            except ConflictError:
                log.debug("revision conflict on %s, re-evaluating", workflow_id)
                continue
            except Exception as exc:
                if not is_pause(exc):
                    raise
                if not self.landed(wf):
                    log.info("save of %s cut off by a pause, re-evaluating", workflow_id)
                    continue
                # Else the server ran the save after the client stopped waiting (a pause).
            if (
                rt.probe is not None
                and job is not None
                and (txn.deferred or txn.jobs or txn.claimed)
            ):
                rt.probe("after_save", job)
            self.after_commit(txn)
            return wf
        raise ConflictError(workflow_id, None, None)

    def landed(self, wf: WorkflowState) -> bool:
        """After a save cut off by a pause: whether the store applied it anyway, as a server
        does with commands sent before it paused. Waits for the store (`ride_out`); False when
        it did not, and the event is to be re-evaluated on the stored document."""
        stored = ride_out(read(self.rt.store, wf.id), wf.id)
        if stored.revision == wf.revision + 1 and stored.updated_at == wf.updated_at:
            wf.revision = stored.revision  # the microsecond of this save: no other writer's
            return True
        return False

    def created(self, wf: WorkflowState) -> bool:
        """After a create cut off by a pause: whether it landed (as `landed`), else create it
        now; False when another document holds the id."""
        try:
            stored = ride_out(read(self.rt.store, wf.id), wf.id)
        except NotFoundError:
            ride_out(lambda: self.rt.store.create(wf), wf.id)
            return True
        if stored.updated_at == wf.updated_at:
            wf.revision = stored.revision
            return True
        return False

    def update(self, workflow_id: str, mutate: Callable[[WorkflowState], bool]) -> WorkflowState:
        """A change no trigger makes (e.g. attaching a compensation through the origin API):
        `mutate` changes the loaded document and says whether there is anything to save. It
        is saved with the revision check like any event, and re-run on the fresh document if
        the check fails. Returns the document as saved (or as read, with nothing to save)."""

        def apply(txn: Txn) -> bool:
            txn.persist = mutate(txn.wf)
            return True

        wf = self.transact(workflow_id, apply)
        assert wf is not None
        return wf

    def fire(
        self, txn: Txn, step: SagaStep | None, trigger: str, detail: str | None = None
    ) -> None:
        """Fire one trigger on the workflow (step None) or a step, and run its effects."""
        rt = self.rt
        wf = txn.wf
        compiled = rt.workflow_chart if step is None else rt.step_chart
        holder: WorkflowState | SagaStep = wf if step is None else step
        source = full_state(holder.status.value, holder.substate)
        ctx = TransitionContext(self, txn, step)
        spec, reached = compiled.fire_to(source, trigger, ctx)
        now = rt.clock.now()
        dest = top(reached)
        holder.substate = below_top(reached)
        if step is None:
            wf.status = WorkflowStatus(dest)
            if dest in rt.ended_states:
                wf.finished_at = now
        else:
            step.status = StepStatus(dest)
        entry = HistoryEntry(
            at=now,
            chart=compiled.name,
            trigger=trigger,
            source=label(source),
            dest=label(reached),
            step=step.name if step else None,
            attempt=step.attempts if step else None,
            by=txn.by,
            detail=detail,
        )
        wf.record(entry)  # bounded: repeats fold past the history limit
        txn.entries.append(entry)
        ctx.entry = entry
        for ref in spec.effects:
            deferred = rt.registry.get_effect(ref.name).func(ctx, **ref.args)
            if deferred is not None:
                txn.deferred.append(deferred)
        if step is not None:
            entry.attempt = step.attempts  # `dispatch` starts the next attempt in its effects

    def followups(self, txn: Txn) -> None:
        """Fire the workflow triggers the transitions of this event asked for, in order."""
        chart = self.rt.workflow_chart
        fired = 0
        while txn.followups:
            trigger = txn.followups.popleft()
            fired += 1
            if fired > _FOLLOWUPS_MAX:
                # A table (or a plugin's effect) that keeps asking for the next trigger would
                # grow the history without end in one event: refuse to save it.
                raise StateError(
                    f"{txn.wf.id}: more than {_FOLLOWUPS_MAX} workflow triggers in one event "
                    f"(the last: {trigger!r} in {txn.wf.status.value}); the tables loop"
                )
            if not chart.can_fire(txn.wf.status.value, trigger):
                # A final workflow ignores late news (e.g. a step finishing after FAILED).
                log.info("%s: %s ignored in %s", txn.wf.id, trigger, txn.wf.status.value)
                continue
            try:
                self.fire(txn, None, trigger)
            except TransitionError as exc:
                log.info("%s: %s", txn.wf.id, exc)

    def after_commit(self, txn: Txn) -> None:
        """What the saved event does outside: waiters learn of it, its jobs are enqueued, its
        deferred effects run, `emit`ted transitions are logged and listeners see each one."""
        rt = self.rt
        rt.observer.saved(txn.wf)
        for queued, delay in txn.jobs:
            stamped = rt.telemetry.stamp(queued, delay, txn.wf)
            # Sent again after a pause: a job that went out twice runs once (its token).
            ride_out(partial(rt.queue.enqueue, stamped, delay), txn.wf.id)
        for action in txn.deferred:
            action()
        for entry in txn.emitted:
            events.info(
                "%s %s%s: %s -> %s",
                txn.wf.id,
                entry.chart,
                f" {entry.step}" if entry.step else "",
                entry.source,
                entry.dest,
            )
        rt.observer.notify(txn.wf, txn.entries)


def read(store: Store, workflow_id: str) -> Callable[[], WorkflowState]:
    """The read of a workflow from a store, as `ride_out` calls it."""
    return lambda: store.get(workflow_id)


def full_state(status: str, substate: list[str]) -> State:
    """The state a chart fires from: the status, or the paths of its active sub-states."""
    if not substate:
        return status
    paths = [f"{status}.{sub}" for sub in substate]
    return paths[0] if len(paths) == 1 else paths


def label(state: State) -> str:
    """A state as the history writes it (parallel leaves joined by commas)."""
    return state if isinstance(state, str) else ",".join(state)


def texts(**fields: str | None) -> None:
    """Refuse, before anything is read or written, a command's text that no store can keep
    (a lone surrogate: Python's reading of bytes that are not UTF-8, from a file name, argv
    or the environment). Stored, it failed the save with a serialization error; as an id,
    the store's lookup raised."""
    problems = [
        Problem(NOT_UNICODE, name)
        for name, value in fields.items()
        if value is not None and not is_unicode(value)
    ]
    if problems:
        raise InputError(problems)
