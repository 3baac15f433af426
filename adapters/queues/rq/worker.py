"""Serving an `rq://` queue: the RQ side of `statesaga worker` (RQQueue.serve).

Jobs run in RQ SimpleWorkers guarded by statesaga.adapters.queues.rq.jobguard (JSON only,
statesaga's job function only), each handing its job to `statesaga.worker.run_job` and so to the
runner serving in this process.

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
A Redis outage does not end the worker (`work_through_outages`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from statesaga.adapters.queues.rq.jobguard import GuardedScheduler, GuardedWorker, guarded_worker
from statesaga.ports import JobRunner, ServeOptions
from statesaga.runtime.outage import Outage
from statesaga.worker import serving, worker_name

if TYPE_CHECKING:
    import rq

log = logging.getLogger("statesaga.worker")

#: Seconds at most between a worker's (and its scheduler's) pings of a Redis that is down: one
#: connection attempt each, so a worker is back within 2 s of Redis (with the default 15 s
#: ceiling, a worker idle through a 16 s outage took a saga 8 s after Redis was up).
OUTAGE_CEILING = 2.0


def make_rq_worker(rq_queue: rq.Queue, name: str | None = None) -> GuardedWorker:
    """An RQ SimpleWorker on `rq_queue` that reads JSON only and runs statesaga's job function
    and nothing else (see statesaga.adapters.queues.rq.jobguard)."""
    return guarded_worker(rq_queue, name or worker_name())


def serve(rq_queue: rq.Queue, runner: JobRunner, options: ServeOptions) -> bool:
    """Run `rq_queue`'s jobs with `runner` here, with the scheduler thread when asked for,
    until a stop is requested or, with `burst`, the queue is empty. True when a job ran."""
    scheduler = SchedulerThread(rq_queue, options.name) if options.with_scheduler else None
    watch = None if options.with_scheduler or options.burst else SchedulerWatch(rq_queue)
    if watch is not None:
        watch.start()
    try:
        with serving(runner):
            if scheduler is not None and options.burst:
                # One promotion, and the lock goes at once: a burst worker killed mid-job must
                # not hold up the delayed jobs of the next one for the lock's lifetime.
                scheduler.promote_once()
                scheduler.release()
            elif scheduler is not None:
                scheduler.start()
            return work_through_outages(rq_queue, options)
    finally:
        if scheduler is not None:
            scheduler.stop()
        if watch is not None:
            watch.stop()


# -- riding out Redis outages (issue 15) ---------------------------------------------------
def work_through_outages(rq_queue: rq.Queue, options: ServeOptions) -> bool:
    """Run RQ workers on `rq_queue` one after another until one stops on request (SIGTERM,
    Ctrl+C) or, with `burst`, finds the queue empty.

    RQ's worker retries its blocking dequeue while Redis is down, but quits on a connection
    error anywhere else (its heartbeat, a job's bookkeeping, its own registration): after a
    Redis restart it would be gone. Here it is replaced by a fresh RQ worker (a new name: the
    old one may still be registered) once Redis answers; the outage is logged once. A job cut
    off by the outage is left to recovery: its step's heartbeat goes stale.
    """
    import redis

    name = options.name
    outage = Outage(f"worker {name}", ceiling=OUTAGE_CEILING, logger=log)
    stop = _StopSignal()
    worked = False
    attempt = 0
    while True:
        attempt += 1
        worker = make_rq_worker(rq_queue, name if attempt == 1 else f"{name}.{attempt}")
        stopped = _watch_stop_request(worker, options.on_stop)
        try:
            worked = worker.work(burst=options.burst, logging_level=options.log_level) or worked
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            outage.failed(exc)
        if options.burst or stopped.is_set():
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
        self.outage = Outage(f"scheduler {name}", ceiling=OUTAGE_CEILING, logger=log)

    def holds_lock(self) -> bool:
        got = self.queue.connection.eval(self._ACQUIRE, 1, self.lock_key, self.token, self.LOCK_TTL)
        return bool(got)

    def promote_once(self) -> bool:
        """Take (or keep) the lock and move every due job; False when another holds it."""
        if not self.holds_lock():
            return False
        self._rq.enqueue_scheduled_jobs()
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="statesaga-scheduler")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.release()

    def release(self) -> None:
        """Give up the lock if this scheduler holds it."""
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


class SchedulerWatch:
    """In a worker started without `--with-scheduler`: one WARNING line when delayed jobs (a
    retry after its backoff, a timer) are overdue and no worker holds the scheduler's lock.
    Such jobs wait, with nothing said anywhere but the dashboard's workers page, until a
    worker is started with the scheduler; their sagas sit RETRYING or WAITING meanwhile.
    Said again only after the queue has been fine in between."""

    #: Seconds a delayed job may be overdue before it is worth a line: a scheduler promotes
    #: every second, and one taking over from a holder that died waits out the lock's TTL.
    GRACE = SchedulerThread.LOCK_TTL + 5
    #: The first look comes soon (a worker started beside overdue jobs says so at once),
    #: then one every `interval`.
    FIRST = 2.0

    def __init__(self, rq_queue: rq.Queue, interval: float = 30.0) -> None:
        from rq.scheduler import RQScheduler

        self.queue = rq_queue
        self.interval = interval
        self.lock_key = RQScheduler.get_locking_key(rq_queue.name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said = False

    def overdue(self) -> str | None:
        """The line to log, or None: no job overdue, or a scheduler runs."""
        conn = self.queue.connection
        if conn.exists(self.lock_key):
            return None
        # Scores are due times by Redis's clock (statesaga.adapters.queues.rq.queue).
        seconds, _ = conn.time()
        late = int(conn.zcount(self.queue.scheduled_job_registry.key, 0, seconds - self.GRACE))
        if not late:
            return None
        return (
            f"queue {self.queue.name!r}: {late} delayed job(s) (retries after their backoff,"
            f" timers) overdue by more than {self.GRACE} s and no worker runs the scheduler:"
            " they wait until a worker is started with `statesaga worker --with-scheduler`"
        )

    def check(self) -> None:
        try:
            line = self.overdue()
        except Exception:  # Redis is down: the worker's own outage handling says so
            return
        if line is not None and not self._said:
            log.warning("%s", line)
        self._said = line is not None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, daemon=True, name="statesaga-scheduler-watch"
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        pause = self.FIRST
        while not self._stop.wait(pause):
            self.check()
            pause = self.interval


__all__ = ["SchedulerThread", "SchedulerWatch", "make_rq_worker", "serve", "work_through_outages"]
