"""`statesaga worker`: a process that serves a queue's step and compensation jobs.

One Engine per process, built at start-up from a store URL, a queue URL and the handler
modules named on the command line. Those modules are an explicit allow-list: a worker never
imports a module because a stored document or a job names it, so what runs on a worker is
decided by whoever starts it, not by whoever can write to the queue or the store.

The queue adapter serves its jobs (the `WorkerQueue` port: RQ's is
statesaga.adapters.queues.rq.worker, with its job guard and its scheduler thread); this module knows
no queue technology. A queue whose jobs run where they are enqueued (`inline://`) has nothing
to serve. `statesaga worker --processes N` keeps N workers running (statesaga.cli.supervisor).

Every job of a worker queue calls `run_job(payload)` (`JOB_FUNCTION`, the name stored jobs
hold: it never moves) with the statesaga job's dict. `run_job` hands it to the runner serving
in this process; the runner is kept in a ContextVar rather than a global, so a test (or the
queue conformance suite) can serve jobs to its own runner in-process.
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
from typing import Any

from .app import EngineOptions
from .engine import Engine
from .errors import AdapterError, StatesagaError
from .plugins import DEFAULT_STORE
from .ports import Job, JobRunner, ServeOptions, WorkerQueue
from .security.allowlist import AllowList
from .security.redact import RedactedRepr, redact

log = logging.getLogger("statesaga.worker")

DEFAULT_WORKER_QUEUE = "rq://127.0.0.1:6379/0?queue=statesaga"
#: The dotted name of `run_job`, which every queued job names: jobs stored by any version
#: hold it, so it stays this module's and this name.
JOB_FUNCTION = "statesaga.worker.run_job"

_runner: ContextVar[JobRunner | None] = ContextVar("statesaga_job_runner", default=None)


def run_job(payload: dict[str, Any]) -> None:
    """The function every queued job of statesaga calls (`statesaga.worker.run_job`)."""
    runner = _runner.get()
    if runner is None:
        raise StatesagaError(
            "statesaga.worker.run_job was called outside a statesaga worker: "
            "start workers with `statesaga worker`, not `rq worker`"
        )
    job = Job.from_dict(payload)
    try:
        runner(job)
    except Exception as exc:
        from .runtime.outage import is_outage

        if not is_outage(exc):
            raise
        # The store or the queue is gone for longer than a pause, or its disk is full: the
        # step's heartbeat goes stale and recovery resumes it. One line, not a traceback.
        log.warning(
            "%s job %s %s attempt %s cut off (%s: %s); recovery resumes it",
            job.kind,
            job.workflow_id,
            job.step,
            job.attempt,
            type(exc).__name__,
            exc,
        )


@contextmanager
def serving(runner: JobRunner) -> Iterator[None]:
    """Make `run_job` in this context hand jobs to `runner`."""
    token = _runner.set(runner)
    try:
        yield
    finally:
        _runner.reset(token)


@dataclass(repr=False)
class WorkerSettings(RedactedRepr):
    """What `statesaga worker` is started with (repr() masks the URLs' passwords)."""

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
    #: The operator's allow-list of handler modules (default: `handlers` and installed
    #: packages' statesaga.handlers entry points).
    allowed: AllowList | None = None
    #: Run the step a settle claims in this process at once (Engine.eager); False sends every
    #: step through the queue, so queued workflows take turns step by step.
    eager: bool = True
    #: Serve this worker's metrics (and the fleet's gauges) for Prometheus on this port.
    metrics_port: int | None = None
    metrics_host: str | None = None


def worker_name() -> str:
    """A name unique among live workers (RQ's `rq info` lists them); host and pid make a
    worker findable."""
    return f"statesaga.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


def build_engine(settings: WorkerSettings, name: str) -> Engine:
    """The process's engine: the allow-listed handler modules (the operator's list when
    `settings.allowed` is given, else `handlers` and installed packages'), the store, the RQ
    queue (statesaga.app)."""
    return EngineOptions(
        store=settings.store_url,
        queue=settings.queue_url,
        handlers=settings.handlers,
        allow="listed",
        allowed=settings.allowed,
        worker=name,
        heartbeat=settings.heartbeat,
        step_chart=settings.step_chart,
        eager=settings.eager,
    ).build()


def run_worker(settings: WorkerSettings) -> bool:
    """Serve jobs until stopped (or, with `burst`, until the queue is empty), riding out
    outages of the queue's server (each queue adapter's `serve`).

    Returns True when at least one job was run.
    """
    name = settings.name or worker_name()
    engine = build_engine(settings, name)
    if not engine.allowed.modules:
        log.warning("no handler module is allowed: every step will fail with an unknown handler")
    # Fail now on an unreachable store, not on the first job. Stores reconnect on first use.
    engine.store.initialize()
    engine.store.close()
    queue = engine.queue
    if not isinstance(queue, WorkerQueue):
        raise AdapterError(
            "statesaga worker needs an rq:// queue URL (e.g. rq://127.0.0.1:6379/0?queue=statesaga)"
            " or an sqlq:// one (e.g. sqlq:///statesaga.db, no Redis)"
        )
    log.info(
        "worker %s: queue %s, store %s, handlers %s",
        name,
        queue.name,
        redact(settings.store_url),
        ", ".join(engine.registry.handler_names) or "none",
    )
    _watch_metrics(settings, engine)
    options = ServeOptions(
        name=name,
        burst=settings.burst,
        with_scheduler=settings.with_scheduler,
        log_level=settings.log_level,
        on_stop=engine.stop_eager,
    )
    try:
        return queue.serve(engine.run_job, options)
    finally:
        engine.store.close()
        engine.queue.close()


def _watch_metrics(settings: WorkerSettings, engine: Engine) -> None:
    """With metrics on (any exporter: OTLP, Prometheus, console), the fleet's gauges too: the
    queue's depth, the live workers, the workflows stuck or waiting for a signal, read at each
    collection; and with a metrics port, the Prometheus page on it."""
    from .observability.metrics import metrics_on

    if not metrics_on():
        if settings.metrics_port is not None:
            raise StatesagaError(
                "--metrics-port needs the OpenTelemetry SDK and its Prometheus reader: "
                "pip install 'statesaga[otel]'"
            )
        return
    from .observability.fleet import attention, fleet_of_queue
    from .observability.metrics import watch_fleet

    queue, store = engine.queue, engine.store
    watch_fleet(lambda: fleet_of_queue(queue, store=store), lambda: attention(store))
    if settings.metrics_port is not None:
        from .observability.otel import serve_prometheus

        url = serve_prometheus(settings.metrics_port, settings.metrics_host)
        log.info("metrics for Prometheus at %s", url)


__all__ = [
    "JOB_FUNCTION",
    "WorkerSettings",
    "build_engine",
    "run_job",
    "run_worker",
    "serving",
    "worker_name",
]
