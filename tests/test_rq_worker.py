"""Serving an `rq://` queue (statesaga.adapters.queues.rq.worker) through the WorkerQueue port, and
the core's side of it: `statesaga worker` knows no queue technology, and no core module imports
RQ, Redis or an adapter."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import pytest
from redis.client import PubSub
from rq.scheduler import RQScheduler
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.queues.rq.queue import RQQueue
from statesaga.adapters.queues.rq.worker import SchedulerWatch, make_rq_worker
from statesaga.errors import AdapterError
from statesaga.ports import Job, ServeOptions, WorkerQueue
from statesaga.worker import JOB_FUNCTION, WorkerSettings, run_job, run_worker


def test_the_job_function_name_is_where_run_job_lives() -> None:
    assert JOB_FUNCTION == "statesaga.worker.run_job"
    assert f"{run_job.__module__}.{run_job.__qualname__}" == JOB_FUNCTION


@pytest.mark.slow
def test_no_core_module_imports_rq_redis_arango_or_an_adapter() -> None:
    """Every module of the core (statesaga, without statesaga.adapters), imported in a fresh
    interpreter, leaves RQ, Redis, ArangoDB and the adapters unimported."""
    code = (
        "import pkgutil, sys, importlib, statesaga\n"
        "for m in pkgutil.walk_packages(statesaga.__path__, 'statesaga.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('rq', 'redis', 'arango')\n"
        "      or n.startswith('statesaga.adapters')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_an_inline_queue_has_nothing_for_a_worker_to_serve(tmp_path: Any) -> None:
    assert not isinstance(InlineQueue(), WorkerQueue)
    settings = WorkerSettings(
        queue_url="inline://", store_url=f"sqlite:///{tmp_path / 's.db'}", burst=True
    )
    with pytest.raises(AdapterError, match=r"statesaga worker needs an rq:// queue URL"):
        run_worker(settings)


@pytest.mark.redis
def test_serve_runs_the_jobs_with_the_runner_until_the_queue_is_empty(
    redis_url: str, redis_client: Any
) -> None:
    queue = RQQueue.from_url(redis_url.replace("redis://", "rq://", 1) + "?queue=serve")
    assert isinstance(queue, WorkerQueue)
    ran: list[str] = []
    options = ServeOptions(name=f"t-{uuid.uuid4().hex[:6]}", burst=True, log_level="WARNING")
    assert queue.serve(lambda job: ran.append(job.step), options) is False
    queue.enqueue(Job("step", "WF-20260208-00000001", "a", 1))
    queue.enqueue(Job("step", "WF-20260208-00000001", "b", 1))
    assert queue.serve(lambda job: ran.append(job.step), options) is True
    assert ran == ["a", "b"]
    assert len(queue) == 0
    queue.close()


@pytest.mark.redis
def test_a_burst_pass_promotes_due_jobs_and_lets_go_of_the_scheduler_lock_before_working(
    redis_url: str, redis_client: Any
) -> None:
    """A burst worker killed mid-job (the crash matrix kills them) must not leave the lock
    held: the next worker would wait the lock's lifetime for its delayed jobs."""
    queue = RQQueue.from_url(redis_url.replace("redis://", "rq://", 1) + "?queue=burst")
    lock = RQScheduler.get_locking_key("burst")
    queue.enqueue(Job("step", "WF-20260208-00000001", "later", 2), delay=0.5)
    time.sleep(2.1)  # due, with RQ's whole-second rounding
    held: list[object] = []

    def runner(job: Job) -> None:
        held.append(redis_client.get(lock))

    options = ServeOptions(name="burst-t", burst=True, with_scheduler=True, log_level="WARNING")
    assert queue.serve(runner, options) is True
    assert held == [None]
    assert queue.scheduled_job_ids() == []
    queue.close()


@pytest.mark.redis
def test_a_stop_request_calls_on_stop_and_ends_serving(redis_url: str, redis_client: Any) -> None:
    """SIGTERM to a serving worker: `on_stop` runs (the engine stops claiming next steps),
    the job in flight finishes, and serve returns."""
    import os
    import signal

    queue = RQQueue.from_url(redis_url.replace("redis://", "rq://", 1) + "?queue=stop")
    queue.enqueue(Job("step", "WF-20260208-00000001", "a", 1))
    events: list[str] = []

    def runner(job: Job) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        events.append(f"ran {job.step}")

    options = ServeOptions(
        name=f"t-{uuid.uuid4().hex[:6]}", log_level="WARNING", on_stop=lambda: events.append("stop")
    )
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert queue.serve(runner, options) is True
    finally:  # RQ leaves its handlers installed
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert events == ["stop", "ran a"]
    queue.close()


def _overdue_job(redis_url: str, redis_client: Any, queue_name: str) -> RQQueue:
    """A queue holding one delayed statesaga job due a minute ago by Redis's clock, as a
    retry is once its backoff has passed with no scheduler running."""
    queue = RQQueue.from_url(redis_url.replace("redis://", "rq://", 1) + f"?queue={queue_name}")
    queue.enqueue(Job("step", "WF-20260208-00000001", "charge", 2), delay=3600)
    registry = queue.rq_queue.scheduled_job_registry
    (job_id,) = registry.get_job_ids()
    now, _ = redis_client.time()
    redis_client.zadd(registry.key, {job_id: now - 60})
    return queue


@pytest.mark.redis
def test_the_watch_names_overdue_delayed_jobs_only_while_no_scheduler_holds_the_lock(
    redis_url: str, redis_client: Any
) -> None:
    name = f"watch-{uuid.uuid4().hex[:6]}"
    idle = RQQueue.from_url(redis_url.replace("redis://", "rq://", 1) + f"?queue={name}-idle")
    idle.enqueue(Job("step", "WF-20260208-00000001", "later", 2), delay=3600)
    assert SchedulerWatch(idle.rq_queue).overdue() is None  # due in an hour: nothing to say

    queue = _overdue_job(redis_url, redis_client, name)
    line = SchedulerWatch(queue.rq_queue).overdue()
    assert line is not None
    assert f"queue '{name}': 1 delayed job(s)" in line
    assert "statesaga worker --with-scheduler" in line

    lock = RQScheduler.get_locking_key(name)
    redis_client.set(lock, "another.scheduler", ex=30)
    try:
        assert SchedulerWatch(queue.rq_queue).overdue() is None  # a scheduler will move it
    finally:
        redis_client.delete(lock)
    queue.close()
    idle.close()


@pytest.mark.redis
@pytest.mark.slow
def test_a_worker_without_the_scheduler_says_once_that_overdue_retries_wait_for_one(
    redis_url: str, redis_client: Any, tmp_path: Any
) -> None:
    """Found by hand: workers started without `--with-scheduler` left failing sagas RETRYING
    with nothing in their logs. The worker now says so, once; one with the scheduler moves
    the job and says nothing of it."""
    name = f"watch-{uuid.uuid4().hex[:6]}"
    queue = _overdue_job(redis_url, redis_client, name)
    url = redis_url.replace("redis://", "rq://", 1) + f"?queue={name}"
    store = f"sqlite:///{tmp_path / 'store.db'}"

    def worker(*extra: str) -> tuple[subprocess.Popen[str], Any]:
        log = (tmp_path / f"worker{len(extra)}.log").open("w+")
        cmd = [sys.executable, "-m", "statesaga.cli", "worker", "--queue", url, "--store", store]
        proc = subprocess.Popen([*cmd, *extra], stdout=log, stderr=subprocess.STDOUT, text=True)
        return proc, log

    def said(log: Any) -> str:
        log.seek(0)
        return str(log.read())

    proc, log = worker()
    try:
        deadline = time.monotonic() + 30
        while "no worker runs the scheduler" not in said(log):
            assert proc.poll() is None, said(log)
            assert time.monotonic() < deadline, said(log)
            time.sleep(0.1)
        assert f"queue '{name}': 1 delayed job(s)" in said(log)
        assert len(queue.rq_queue.scheduled_job_registry.get_job_ids()) == 1  # still waiting
    finally:
        proc.terminate()
        proc.wait(30)

    proc, log = worker("--with-scheduler")
    try:
        deadline = time.monotonic() + 30
        while queue.rq_queue.scheduled_job_registry.get_job_ids():
            assert proc.poll() is None, said(log)
            assert time.monotonic() < deadline, said(log)
            time.sleep(0.1)
        time.sleep(SchedulerWatch.FIRST + 0.5)
        assert "no worker runs the scheduler" not in said(log)
    finally:
        proc.terminate()
        proc.wait(30)
    queue.close()


@pytest.mark.redis
def test_a_worker_teardown_leaves_closing_the_command_listener_to_the_listener(
    redis_url: str, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ's teardown waited 1 s for the command listener, then closed its pubsub while the
    listener, still in its last read, closed it too: on redis-py 5 the two closes raced and
    the worker's teardown raised AttributeError (a CI run on the lowest versions). The
    listener's last read is made to end after RQ's 1 s wait, and each close slow, so a
    teardown that closes while the listener still runs is seen, not left to chance."""

    closes: list[tuple[str, float, float, bool]] = []
    real_reset = PubSub.reset
    real_get_message = PubSub.get_message

    def slow_reset(self: PubSub) -> None:
        start = time.monotonic()
        held = self.connection is not None
        time.sleep(0.2)
        real_reset(self)
        closes.append((threading.current_thread().name, start, time.monotonic(), held))

    def slow_get_message(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        message = real_get_message(self, *args, **kwargs)
        if threading.current_thread() is not threading.main_thread():
            time.sleep(1.2)  # the last read ends after RQ's 1 s wait
        return message

    monkeypatch.setattr(PubSub, "reset", slow_reset)
    monkeypatch.setattr(PubSub, "get_message", slow_get_message)
    queue = RQQueue.from_url(redis_url.replace("redis://", "rq://", 1) + "?queue=teardown")
    worker = make_rq_worker(queue.rq_queue)
    closes.clear()  # the pubsub's construction resets it too
    assert worker.work(burst=True, logging_level="WARNING") is False
    listener = worker.pubsub_thread
    assert listener is not None and not listener.is_alive()
    assert worker.pubsub.connection is None  # closed: its connection went back to the pool
    held = [c for c in closes if c[3]]
    assert [c[0] for c in held] == [listener.name], closes
    for a, b in zip(closes, closes[1:], strict=False):
        assert a[2] <= b[1], f"two closes overlapped: {closes}"
