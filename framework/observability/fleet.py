"""Workers and queues as an operator looks at them: which workers are alive and what each
runs, how deep each queue is, what is delayed, failed or quarantined, who holds the scheduler.

A queue adapter that can tell implements `Inspectable` (RQ does); the dashboard's workers page,
its `/api/workers` and `/api/queues`, and the worker's metrics read the same `Fleet`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from ..errors import StateError
from ..models import StepStatus, WorkflowState, WorkflowStatus
from ..ports import Queue, Store
from ..vocabulary import STEP_APPLYING, STEP_UNDOING


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    host: str
    pid: int | None
    #: RQ's word: `busy`, `idle`, `started`, `suspended`.
    state: str
    queues: tuple[str, ...]
    last_beat: datetime | None
    started_at: datetime | None = None
    #: What it runs now (read from its current job), when busy.
    workflow_id: str | None = None
    step: str | None = None
    kind: str | None = None
    attempt: int | None = None
    job_id: str | None = None
    #: The heartbeat of the saga it runs, from the store: RQ's own heartbeat does not move
    #: while an in-process job runs, so this is what tells a busy worker from a dead one.
    saga_beat: datetime | None = None
    #: Listed as busy, but the saga it runs has had no heartbeat for longer than the stuck
    #: threshold: the process has most likely died (SIGKILL, a lost host) and the queue keeps
    #: its entry until the entry's TTL runs out.
    silent: bool = False

    def beat(self) -> datetime | None:
        """Its latest sign of life, the queue's or its saga's."""
        beats = [b for b in (self.last_beat, self.saga_beat) if b is not None]
        return max(beats) if beats else None


@dataclass(frozen=True)
class QueueInfo:
    name: str
    #: Jobs ready to run, waiting for a worker.
    depth: int
    #: Jobs due later (a retry's backoff, a timer), in the scheduler's registry.
    delayed: int
    running: int
    failed: int
    #: Jobs refused unrun (malformed or not statesaga's), kept for inspection.
    quarantined: int
    #: The name that holds the scheduler's lock (None: no scheduler runs).
    scheduler: str | None


@dataclass(frozen=True)
class FailedJob:
    id: str
    queue: str
    failed_at: datetime | None
    #: The last line of why it failed (secrets masked).
    reason: str
    workflow_id: str | None = None
    step: str | None = None
    kind: str | None = None
    attempt: int | None = None
    #: A statesaga job (its function and argument are statesaga's): it may be requeued.
    requeueable: bool = False


@dataclass(frozen=True)
class Fleet:
    #: The queue's kind (`rq`, `inline`, ...).
    kind: str
    workers: tuple[WorkerInfo, ...] = ()
    queues: tuple[QueueInfo, ...] = ()
    failed: tuple[FailedJob, ...] = ()
    #: What applies, for a queue without workers of its own (inline://).
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers if w.state == "busy" and not w.silent)

    @property
    def silent(self) -> int:
        return sum(1 for w in self.workers if w.silent)

    @property
    def live(self) -> int:
        return len(self.workers) - self.silent

    @property
    def idle(self) -> int:
        return self.live - self.busy

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _jsonable(asdict(self))
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# mypy reads `statesaga` (the installed name) as untyped while it checks the source folder.
class RequeueRefused(StateError):  # type: ignore[misc]
    """Raised when a failed job cannot be requeued: not among the failed, or not a statesaga
    job (a job of another application, or one too malformed to read)."""


@runtime_checkable
class Inspectable(Protocol):
    """A queue that can describe its workers and queues, and put a failed job back."""

    def inspect(self, failed_limit: int = 50) -> Fleet: ...

    def requeue_failed(self, job_id: str) -> None: ...


IN_PROCESS_NOTE = (
    "This server runs the jobs itself (inline://), on a thread of its own: there are no "
    "workers to list, no queue depth to watch and nothing to requeue. A saga whose job was "
    "lost when a process stopped is resumed by `statesaga recover`."
)


def attention(store: Store, stuck_after: float = 30.0) -> dict[str, int]:
    """How many workflows need someone: `stuck` (in flight, no heartbeat for `stuck_after`
    seconds: `statesaga recover` would take them as lost) and `waiting_for_signal`. Reads
    the stale ones through the store's heartbeat index and the RUNNING ones in full."""
    from ..runtime.recovery import STALE_STATES, looks_lost

    now = datetime.now(UTC)
    stuck = sum(
        1
        for wf in store.list_stale(now - timedelta(seconds=stuck_after), STALE_STATES)
        if looks_lost(wf, now, stuck_after)
    )
    waiting = sum(
        1
        for wf in store.list(status=WorkflowStatus.RUNNING)
        if any(s.status is StepStatus.WAITING and s.kind == "wait" for s in wf.steps)
    )
    return {"stuck": stuck, "waiting_for_signal": waiting}


def fleet_of_queue(
    queue: Queue, failed_limit: int = 50, store: Store | None = None, stuck_after: float = 30.0
) -> Fleet:
    """The fleet behind a queue: what it says of itself, or what applies to it. With the
    store, each busy worker's liveness is judged by the heartbeat of the saga it runs."""
    if isinstance(queue, Inspectable):
        fleet = queue.inspect(failed_limit)
        return fleet if store is None else with_saga_beats(fleet, store, stuck_after)
    kind = type(queue).__name__
    if queue.in_process:
        return Fleet("inline", note=IN_PROCESS_NOTE)
    return Fleet(kind, note=f"The queue {kind} cannot describe its workers and queues.")


def with_saga_beats(
    fleet: Fleet, store: Store, stuck_after: float = 30.0, now: datetime | None = None
) -> Fleet:
    """The fleet with each busy worker's saga heartbeat, and `silent` set on a worker whose
    saga has not beaten for `stuck_after` seconds (the threshold that calls a saga stuck).
    A saga that cannot be read leaves its worker as the queue describes it."""
    from ..runtime.recovery import STALE_STATES

    now = now or datetime.now(UTC)
    workers = []
    for w in fleet.workers:
        if w.state != "busy" or not w.workflow_id:
            workers.append(w)
            continue
        try:
            wf = store.get(w.workflow_id)
        except Exception:  # a damaged or missing document: the queue's word stands
            workers.append(w)
            continue
        w = replace(w, saga_beat=wf.heartbeat_at if wf.status in STALE_STATES else wf.updated_at)
        latest = w.beat()
        silent = latest is not None and (now - latest).total_seconds() > stuck_after
        workers.append(_in_hand(replace(w, silent=silent), wf))
    return replace(fleet, workers=tuple(workers))


def _in_hand(w: WorkerInfo, wf: WorkflowState) -> WorkerInfo:
    """What the worker runs now: its job names the step it was given, but a worker runs the
    steps its own settle claims in the same job (eager dispatch), so the saga's history,
    which records who claimed each step, is the truth: its latest claim still in flight."""
    status = {st.name: st.status for st in wf.steps}
    for entry in reversed(wf.history):
        if entry.by != w.name or entry.step is None:
            continue
        # The step table's groups, not a list here: applying = a handler may be running.
        state = status.get(entry.step)
        if state in STEP_APPLYING:
            kind = "compensation" if state in STEP_UNDOING else "step"
            return replace(w, step=entry.step, kind=kind, attempt=entry.attempt)
        break
    return w


__all__ = [
    "IN_PROCESS_NOTE",
    "FailedJob",
    "Fleet",
    "Inspectable",
    "QueueInfo",
    "RequeueRefused",
    "WorkerInfo",
    "attention",
    "fleet_of_queue",
    "with_saga_beats",
]
