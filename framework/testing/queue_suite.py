"""The Queue conformance suite: the `statesaga.ports.Queue` contract as tests.

Subclass it and provide a `queue` fixture that yields a fresh, empty queue (closed
afterwards)::

    import pytest
    from . import QueueConformance
    from my_plugin import MyQueue

    class TestMyQueue(QueueConformance):
        @pytest.fixture
        def queue(self):
            queue = MyQueue.from_url("myqueue://localhost/test")
            yield queue
            queue.close()

The suite binds a runner that records every job it is given, then calls
`run_jobs(queue, until, timeout)`, which by default is `queue.drain(until, timeout)`. An
in-process queue needs nothing more. A distributed queue whose jobs run in worker processes
overrides `run_jobs` so that the bound runner is reached in this process (e.g. by running a
burst worker here). `timing_tolerance` (seconds) allows for a queue whose delays are measured
on another clock (a server's); it is 0 by default.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from ..ports import Job, Queue


@dataclass
class Recorder:
    """The runner the suite binds: remembers which jobs ran and when (time.monotonic())."""

    jobs: list[Job] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    then: Callable[[Job], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, job: Job) -> None:
        with self._lock:
            self.jobs.append(job)
            self.times.append(time.monotonic())
        if self.then is not None:
            self.then(job)

    def count(self) -> int:
        with self._lock:
            return len(self.jobs)


def step_job(n: int) -> Job:
    return Job(kind="step", workflow_id=f"WF-20260208-{n:08x}", step=f"s{n}", attempt=1)


class QueueConformance:
    """Pytest tests for the Queue contract; subclass and provide a `queue` fixture."""

    timing_tolerance = 0.0
    run_timeout = 10.0

    def run_jobs(self, queue: Queue, until: Callable[[], bool], timeout: float) -> None:
        """Let the queue run jobs until `until()` or `timeout` seconds (see module docstring)."""
        queue.drain(until, timeout=timeout)

    @pytest.fixture
    def recorder(self, queue: Queue) -> Iterator[Recorder]:
        rec = Recorder()
        queue.bind(rec)
        yield rec

    def test_the_queue_offers_every_member_of_the_port(
        self, queue: Queue, recorder: Recorder
    ) -> None:
        """The core asks a queue for its optional features instead of probing for them: a
        queue has them all (subclassing statesaga.ports.Queue gives the defaults), and
        renewing a job this process runs itself neither runs nor enqueues it."""
        assert isinstance(queue, Queue)
        assert isinstance(queue.in_process, bool)
        queue.check()  # reachable: the fixture's queue is
        count = queue.worker_count()
        assert count is None or (isinstance(count, int) and count >= 0)
        queue.renew(step_job(99))
        self.run_jobs(queue, lambda: False, 0.2)
        assert recorder.jobs == []

    def test_every_enqueued_job_runs_once(self, queue: Queue, recorder: Recorder) -> None:
        jobs = [step_job(n) for n in range(20)]
        for job in jobs:
            queue.enqueue(job)
        self.run_jobs(queue, lambda: recorder.count() >= len(jobs), self.run_timeout)
        # Give a queue that would deliver twice the chance to do it.
        self.run_jobs(queue, lambda: False, 0.2)
        assert sorted(recorder.jobs, key=lambda j: j.workflow_id) == jobs

    def test_a_job_enqueued_by_a_running_job_runs_too(
        self, queue: Queue, recorder: Recorder
    ) -> None:
        def follow_up(job: Job) -> None:
            if job.kind == "step":
                queue.enqueue(Job("compensation", job.workflow_id, job.step, job.attempt))

        recorder.then = follow_up
        queue.enqueue(step_job(1))
        self.run_jobs(queue, lambda: recorder.count() >= 2, self.run_timeout)
        assert [j.kind for j in recorder.jobs] == ["step", "compensation"]

    def test_the_runner_gets_the_job_that_was_enqueued(
        self, queue: Queue, recorder: Recorder
    ) -> None:
        job = Job("compensation", "WF-20260208-5b193f0d", "hôtel", 3, 12.5, "annuler l'hôtel ✓")
        queue.enqueue(job)
        self.run_jobs(queue, lambda: recorder.count() >= 1, self.run_timeout)
        assert recorder.jobs == [job]

    def test_a_delayed_job_does_not_run_before_its_delay(
        self, queue: Queue, recorder: Recorder
    ) -> None:
        delay = 0.6
        enqueued_at = time.monotonic()
        queue.enqueue(step_job(1), delay=delay)
        self.run_jobs(queue, lambda: recorder.count() >= 1, delay / 3)
        assert recorder.jobs == [], "ran before its delay"
        self.run_jobs(queue, lambda: recorder.count() >= 1, self.run_timeout)
        assert recorder.jobs == [step_job(1)]
        assert recorder.times[0] - enqueued_at >= delay - self.timing_tolerance

    def test_jobs_run_in_the_order_they_fall_due(self, queue: Queue, recorder: Recorder) -> None:
        delays = {3: 0.45, 1: 0.15, 2: 0.3, 0: 0.0}
        for n, delay in delays.items():
            queue.enqueue(step_job(n), delay=delay)
        self.run_jobs(queue, lambda: recorder.count() >= len(delays), self.run_timeout)
        assert [j.step for j in recorder.jobs] == ["s0", "s1", "s2", "s3"]

    @pytest.mark.parametrize(
        "job",
        [
            Job("step", "WF-20260208-5b193f0d", "vol", 1),
            Job("compensation", "WF-20260208-5b193f0d", "hôtel", 7, 2.5, "Zürich → 東京"),
        ],
    )
    def test_job_round_trips_through_json(self, job: Job) -> None:
        text = json.dumps(job.to_dict())
        assert Job.from_dict(json.loads(text)) == job
