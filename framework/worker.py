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

A worker forks nothing: `--with-scheduler` runs the scheduler as a thread (`SchedulerThread`),
so a SIGKILL leaves no process holding the worker's Redis connection or the scheduler lock.
A Redis outage does not end the worker (`serve`); `statesaga worker --processes N` keeps N of
them running (statesaga.cli.supervisor).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .app import EngineOptions
from .engine import Engine
from .errors import AdapterError, StatesagaError
from .plugins import DEFAULT_STORE
from .ports import Job, JobRunner
from .runtime.outage import Outage
from .security.allowlist import AllowList
from .security.redact import RedactedRepr, redact

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


def worker_name() -> str:
    # RQ needs names unique among live workers; host and pid make it findable in `rq info`.
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


def rq_queue_of(engine: Engine) -> rq.Queue:
    """The rq.Queue behind the engine's queue adapter (a worker needs a real RQ queue)."""
    rq_queue = getattr(engine.queue, "rq_queue", None)
    if rq_queue is None:
        raise AdapterError(
            "statesaga worker needs an rq:// queue URL (e.g. rq://127.0.0.1:6379/0?queue=statesaga)"
        )
    return rq_queue  # type: ignore[no-any-return]


def make_rq_worker(rq_queue: rq.Queue, name: str | None = None) -> rq.SimpleWorker:
    """An RQ SimpleWorker on `rq_queue` that reads JSON only and runs statesaga's job function
    and nothing else (see statesaga.jobguard)."""
    from .jobguard import guarded_worker

    return guarded_worker(rq_queue, name or worker_name())


def run_worker(settings: WorkerSettings) -> bool:
    """Serve jobs until stopped (or, with `burst`, until the queue is empty), riding out
    Redis outages: an RQ worker that quits because Redis went away is replaced by a new one
    once Redis answers again (see `serve`).

    Returns True when at least one job was run.
    """
    name = settings.name or worker_name()
    engine = build_engine(settings, name)
    if not engine.allowed.modules:
        log.warning("no handler module is allowed: every step will fail with an unknown handler")
    # Fail now on an unreachable store, not on the first job. Stores reconnect on first use.
    engine.store.initialize()
    engine.store.close()
    rq_queue = rq_queue_of(engine)
    log.info(
        "worker %s: queue %s, store %s, handlers %s",
        name,
        rq_queue.name,
        redact(settings.store_url),
        ", ".join(engine.registry.handler_names) or "none",
    )
    scheduler = SchedulerThread(rq_queue, name) if settings.with_scheduler else None
    try:
        with serving(engine.run_job):
            if scheduler is not None and settings.burst:
                scheduler.promote_once()
            elif scheduler is not None:
                scheduler.start()
            return serve(rq_queue, name, settings, on_stop=engine.stop_eager)
    finally:
        if scheduler is not None:
            scheduler.stop()
        engine.store.close()
        engine.queue.close()


# -- riding out Redis outages (issue 15) ---------------------------------------------------
def serve(
    rq_queue: rq.Queue,
    name: str,
    settings: WorkerSettings,
    on_stop: Callable[[], None] | None = None,
) -> bool:
    """Run RQ workers on `rq_queue` one after another until one stops on request (SIGTERM,
    Ctrl+C) or, with `burst`, finds the queue empty.

    RQ's worker retries its blocking dequeue while Redis is down, but quits on a connection
    error anywhere else (its heartbeat, a job's bookkeeping, its own registration): after a
    Redis restart it would be gone. Here it is replaced by a fresh RQ worker (a new name: the
    old one may still be registered) once Redis answers; the outage is logged once. A job cut
    off by the outage is left to recovery: its step's heartbeat goes stale.
    """
    import redis

    outage = Outage(f"worker {name}", logger=log)
    stop = _StopSignal()
    worked = False
    attempt = 0
    while True:
        attempt += 1
        worker = make_rq_worker(rq_queue, name if attempt == 1 else f"{name}.{attempt}")
        stopped = _watch_stop_request(worker, on_stop)
        try:
            worked = worker.work(burst=settings.burst, logging_level=settings.log_level) or worked
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            outage.failed(exc)
        if settings.burst or stopped.is_set():
            return worked
        with stop.installed():
            if not _wait_for_redis(rq_queue.connection, outage, stop):
                return worked


def _watch_stop_request(
    worker: rq.SimpleWorker, then: Callable[[], None] | None = None
) -> threading.Event:
    """An event set when `worker` gets SIGTERM / Ctrl+C (its warm shutdown), through the
    hook RQ calls for it: an idle RQ worker stops by raising, leaving no flag behind. `then`
    runs first (the engine stops claiming next steps, which go to the queue instead)."""
    stopped = threading.Event()
    hook: Callable[[], None] = worker.handle_warm_shutdown_request

    def on_stop() -> None:
        if then is not None:
            then()
        stopped.set()
        hook()

    worker.handle_warm_shutdown_request = on_stop  # type: ignore[method-assign]
    return stopped


class _StopSignal:
    """SIGTERM / SIGINT while no RQ worker is running: stop waiting and exit."""

    def __init__(self) -> None:
        self.event = threading.Event()

    @contextmanager
    def installed(self) -> Iterator[threading.Event]:
        if threading.current_thread() is not threading.main_thread():
            yield self.event
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, lambda *_: self.event.set())
        try:
            yield self.event
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _wait_for_redis(connection: Any, outage: Outage, stop: _StopSignal) -> bool:
    """Wait (backing off) until Redis answers a PING; False when a stop was requested."""
    pause = 1.0  # even when Redis answers at once: never restart a worker in a hot loop
    while not stop.event.wait(pause):
        try:
            connection.ping()
        except Exception as exc:  # redis-py's ConnectionError, TimeoutError, LOADING ...
            pause = outage.failed(exc)
            continue
        outage.ok()
        return True
    return False


class SchedulerThread:
    """Moves due delayed jobs (retries after their backoff) from RQ's ScheduledJobRegistry to
    the queue, in a thread of the worker process, instead of RQ's forked scheduler process.

    Why not RQ's: its scheduler is a forked child that outlives a SIGKILLed worker, keeps the
    worker's Redis connection (whose blocking dequeue then swallows the next job into RQ's
    intermediate list), and holds the scheduler lock for 61 s, which a new worker only tries
    to take at its ten-minute maintenance: retries waited minutes. A thread dies with its
    process, and the lock here lives `LOCK_TTL` seconds, refreshed every `interval`, so when
    its holder dies any other worker started with `--with-scheduler` takes over within
    seconds. The lock key is RQ's own, so this and RQ's scheduler never promote together.
    """

    #: Seconds the lock outlives its last refresh: how long due jobs may wait after the
    #: worker holding it dies.
    LOCK_TTL = 10

    _ACQUIRE = """
    local v = redis.call('GET', KEYS[1])
    if not v then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end
    if v == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1 end
    return 0
    """
    _RELEASE = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
    return 0
    """

    def __init__(self, rq_queue: rq.Queue, name: str, interval: float = 1.0) -> None:
        from rq.scheduler import RQScheduler

        from .jobguard import GuardedScheduler

        self.queue = rq_queue
        self.token = f"{name}.scheduler"
        self.interval = interval
        self.lock_key = RQScheduler.get_locking_key(rq_queue.name)
        # Guarded: a forged or unreadable scheduled job is set aside, not a stop of every
        # delayed job of the queue.
        self._rq = GuardedScheduler(
            [rq_queue], connection=rq_queue.connection, serializer=rq_queue.serializer
        )
        self._rq.prepare_registries([rq_queue.name])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.outage = Outage(f"scheduler {name}", logger=log)

    def holds_lock(self) -> bool:
        got = self.queue.connection.eval(self._ACQUIRE, 1, self.lock_key, self.token, self.LOCK_TTL)
        return bool(got)

    def promote_once(self) -> bool:
        """Take (or keep) the lock and move every due job; False when another holds it."""
        if not self.holds_lock():
            return False
        self._rq.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="statesaga-scheduler")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.queue.connection.eval(self._RELEASE, 1, self.lock_key, self.token)
        except Exception:  # Redis is down: the lock expires by itself
            pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.promote_once()
            except Exception as exc:  # an outage must not end the thread
                self._stop.wait(self.outage.failed(exc))
                continue
            self.outage.ok()
            self._stop.wait(self.interval)


__all__ = [
    "WorkerSettings",
    "build_engine",
    "make_rq_worker",
    "run_job",
    "run_worker",
    "serving",
]
