"""The ports the core needs from the outside world. Adapters implement them; the core never
imports an adapter (see plugins.py for how a URL picks one)."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable

from .models import WorkflowState, WorkflowStatus

#: A timer job fires a WAITING step's due time (a wait's timeout or a sleep's wake-up).
JobKind = Literal["step", "compensation", "timer"]


@dataclass(frozen=True)
class Job:
    """What travels on a queue: ids and small JSON only, never pickled objects.

    `attempt` is the attempt token: a job whose attempt is not the one the stored step expects
    is stale and ignored, so duplicates and zombies cannot apply twice.
    """

    kind: JobKind
    workflow_id: str
    step: str
    attempt: int
    timeout: float | None = None
    description: str = ""
    #: When it may run (epoch seconds), for the queue-wait metric; 0 when not measured.
    ready_at: float = 0.0
    #: W3C traceparent of its workflow's span: the attempt's span is its child (tracing on).
    trace: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The payload that travels."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """A job read from a queue, checked field by field. A payload can never widen what a
        job may do: `claimed` (which once skipped the claim) is refused unless false, as
        payloads stored by earlier versions carry it; every job now claims its step."""
        return cls(**_job_fields(data))


_JOB_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,),
    "workflow_id": (str,),
    "step": (str,),
    "attempt": (int,),
    "timeout": (int, float, type(None)),
    "description": (str,),
    "ready_at": (int, float),
    "trace": (str,),
}


def _job_fields(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"a job payload is a JSON object, not {type(data).__name__}")
    fields = dict(data)
    if fields.pop("claimed", False) is not False:
        raise ValueError("a job payload cannot say it is claimed")
    unknown = sorted(set(fields) - set(_JOB_TYPES))
    if unknown:
        raise ValueError(f"unknown job fields: {', '.join(map(repr, unknown))}")
    for name in ("kind", "workflow_id", "step", "attempt"):
        if name not in fields:
            raise ValueError(f"job field {name!r} is missing")
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, _JOB_TYPES[name]):
            raise TypeError(f"job field {name!r} has the wrong type: {type(value).__name__}")
    timeout = fields.get("timeout")
    if timeout is not None and not 0 < timeout < float("inf"):
        raise ValueError(f"job field 'timeout' must be a positive number of seconds: {timeout}")
    if not 0 <= fields.get("ready_at", 0) < float("inf"):
        raise ValueError(f"job field 'ready_at' must be a finite time: {fields['ready_at']}")
    if len(fields.get("trace", "")) > 128:
        raise ValueError("job field 'trace' is longer than a W3C traceparent")
    if fields["kind"] not in ("step", "compensation", "timer"):
        raise ValueError(f"unknown job kind {fields['kind']!r}")
    return fields


JobRunner = Callable[[Job], None]


@runtime_checkable
class Store(Protocol):
    """Persistence of workflow documents with optimistic concurrency.

    Contract (checked by statesaga.testing's store conformance suite):
    - create() stores a new document at revision 1 (sets wf.revision); an existing id raises
      ConflictError.
    - get() returns the stored document or raises NotFoundError.
    - save() succeeds only if wf.revision equals the stored revision, then stores it at
      revision + 1 (and sets wf.revision); otherwise ConflictError and nothing is written.
    - heartbeat() records a heartbeat time without changing the revision.
    - list() filters by session and/or status, oldest first; list_stale() returns workflows in
      one of `statuses` whose heartbeat is older than `before` (or missing).
    - exists() says whether the store is already there, without creating it.

    Optional features have a default here: an adapter subclasses this Protocol to inherit
    them (`plugins.open_store` refuses a store that lacks one), and overrides what it offers.
    """

    #: The documents the last listing skipped because they cannot be read (id: why), for
    #: the commands and pages that list to name them. Default: a store that never skips one.
    unreadable: Mapping[str, str] = MappingProxyType({})

    def location(self) -> str:
        """Where the store is, for a message (a file's path). Default: its URL said it."""
        return "that URL"

    def initialize(self) -> None: ...

    def exists(self) -> bool:
        """Whether the store is already there, so that a command that only reads may open it
        without creating it. A store on a server is there as far as opening it goes (whether
        the server answers is learnt on first use), which is this default; a store in a local
        file says whether its file exists."""
        return True

    def read_only(self) -> None:
        """From now on only read, called before first use by commands that only look (status,
        list, a diagram of an instance, a read-only dashboard): create nothing and write
        nothing, so they work while the store cannot write (a full disk). A store whose reads
        write nothing needs nothing (this default)."""

    def server_time(self) -> datetime | None:
        """The time by the store's own clock, which every process of the store shares
        (heartbeats, leases and due times are judged on it: statesaga.runtime.clock); None for
        a store with no clock of its own, such as a file on one host, whose processes share
        the host's clock. This default is None."""
        return None

    def create(self, wf: WorkflowState) -> None: ...

    def get(self, workflow_id: str) -> WorkflowState: ...

    def save(self, wf: WorkflowState) -> None: ...

    def heartbeat(self, workflow_id: str, at: datetime) -> None: ...

    def list(
        self,
        *,
        session_id: str | None = None,
        status: WorkflowStatus | None = None,
        limit: int | None = None,
    ) -> builtins.list[WorkflowState]: ...

    def list_stale(
        self, before: datetime, statuses: Iterable[WorkflowStatus]
    ) -> builtins.list[WorkflowState]: ...

    def close(self) -> None: ...


@runtime_checkable
class Browsable(Protocol):
    """A store that also pages newest first and counts per status without reading documents
    (an index on created_at; SQLite's). An optional capability beside the Store port: the
    dashboard and `statesaga list` ask `isinstance(store, Browsable)` and otherwise browse
    through `Store.list`; the Store conformance suite checks `browse` of a store that has it.

    Contract: `browse` returns workflows newest first (created_at, then id, descending),
    strictly older than `before` (created_at, id) when given, at most `limit`, leaving out
    (and naming in `unreadable`) a document that cannot be read, as `list` does;
    `count_by_status` counts under the same session and name filters, by status value.
    """

    def browse(
        self,
        *,
        session_id: str | None = None,
        status: WorkflowStatus | None = None,
        name: str | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> builtins.list[WorkflowState]: ...

    def count_by_status(
        self, *, session_id: str | None = None, name: str | None = None
    ) -> dict[str, int]: ...


def store_exists(store: Store) -> bool:
    """`store.exists()` (kept for callers of the 0.1 helper)."""
    return bool(store.exists())


@runtime_checkable
class Queue(Protocol):
    """Dispatch of step and compensation jobs.

    Contract: every enqueued job is eventually given to a runner once (at least once under
    crashes), not before `delay` seconds have passed.

    Optional features have a default here: an adapter subclasses this Protocol to inherit
    them (`plugins.open_queue` refuses a queue that lacks one), and overrides what it offers.
    """

    #: Its jobs run in the process that enqueues them (`inline://`): a command that sets
    #: work going waits for it here. Default: workers elsewhere run them.
    in_process: bool = False

    def check(self) -> None:
        """Raise AdapterError when the queue cannot be reached (checked before a workflow is
        stored). Default: nothing to reach."""
        return None

    def renew(self, job: Job) -> None:
        """This process is about to run `job` itself, claimed by the settle of the previous
        step (eager dispatch): a queue that bounds a job's run time gives it its own (RQ).
        Default: nothing to renew."""
        return None

    def worker_count(self) -> int | None:
        """How many workers listen on this queue now, or None when that is not a question
        (in-process queues) or cannot be told. Default: None."""
        return None

    def bind(self, runner: JobRunner) -> None:
        """Give the queue the function that runs a job (used by in-process queues)."""
        ...

    def enqueue(self, job: Job, delay: float = 0.0) -> None: ...

    def drain(self, until: Callable[[], bool], timeout: float | None = None) -> None:
        """Block until `until()` is true or no work is left (in-process queues run the jobs
        here; distributed queues wait for their workers)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ServeOptions:
    """How a worker process serves a queue (what `statesaga worker` was started with)."""

    #: The worker's name, unique among live workers (what the queue's tools list).
    name: str
    #: Return once the queue has nothing ready, instead of waiting for more.
    burst: bool = False
    #: Also move delayed jobs (retry backoffs) to the queue when they fall due.
    with_scheduler: bool = False
    log_level: str = "INFO"
    #: Called when a stop is requested (SIGTERM, Ctrl+C), before the job in flight finishes:
    #: the engine stops running next steps itself, so they go to the queue.
    on_stop: Callable[[], None] | None = None


@runtime_checkable
class WorkerQueue(Queue, Protocol):
    """A queue whose jobs worker processes take (`statesaga worker`), such as RQ on Redis.

    An in-process queue (`inline://`) is not one: its jobs run in the process that enqueues
    them, so it has nothing for a worker to serve.
    """

    #: The queue's name, as the queue's own tools show it.
    name: str

    def serve(self, runner: JobRunner, options: ServeOptions) -> bool:
        """Run the queue's jobs with `runner` in this process until a stop is requested or,
        with `options.burst`, until none is ready, riding out outages of the queue's server.
        Returns True when at least one job ran."""
        ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)
