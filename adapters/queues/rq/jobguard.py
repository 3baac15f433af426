"""The job guard: what a `statesaga worker` accepts from its RQ queue: statesaga's own job,
nothing else.

RQ stores a job as a function name, arguments and callback names, and a plain RQ worker
imports and calls whatever name it reads (`rq.utils.import_attribute`), so anyone who can
write to the Redis could run code on every worker. A statesaga worker checks each job before
anything is imported or called, and refuses a job that

- is not JSON (statesaga writes with RQ's JSONSerializer; nothing read back is unpickled),
- names any function but `statesaga.worker.run_job`, or an instance to call it on,
- does not carry exactly one statesaga job payload (`Job.from_dict` accepts nothing else), or
- asks for callbacks, webhooks or dependencies (statesaga enqueues none: each would make RQ
  import a name or reach a URL the job chose).

A refused job is logged and moved, without being run, to the queue's FailedJobRegistry (what
`rq info` and rq-dashboard show as failed), with the reason as its error; one too malformed
for RQ to read at all goes to the list `statesaga:quarantine:QUEUE` instead of stopping the
worker.

`StatesagaJob` is the job class of the worker and of its queues (RQ's registry clean-up
fetches jobs with it too): its function resolves from a fixed table, never by import, and its
callbacks are always none, so even a path that skips the check cannot import a forged name.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import statesaga.adapters._redis_errors  # noqa: F401 (declares redis-py's errors to the core)
from rq import Queue, SimpleWorker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.utils import current_timestamp
from statesaga.adapters._redis_url import read_timeout
from statesaga.ports import Job
from statesaga.security.redact import redact
from statesaga.worker import JOB_FUNCTION, run_job

log = logging.getLogger("statesaga.worker")

#: The job function names a worker runs: the one statesaga enqueues (also the name of jobs
#: stored by earlier versions, which must keep working).
JOB_FUNCTIONS = (JOB_FUNCTION,)
#: What each of them runs: looked up here, never imported by name.
_RUN_JOB: Callable[[dict[str, Any]], None] = run_job


class StatesagaJob(RQJob):
    """An RQ job whose function comes from `JOB_FUNCTIONS`, never from an import."""

    @property
    def func(self) -> Callable[..., Any]:
        if self.func_name not in JOB_FUNCTIONS or self.instance is not None:
            raise PermissionError(f"job {self.id!r}: {refusal(self)}")
        return _RUN_JOB

    # RQ imports callback names when a job succeeds, fails, stops or is cleaned up.
    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    # RQ sends a job's webhooks (a request to a URL the job names) when it fails, also from
    # its clean-up of abandoned jobs and of jobs stuck between queue and worker, which never
    # pass `refusal`: a statesaga job has none, so one that names any is never sent.
    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        if self.webhooks:
            log.warning("job %r: its webhooks were not sent (statesaga sends none)", self.id)


def refusal(job: RQJob) -> str | None:
    """Why a worker must not run this job, or None for statesaga's own job."""
    try:
        name, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except DeserializationError:
        return "its payload is not JSON (a statesaga worker never unpickles)"
    if name not in JOB_FUNCTIONS:
        return f"it names the function {name!r}; a statesaga worker runs only {JOB_FUNCTIONS[0]}"
    if instance is not None:
        return "it names an instance to call the function on"
    if kwargs or len(args) != 1 or not isinstance(args[0], dict):
        return "its arguments are not one statesaga job payload"
    try:
        Job.from_dict(args[0])
    except (TypeError, ValueError) as exc:
        return f"its payload is not a statesaga job: {exc}"
    callbacks = [
        kind
        for kind in ("success", "failure", "stopped")
        if getattr(job, f"_{kind}_callback_name", None)
    ]
    if callbacks:
        return f"it asks for {'/'.join(callbacks)} callbacks"
    if getattr(job, "webhooks", None):
        return "it asks for webhooks"
    if job._dependency_ids:
        return "it depends on other jobs"
    return None


#: Seconds between the command listener's looks at its stop flag: what stopping it waits for
#: (RQ 3 waits up to its 60 s here, since redis-py 8 joins the listener's thread on stop).
PUBSUB_POLL = 1.0
#: Seconds a worker's teardown waits for that listener to end (one poll, with room for the
#: close that follows it).
UNSUBSCRIBE_WAIT = 3 * PUBSUB_POLL


def blocking_wait(read: float | None, rq_default: int) -> int:
    """Seconds an idle worker's blocking wait for a job lasts: RQ's own, unless the client's
    read timeout `read` is shorter; then half of it, so the server's empty answer always
    arrives before the client gives up on the read."""
    if read is None:
        return rq_default
    return max(1, min(rq_default, int(read // 2)))


@contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """Put back the SIGTERM / SIGINT handlers RQ's work loop installs and leaves behind, so
    a process that served a queue (a test, an application embedding a worker) is not left
    with a finished worker's, which raises SystemExit from whatever runs next."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def die_by(signum: int) -> NoReturn:
    """End this process by `signum`'s default action (its exit status says which signal),
    after writing out the logs; nothing else runs: no cleanup that a SIGKILL would skip."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # a signal whose default action is not to end the process


class GuardedWorker(SimpleWorker):
    """An RQ SimpleWorker that runs only statesaga's job (see the module docstring), whose
    idle waits and stops fit the Redis client's read timeout, on every redis-py version."""

    job_class = StatesagaJob
    _read_timeout: float | None = None
    # RQ doubles its wait between dequeue retries while Redis is down, up to 60 s: a worker
    # idle through a 16 s outage slept 15 s more with Redis back, and sagas waited for it.
    # Capped here at the pubsub thread's own 2 s, so a worker is back within 2 s of Redis.
    max_connection_wait_time = 2.0

    def _set_connection(self, connection: Any) -> Any:
        # RQ raises the pool's read timeout above its blocking wait for a job (405 s), but for
        # connections made from then on only: those the pool already holds (the queue's check,
        # the scheduler's) keep theirs, 5 s by default since redis-py 8, and the wait timed out
        # on them ("could not connect to Redis", then backoff up to 60 s). The wait is kept
        # under the read timeout instead (dequeue_timeout), and the client is left as built.
        self._read_timeout = read_timeout(connection)
        return connection

    @property
    def dequeue_timeout(self) -> int:
        return blocking_wait(self._read_timeout, super().dequeue_timeout)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        with _own_signal_handlers():
            worked: bool = super().work(*args, **kwargs)
        return worked

    def request_force_stop(self, signum: int, frame: Any) -> None:
        # RQ ignores a second signal within 1 s of the first (a duplicate its own worker pool
        # may send), then raises SystemExit wherever the main thread is: inside a job, RQ
        # logs it as the job's failure, traceback and all. Nothing here sends duplicates, so
        # a second signal means "now": the process ends as a killed worker would, by that
        # signal, and the step in flight is left to recovery (its heartbeat goes stale).
        self.log.warning(
            "Worker %s: cold shut down: the step in flight is left to recovery", self.name
        )
        die_by(signum)

    def subscribe(self) -> None:
        # RQ's, with a listener that looks at its stop flag every PUBSUB_POLL seconds.
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=PUBSUB_POLL, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def unsubscribe(self) -> None:
        # RQ's waits 1 s for a listener that reads for up to PUBSUB_POLL s and closes the
        # pubsub itself as it ends, then closes it too: on redis-py before 8.2 the two
        # closes raced (AttributeError on None in PubSub.reset, the worker's teardown
        # raising). The listener's own close is the one that counts; it is waited for.
        # Closing the connection ends the subscription, so no UNSUBSCRIBE is sent from
        # here while the listener still reads that socket.
        thread = self.pubsub_thread
        if thread is None:
            return
        self.log.info(
            "Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name
        )
        try:
            thread.stop(UNSUBSCRIBE_WAIT)  # redis-py 8.2 on: clears the flag, joins
        except TypeError:
            thread.stop()  # before 8.2: only clears the flag
        thread.join(timeout=UNSUBSCRIBE_WAIT)
        if thread.is_alive():
            # A listener stuck in a read past its own timeout: it closes the pubsub when it
            # gets out; closing it here as well is the race above. It is a daemon thread.
            self.log.warning(
                "Worker %s: the command listener did not stop within %.0f s; left to end",
                self.name,
                UNSUBSCRIBE_WAIT,
            )

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        reason = refusal(job)
        if reason is None:
            super().execute_job(job, queue)
            return
        quarantine(job, queue, self.name, reason)

    def handle_job_failure(
        self,
        job: RQJob,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Any = None,
    ) -> None:
        # RQ keeps a failed job's traceback in Redis, where `rq info` and rq-dashboard show it.
        super().handle_job_failure(job, queue, started_job_registry, redact(exc_string), execution)

    def handle_payload(self, message: dict[str, Any]) -> None:
        # RQ's command listener (shutdown, stop-job) is a thread that one message it cannot
        # parse ends for good: anyone who can publish to Redis would leave the worker deaf.
        try:
            super().handle_payload(message)  # type: ignore[no-untyped-call]
        except Exception as exc:
            log.error("ignored a worker command that is not RQ's: %s: %s", type(exc).__name__, exc)

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        # RQ's own, with the guarded scheduler.
        self.scheduler = GuardedScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()  # type: ignore[no-untyped-call]
        if not self.scheduler.acquired_locks:
            return
        if not burst:
            self.scheduler.start()  # type: ignore[no-untyped-call]
            return
        try:
            self.scheduler.register_birth()
            self.scheduler.enqueue_scheduled_jobs()
        finally:
            self.scheduler.release_locks()  # type: ignore[no-untyped-call]
            self.scheduler.register_death()

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[RQJob, Queue] | None:
        # RQ stops the worker on a job hash it cannot even read (a forged `created_at`, say),
        # and leaves the id to be taken again: set such a job aside and take the next one.
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except Exception as exc:  # RQ tags a failed fetch with the job and its queue
                job_id, queue = getattr(exc, "job_id", None), getattr(exc, "queue", None)
                if not isinstance(job_id, str) or not isinstance(queue, Queue):
                    raise
                set_aside(job_id, queue, f"it cannot be read: {type(exc).__name__}: {exc}")


class ServerClockRegistry(ScheduledJobRegistry):
    """RQ's scheduled-job registry, whose due jobs are those due by Redis's clock.

    RQ asks for the jobs due by its host's clock (`current_timestamp()`); a scheduler on a host
    whose clock runs ahead would promote retries early, one behind would promote them late.
    The time asked for is taken as an offset from this host's clock and applied to Redis's
    `TIME` in the same script, the clock `RQQueue.enqueue` reckons due times by."""

    _DUE = """
    local t = redis.call('TIME')
    local limit = tonumber(t[1]) + tonumber(ARGV[1])
    return redis.call('ZRANGEBYSCORE', KEYS[1], 0, limit, 'LIMIT', 0, tonumber(ARGV[2]))
    """

    def get_jobs_to_schedule(
        self, timestamp: int | None = None, chunk_size: int = 1000
    ) -> list[str]:
        ahead = 0 if timestamp is None else int(timestamp) - current_timestamp()
        ids: Any = self.connection.eval(self._DUE, 1, self.key, ahead, chunk_size)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


class GuardedScheduler(RQScheduler):
    """RQ's scheduler (`--with-scheduler`), which moves due jobs from the ScheduledJobRegistry
    to the queue and stops on one whose hash it cannot read, and with it every delayed job of
    the queue (retries, sleeps, wait timeouts): it sets such a job aside first. Jobs fall due
    by Redis's clock (`ServerClockRegistry`)."""

    def prepare_registries(self, queue_names: Iterable[str] | None = None) -> None:
        super().prepare_registries(queue_names)  # type: ignore[no-untyped-call]
        make: Any = ServerClockRegistry
        self._scheduled_job_registries = [
            make(r.name, connection=self.connection, serializer=self.serializer)
            for r in self._scheduled_job_registries
        ]

    def enqueue_scheduled_jobs(self) -> None:
        if not self._scheduled_job_registries and self._acquired_locks:
            self.prepare_registries()
        for registry in self._scheduled_job_registries:
            # A second ahead of RQ's own look, so no job falls due between the two.
            due = registry.get_jobs_to_schedule(current_timestamp() + 1)
            queue = Queue(registry.name, connection=self.connection, serializer=self.serializer)
            for job_id in due:
                try:
                    StatesagaJob.fetch(job_id, self.connection, self.serializer)
                except NoSuchJobError:
                    continue
                except Exception as exc:
                    reason = f"it cannot be read: {type(exc).__name__}: {exc}"
                    set_aside(job_id, queue, reason, scheduled=True)
        super().enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]


def quarantine(job: RQJob, queue: Queue, worker_name: str, reason: str) -> None:
    """Log a refused job and move it, unrun, to the queue's FailedJobRegistry, with the reason
    as its failure (RQ's own failure path would run the job's callbacks and webhooks)."""
    log.error("refused job %r on queue %r: %s", redact(job.id), queue.name, redact(reason))
    with queue.connection.pipeline() as pipe:
        job.set_status(JobStatus.FAILED, pipeline=pipe)
        job._handle_failure(f"refused by statesaga: {reason}", pipe, worker_name=worker_name)
        pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        pipe.execute()


def quarantine_key(queue: Queue) -> str:
    """The Redis list of ids of jobs too malformed for RQ to read (kept for inspection)."""
    return f"statesaga:quarantine:{queue.name}"


def set_aside(job_id: str, queue: Queue, reason: str, *, scheduled: bool = False) -> None:
    """Log an unreadable job and move its id from RQ's intermediate queue (or the scheduled
    registry) to the quarantine list, so that no worker or scheduler takes it again."""
    log.error("refused job %r on queue %r: %s", redact(job_id), queue.name, redact(reason))
    with queue.connection.pipeline() as pipe:
        if scheduled:
            pipe.zrem(queue.scheduled_job_registry.key, job_id)
        else:
            pipe.lrem(queue.intermediate_queue_key, 1, job_id)
        pipe.rpush(quarantine_key(queue), job_id)
        pipe.execute()


def guarded_worker(rq_queue: Queue, name: str) -> GuardedWorker:
    """A worker on `rq_queue`'s Redis and name that reads jobs only as JSON `StatesagaJob`s."""
    queue = Queue(
        rq_queue.name,
        connection=rq_queue.connection,
        serializer=JSONSerializer,
        job_class=StatesagaJob,
    )
    return GuardedWorker(
        [queue],
        connection=rq_queue.connection,
        serializer=JSONSerializer,
        job_class=StatesagaJob,
        name=name,
    )


__all__ = [
    "JOB_FUNCTIONS",
    "GuardedWorker",
    "ServerClockRegistry",
    "StatesagaJob",
    "guarded_worker",
    "quarantine_key",
    "refusal",
]
