"""Workers and queues as an operator looks at them: which workers are alive and what each
runs, how deep each queue is, what is delayed, failed or quarantined, who holds the scheduler.

A queue adapter that can tell implements `Inspectable` (RQ does); the dashboard's workers page,
its `/api/workers` and `/api/queues`, and the worker's metrics read the same `Fleet`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from ..errors import StateError
from ..models import StepStatus, WorkflowStatus
from ..ports import Queue, Store


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
        return sum(1 for w in self.workers if w.state == "busy")

    @property
    def idle(self) -> int:
        return len(self.workers) - self.busy

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


def fleet_of_queue(queue: Queue, failed_limit: int = 50) -> Fleet:
    """The fleet behind a queue: what it says of itself, or what applies to it."""
    if isinstance(queue, Inspectable):
        return queue.inspect(failed_limit)
    kind = type(queue).__name__
    if queue.in_process:
        return Fleet("inline", note=IN_PROCESS_NOTE)
    return Fleet(kind, note=f"The queue {kind} cannot describe its workers and queues.")


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
]
