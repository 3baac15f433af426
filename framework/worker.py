"""`statesaga worker`: an RQ worker process that runs step and compensation jobs.

One Engine per process, built at start-up from a store URL, an `rq://` queue URL and the
handler modules named on the command line. Those modules are an explicit allow-list: a worker
never imports a module because a stored document or a job names it, so what runs on a worker
is decided by whoever starts it, not by whoever can write to Redis or the store.

Every RQ job calls `run_job(payload)` with the statesaga job's dict (RQ's JSONSerializer on
both sides, never pickle). `run_job` hands it to the runner of the worker serving in this
process; the runner is kept in a ContextVar rather than a global, so a test (or the queue
conformance suite) can serve jobs to its own runner in-process.

Why `rq.SimpleWorker` (jobs run in the worker process) rather than the forking `rq.Worker`:
a fork per job costs more than a whole saga step does here (see benchmarks/rq_throughput.py),
and a forked child would inherit the engine's open store connections (SQLite connections must
not cross a fork). A step that overruns is still bounded: the engine's own timeout fails the
step first, and RQ's job timeout (the step's timeout plus a margin) is the backstop. A worker
that dies mid-step leaves the step EXECUTING with a heartbeat that goes stale, which is what
recovery looks for.

SIGTERM (or Ctrl+C) is RQ's warm shutdown: the step in flight finishes and is saved, then the
worker exits; a second signal is a cold shutdown.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .engine import Engine
from .errors import AdapterError, StatesagaError
from .plugins import DEFAULT_STORE, open_queue, open_store
from .ports import Job, JobRunner
from .registry import Registry

if TYPE_CHECKING:
    import rq

log = logging.getLogger("statesaga.worker")

DEFAULT_WORKER_QUEUE = "rq://127.0.0.1:6379/0?queue=statesaga"

_runner: ContextVar[JobRunner | None] = ContextVar("statesaga_job_runner", default=None)


def run_job(payload: dict[str, Any]) -> None:
    """The function every RQ job of statesaga calls (`statesaga.worker.run_job`)."""
    runner = _runner.get()
    if runner is None:
        raise StatesagaError(
            "statesaga.worker.run_job was called outside a statesaga worker: "
            "start workers with `statesaga worker`, not `rq worker`"
        )
    runner(Job.from_dict(payload))


@contextmanager
def serving(runner: JobRunner) -> Iterator[None]:
    """Make `run_job` in this context hand jobs to `runner`."""
    token = _runner.set(runner)
    try:
        yield
    finally:
        _runner.reset(token)


@dataclass
class WorkerSettings:
    """What `statesaga worker` is started with."""

    queue_url: str = DEFAULT_WORKER_QUEUE
    store_url: str = DEFAULT_STORE
    handlers: Sequence[str] = field(default_factory=list)
    burst: bool = False
    with_scheduler: bool = False
    heartbeat: float = 5.0
    name: str | None = None
    log_level: str = "INFO"
    #: A chart file extending the step lifecycle, for sagas that name one (`step_lifecycle:`).
    step_chart: str | None = None
    #: Run the step a settle claims in this process at once (Engine.eager); False sends every
    #: step through the queue, so queued workflows take turns step by step.
    eager: bool = True


def worker_name() -> str:
    # RQ needs names unique among live workers; host and pid make it findable in `rq info`.
    return f"statesaga.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


def build_engine(settings: WorkerSettings, name: str) -> Engine:
    """The process's engine: the store, the RQ queue and the allow-listed handler modules."""
    registry = Registry()
    for module in settings.handlers:
        try:
            registry.register_module(module)
        except ImportError as exc:
            raise AdapterError(f"handler module {module!r} cannot be imported: {exc}") from None
    store = open_store(settings.store_url)
    queue = open_queue(settings.queue_url)
    return Engine(
        store,
        queue,
        registry,
        worker=name,
        heartbeat_interval=settings.heartbeat,
        step_chart=settings.step_chart,
        eager=settings.eager,
    )


def rq_queue_of(engine: Engine) -> rq.Queue:
    """The rq.Queue behind the engine's queue adapter (a worker needs a real RQ queue)."""
    rq_queue = getattr(engine.queue, "rq_queue", None)
    if rq_queue is None:
        raise AdapterError(
            "statesaga worker needs an rq:// queue URL (e.g. rq://127.0.0.1:6379/0?queue=statesaga)"
        )
    return rq_queue  # type: ignore[no-any-return]


def make_rq_worker(rq_queue: rq.Queue, name: str | None = None) -> rq.SimpleWorker:
    """An RQ SimpleWorker on `rq_queue` with the serializer the queue adapter writes with."""
    from rq import SimpleWorker

    return SimpleWorker(
        [rq_queue],
        connection=rq_queue.connection,
        serializer=rq_queue.serializer,
        name=name or worker_name(),
    )


def run_worker(settings: WorkerSettings) -> bool:
    """Serve jobs until stopped (or, with `burst`, until the queue is empty).

    Returns True when at least one job was run.
    """
    name = settings.name or worker_name()
    engine = build_engine(settings, name)
    if not settings.handlers:
        log.warning("no --handlers given: every step will fail with an unknown handler")
    # Fail now on an unreachable store, not on the first job. Then drop the connections: RQ
    # forks its scheduler process after this, and a forked child must not inherit a SQLite
    # connection. Stores reconnect on first use.
    engine.store.initialize()
    engine.store.close()
    worker = make_rq_worker(rq_queue_of(engine), name)
    stop = worker.request_stop

    def request_stop(signum: int, frame: Any) -> None:
        # A warm shutdown takes nothing new: the step in flight settles and its next step goes
        # to the queue for another worker instead of being claimed and run here.
        engine.eager = False
        stop(signum, frame)  # type: ignore[no-untyped-call]

    worker.request_stop = request_stop  # type: ignore[method-assign]
    log.info(
        "worker %s: queue %s, store %s, handlers %s",
        name,
        worker.queues[0].name,
        _redact(settings.store_url),
        ", ".join(engine.registry.handler_names) or "none",
    )
    try:
        with serving(engine.run_job):
            return worker.work(
                burst=settings.burst,
                with_scheduler=settings.with_scheduler,
                logging_level=settings.log_level,
            )
    finally:
        engine.store.close()
        engine.queue.close()


def _redact(url: str) -> str:
    """A URL without its password, for logs."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


__all__ = [
    "WorkerSettings",
    "build_engine",
    "make_rq_worker",
    "run_job",
    "run_worker",
    "serving",
]
