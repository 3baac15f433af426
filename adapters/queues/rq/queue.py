"""`rq://host:port/db?queue=statesaga`: step and compensation jobs as RQ jobs on Redis, run by
any number of `statesaga worker` processes on any number of hosts.

- Each RQ job calls `statesaga.worker.run_job` with one argument, the statesaga job's dict
  (ids and small JSON), serialized with RQ's JSONSerializer: nothing read back from Redis is
  ever unpickled. The worker must use the same serializer, which `statesaga worker` does.
- The RQ job's description names the workflow and the step, so `rq info` and rq-dashboard
  show something a person can read.
- The RQ job timeout (a hard kill by the worker) is the step's timeout plus a margin, so the
  engine's own timeout fires first and is recorded as a step failure; RQ's is the backstop.
- A delayed job (a retry's backoff) is put in RQ's ScheduledJobRegistry with `enqueue_at`
  and moved to the queue by the scheduler of a worker started with `--with-scheduler`; no
  worker sleeps on it. Its due time is reckoned and compared on Redis's clock (`TIME`), not
  on the clocks of the hosts that schedule and promote it. RQ scores scheduled jobs in whole
  seconds and enqueues every job whose second has begun, so the due time is rounded *up* to
  the next second: a job never runs before its delay, and at most about two seconds after
  (the rounding plus the scheduler's one-second poll). Job ids start with the due time in
  milliseconds, so jobs falling due in the same second are enqueued in the order they fall
  due.
- `bind()` does nothing: workers build their own engine. `drain()` waits, polling the
  condition, while workers elsewhere do the work; `serve()` is the worker's side
  (statesaga.adapters.queues.rq.worker).
"""

from __future__ import annotations

import math
import signal
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import statesaga.adapters._redis_errors  # noqa: F401 (declares redis-py's errors to the core)
from statesaga.adapters._redis_url import (
    CLIENT_DEFAULTS,
    check_redis_url,
    is_sentinel,
    sentinel_client,
)
from statesaga.adapters.queues._poll import wait_until
from statesaga.errors import AdapterError
from statesaga.ports import Job, JobRunner, ServeOptions, WorkerQueue
from statesaga.worker import JOB_FUNCTION

if TYPE_CHECKING:
    import redis
    import rq
    from statesaga.observability.fleet import Fleet

DEFAULT_QUEUE = "statesaga"
#: Seconds added to a step's timeout for the RQ job timeout: the claim and the settle are two
#: store round trips around the handler, and the engine's own timeout must fire first.
TIMEOUT_MARGIN = 30
#: RQ's own job timeout when none is given (rq.Queue.DEFAULT_TIMEOUT).
RQ_DEFAULT_TIMEOUT = 180


def job_timeout(step_timeout: float | None, margin: int = TIMEOUT_MARGIN) -> int | None:
    """The RQ job timeout for a step timeout; None lets RQ apply its default (180 s)."""
    if step_timeout is None:
        return None
    return math.ceil(step_timeout) + margin


def describe(job: Job) -> str:
    """What `rq info` shows for a job: the workflow, the step and the attempt."""
    if job.description:
        return str(job.description)
    verb = {"compensation": "undo", "timer": "timer"}.get(job.kind, "step")
    return f"{job.workflow_id} {verb} {job.step} attempt {job.attempt}"


def parse_url(url: str) -> tuple[str, str, dict[str, str]]:
    """Split `rq://host:port/db?queue=NAME&k=v` into a redis URL, the queue name and the
    remaining statesaga options (`timeout_margin`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("rq", "rqs", "rq+sentinel"):
        raise AdapterError(f"not an rq queue URL: {url!r} (expected rq://host:port/db?queue=NAME)")
    check_redis_url(url, "rq queue", own=("queue", "timeout_margin"))
    query = parse_qs(parts.query, keep_blank_values=True)
    name = query.pop("queue", [DEFAULT_QUEUE])[-1]
    if not name:
        raise AdapterError(f"rq queue URL names an empty queue: {url!r}")
    options = {k: query.pop(k)[-1] for k in ("timeout_margin",) if k in query}
    read = query.get("socket_timeout", ["10"])[-1]
    try:
        too_short = float(read) < 2
    except ValueError:
        why = f"socket_timeout must be seconds, not {read!r}"
        raise AdapterError(f"bad rq queue URL: {why}") from None
    if too_short:
        # A worker waits for a job half its read timeout at a time (rq_jobguard): under
        # 2 s that wait would be as long as the timeout itself.
        raise AdapterError("bad rq queue URL: socket_timeout must be at least 2 seconds")
    scheme = {"rqs": "rediss", "rq+sentinel": "redis+sentinel"}.get(parts.scheme, "redis")
    redis_url = urlunsplit(parts._replace(scheme=scheme, query=urlencode(query, doseq=True)))
    return redis_url, name, options


class RQQueue(WorkerQueue):  # type: ignore[misc]  # mypy reads statesaga.* as Any here
    """The Queue port on RQ: real RQ jobs, JSON-serialized, scheduled by RQ's scheduler."""

    def __init__(
        self,
        connection: redis.Redis,
        name: str = DEFAULT_QUEUE,
        *,
        timeout_margin: int = TIMEOUT_MARGIN,
        poll_interval: float = 0.05,
    ) -> None:
        from rq import Queue
        from rq.serializers import JSONSerializer

        self.connection = connection
        self.name = name
        self.timeout_margin = timeout_margin
        self.poll_interval = poll_interval
        self.rq_queue: rq.Queue = Queue(name, connection=connection, serializer=JSONSerializer)

    @classmethod
    def from_url(cls, url: str) -> RQQueue:
        try:
            import redis
            import rq  # noqa: F401  (checked here so the hint names the extra)
        except ImportError:
            raise AdapterError(
                "the rq queue needs rq and redis-py; install them with: pip install 'statesaga[rq]'"
            ) from None
        redis_url, name, options = parse_url(url)
        try:
            margin = int(options.get("timeout_margin", TIMEOUT_MARGIN))
        except ValueError:
            raise AdapterError(f"rq URL option timeout_margin must be seconds: {url!r}") from None
        try:
            # Bytes, not decoded text: RQ reads job payloads as bytes.
            if is_sentinel(redis_url):
                connection = sentinel_client(redis_url, "rq queue", **CLIENT_DEFAULTS)
            else:
                connection = redis.Redis.from_url(redis_url, **CLIENT_DEFAULTS)
        except ValueError as exc:
            raise AdapterError(f"bad rq queue URL: {exc}") from None
        return cls(connection, name, timeout_margin=margin)

    def check(self) -> None:
        """Raise AdapterError unless the Redis server answers: called before a workflow is
        stored, so a job that cannot go out leaves nothing behind."""
        try:
            self.connection.ping()
        except Exception as exc:  # redis-py's ConnectionError, AuthenticationError, ...
            why = f"{type(exc).__name__}: {exc}"
            raise AdapterError(f"rq queue cannot reach redis: {why}") from None

    # -- the port --------------------------------------------------------------------------
    def bind(self, runner: JobRunner) -> None:
        """Nothing to do: jobs run in worker processes, each with its own engine."""

    def enqueue(self, job: Job, delay: float = 0.0) -> None:
        # A delayed job is due by Redis's clock, the clock the scheduler compares it with
        # (statesaga.adapters.queues.rq.jobguard.ServerClockRegistry): a host whose clock is off
        # neither delays nor hastens it. One TIME round trip, for delayed jobs only.
        now = self.server_seconds() if delay > 0 else time.time()
        due = now + max(delay, 0.0)
        options: dict[str, Any] = {
            "args": (job.to_dict(),),
            "description": describe(job),
            "job_id": f"ss-{int(due * 1000):013d}-{uuid.uuid4().hex[:16]}",
            "job_timeout": job_timeout(job.timeout, self.timeout_margin),
        }
        if delay <= 0:
            self.rq_queue.enqueue(JOB_FUNCTION, **options)
            return
        # RQ's scheduler enqueues a job once the second it is scored with has begun: score it
        # with the next whole second so it can never run early.
        at = datetime.fromtimestamp(math.ceil(due), UTC)
        self.rq_queue.enqueue_at(at, JOB_FUNCTION, **options)

    def server_seconds(self) -> float:
        """Redis's `TIME`, in epoch seconds."""
        got: Any = self.connection.time()
        seconds, micro = got
        return int(seconds) + int(micro) / 1_000_000

    def renew(self, job: Job) -> None:
        """Give a step that the worker runs right after the last one (eager dispatch, inside
        the same RQ job) its own RQ job timeout, as if it had come through the queue: RQ's
        alarm is re-armed, when one is armed (a SimpleWorker job in this main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getitimer(signal.ITIMER_REAL)[0] <= 0:
            return
        signal.alarm(job_timeout(job.timeout, self.timeout_margin) or RQ_DEFAULT_TIMEOUT)

    def serve(self, runner: JobRunner, options: ServeOptions) -> bool:
        """The WorkerQueue port: run this queue's jobs here (rq.worker)."""
        from statesaga.adapters.queues.rq.worker import serve

        worked: bool = serve(self.rq_queue, runner, options)
        return worked

    def drain(self, until: Callable[[], bool], timeout: float | None = None) -> None:
        """Wait for `until()` while workers elsewhere run the jobs (polls, backing off to 0.5 s)."""
        wait_until(until, timeout, self.poll_interval)

    def close(self) -> None:
        self.connection.close()

    def __repr__(self) -> str:
        from statesaga.adapters.stores.redis import location

        return f"RQQueue({location(self.connection)!r}, queue={self.name!r})"

    def worker_count(self) -> int:
        """How many RQ workers listen on this queue now (`statesaga run` says when none)."""
        from rq import Worker

        return len(Worker.all(queue=self.rq_queue))

    # -- what tests and operators look at --------------------------------------------------
    def inspect(self, failed_limit: int = 50) -> Fleet:
        """Its workers and queue, as the dashboard and the metrics show them."""
        from statesaga.adapters.queues.rq.fleet import inspect

        return inspect(self.rq_queue, failed_limit)

    def requeue_failed(self, job_id: str) -> None:
        """Put a failed statesaga job back on the queue (refused for any other job)."""
        from statesaga.adapters.queues.rq.fleet import requeue_failed

        requeue_failed(self.rq_queue, job_id)

    def scheduled_job_ids(self) -> list[str]:
        """Ids of jobs waiting in RQ's ScheduledJobRegistry for their due time."""
        ids: list[str] = self.rq_queue.scheduled_job_registry.get_job_ids()
        return ids

    def __len__(self) -> int:
        return int(self.rq_queue.count)


__all__ = ["JOB_FUNCTION", "RQQueue", "describe", "job_timeout", "parse_url"]
