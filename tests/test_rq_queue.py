"""The `rq://` queue adapter against a real Redis: the queue conformance suite (jobs served by
an RQ SimpleWorker and RQ's scheduler in this process), and what is stored in Redis."""

from __future__ import annotations

import json
import math
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rq.job import Job as RQJob
from rq.scheduler import RQScheduler
from statesaga.adapters.queues.rq.queue import TIMEOUT_MARGIN, RQQueue, job_timeout, parse_url
from statesaga.adapters.queues.rq.worker import make_rq_worker
from statesaga.errors import AdapterError, StatesagaError
from statesaga.ports import Job, Queue
from statesaga.testing import QueueConformance, Recorder
from statesaga.worker import run_job, serving

pytestmark = pytest.mark.redis


@pytest.fixture
def rq_url(redis_url: str, redis_client: Any) -> str:
    return redis_url.replace("redis://", "rq://", 1) + f"?queue=q-{uuid.uuid4().hex[:8]}"


class TestRQQueueConformance(QueueConformance):
    """The Queue contract, with jobs run by a real RQ worker and RQ's scheduler, here."""

    # The suite measures delays on this process's monotonic clock; RQ schedules on the wall
    # clock (whole seconds, rounded up by the adapter).
    timing_tolerance = 0.05

    @pytest.fixture
    def queue(self, rq_url: str) -> Iterator[Queue]:
        queue = RQQueue.from_url(rq_url)
        yield queue
        queue.close()

    @pytest.fixture
    def recorder(self, queue: Queue) -> Iterator[Recorder]:
        rec = Recorder()
        queue.bind(rec)  # a no-op for RQ: jobs reach `rec` through the worker below
        self._runner = rec
        yield rec

    def run_jobs(self, queue: Queue, until: Callable[[], bool], timeout: float) -> None:
        assert isinstance(queue, RQQueue)
        deadline = time.monotonic() + timeout
        worker = make_rq_worker(queue.rq_queue)
        scheduler = RQScheduler(
            [queue.rq_queue], connection=queue.connection, serializer=queue.rq_queue.serializer
        )
        scheduler.acquire_locks()
        try:
            with serving(self._runner):
                while not until() and time.monotonic() < deadline:
                    scheduler.enqueue_scheduled_jobs()
                    worker.work(burst=True, logging_level="WARNING")
                    time.sleep(0.02)
        finally:
            scheduler.release_locks()


def test_url_names_the_redis_server_and_the_queue() -> None:
    assert parse_url("rq://10.0.0.5:6380/2?queue=trips") == ("redis://10.0.0.5:6380/2", "trips", {})
    assert parse_url("rq://:secret@h:1/0")[:2] == ("redis://:secret@h:1/0", "statesaga")
    assert parse_url("rq://h:1/0?queue=a&timeout_margin=5")[2] == {"timeout_margin": "5"}
    with pytest.raises(AdapterError):
        parse_url("redis://h:1/0")


def test_job_timeout_is_the_step_timeout_plus_a_margin() -> None:
    assert job_timeout(None) is None  # RQ's default applies
    assert job_timeout(30) == 30 + TIMEOUT_MARGIN
    assert job_timeout(0.5, margin=5) == 6


def test_an_enqueued_job_is_json_with_a_readable_description(rq_url: str) -> None:
    queue = RQQueue.from_url(rq_url)
    job = Job("step", "WF-20260208-5b193f0d", "reserve_hotel", 2, 20.0, "trip WF-… step hôtel")
    queue.enqueue(job)
    (job_id,) = queue.rq_queue.job_ids
    raw = queue.connection.hget(RQJob.key_for(job_id), "data")
    assert raw is not None
    # RQ's JSONSerializer (zlib-compressed by RQ): JSON, never a pickle, carrying only the job.
    func, _instance, args, kwargs = json.loads(zlib.decompress(raw))
    assert (func, args, kwargs) == ("statesaga.worker.run_job", [job.to_dict()], {})
    rq_job = queue.rq_queue.fetch_job(job_id)
    assert rq_job is not None
    assert rq_job.description == "trip WF-… step hôtel"
    assert rq_job.timeout == 20 + TIMEOUT_MARGIN
    queue.close()


def test_a_delayed_job_waits_in_the_scheduled_registry_until_a_whole_second_after_its_due_time(
    rq_url: str,
) -> None:
    queue = RQQueue.from_url(rq_url)
    before = time.time()
    queue.enqueue(Job("step", "WF-20260208-00000001", "s", 2), delay=1.3)
    assert len(queue) == 0
    (job_id,) = queue.scheduled_job_ids()
    due = queue.rq_queue.scheduled_job_registry.get_scheduled_time(job_id).timestamp()
    assert due >= before + 1.3
    assert due <= math.ceil(time.time() + 1.3)
    queue.close()


def test_run_job_outside_a_worker_says_how_to_start_one() -> None:
    with pytest.raises(StatesagaError, match="statesaga worker"):
        run_job(Job("step", "WF-20260208-00000001", "s", 1).to_dict())


def test_drain_returns_when_the_condition_holds_or_the_time_is_up(rq_url: str) -> None:
    queue = RQQueue.from_url(rq_url)
    calls = iter([False, False, True])
    queue.drain(lambda: next(calls), timeout=10)
    assert next(calls, "exhausted") == "exhausted"
    queue.drain(lambda: False, timeout=0.1)  # returns: the workers elsewhere may be down
    queue.close()


@pytest.mark.slow
def test_run_with_an_rq_queue_waits_for_workers_elsewhere(rq_url: str, tmp_path: Path) -> None:
    """The README's Redis flow: `statesaga run --queue rq://...` enqueues the saga and waits by
    polling the store while a separate `statesaga worker` process runs it."""
    import subprocess
    import sys

    store = f"sqlite:///{tmp_path / 'shared.db'}"
    data = {"origin": "TPE", "destination": "NRT", "nights": 2, "amount": 10, "email": "a@b.c"}
    cli = [sys.executable, "-m", "statesaga.cli"]
    run = subprocess.Popen(
        [*cli, "run", "examples/trip.yaml", "--input", json.dumps(data), "--queue", rq_url,
         "--store", store, "--json", "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=str(Path(__file__).resolve().parents[1]),
    )  # fmt: skip
    try:
        worker = None
        deadline = time.monotonic() + 30
        while run.poll() is None and time.monotonic() < deadline:
            worker = subprocess.run(
                [*cli, "worker", "--burst", "--queue", rq_url, "--store", store,
                 "--handlers", "statesaga.examples.trip_handlers"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert worker.returncode == 0, worker.stderr[-2000:]
            time.sleep(0.2)
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err[-2000:]
    doc = json.loads(out)
    assert doc["status"] == "COMPLETED"
    assert [s["attempts"] for s in doc["steps"]] == [1, 1, 1, 1, 1]
