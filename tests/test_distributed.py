"""Distributed execution: real `statesaga worker` processes on a real Redis.

The workers import `tests/ledger_handlers.py` (the trip handlers plus a side-effect ledger
file), so a test can count how many times each step and each compensation really ran and
compare it with the attempts stored in the workflow documents.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from process_helpers import stop
from rq import Worker
from rq.job import Job as RQJob
from statesaga.adapters.queues.rq.queue import RQQueue
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.models import StepStatus, WorkflowState, WorkflowStatus
from statesaga.plugins import open_store
from statesaga.ports import Store
from statesaga.security.allowlist import AllowList

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TESTS = Path(__file__).parent
TRIP = files("statesaga.examples") / "trip.yaml"
STEPS = ["reserve_flight", "reserve_hotel", "reserve_car", "charge_payment", "send_confirmation"]
UNDO = {
    "reserve_flight": "cancel_flight",
    "reserve_hotel": "cancel_hotel",
    "reserve_car": "cancel_car",
}
BASE = {"origin": "CDG", "destination": "NRT", "nights": 3, "amount": 1200, "email": "z@x.io"}
# Ten kinds of trip, five of each: plain, retried (flaky first attempt), refused (fail_at,
# unwound by compensation), and both. A failure after the pivot would end FAILED, not
# COMPENSATED, so none is asked for here.
CASES: list[dict[str, str]] = [
    {},
    {"flaky": "reserve_flight"},
    {"flaky": "reserve_car"},
    {"flaky": "send_confirmation"},
    {"flaky": "charge_payment"},
    {"fail_at": "reserve_flight"},
    {"fail_at": "reserve_hotel"},
    {"fail_at": "reserve_car"},
    {"fail_at": "charge_payment"},
    {"flaky": "reserve_hotel", "fail_at": "charge_payment"},
]
LIMIT = 60.0  # seconds: a safeguard against a hung test, not a measurement


def statesaga_command() -> list[str]:
    script = Path(sys.executable).with_name("statesaga")
    return [str(script)] if script.exists() else [sys.executable, "-m", "statesaga.cli"]


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.jsonl"


@pytest.fixture
def queue_url(redis_url: str, redis_client: Any) -> str:
    # redis_client flushes the database before and after; the queue name is the test's own.
    return redis_url.replace("redis://", "rq://", 1) + f"?queue=t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    redis_url: str = request.getfixturevalue("redis_url")
    return f"{redis_url}?prefix=t-{uuid.uuid4().hex[:8]}:"


@contextmanager
def workers(
    n: int, queue_url: str, store_url: str, ledger: Path, tmp_path: Path, **env: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start n `statesaga worker --with-scheduler` processes; SIGTERM them on the way out."""
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "STATESAGA_TEST_LEDGER": str(ledger),
        **env,
    }
    procs = []
    logs = []
    for i in range(n):
        log = open(tmp_path / f"worker-{i}.log", "wb")  # noqa: SIM115  (closed below)
        logs.append(log)
        cmd = [
            *statesaga_command(),
            "worker",
            "--queue",
            queue_url,
            "--store",
            store_url,
            "--handlers",
            "ledger_handlers",
            "--with-scheduler",
            "--heartbeat",
            "1",
            "--name",
            f"test-worker-{i}-{uuid.uuid4().hex[:6]}",
        ]
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=environ))
    try:
        yield procs
    finally:
        stop(procs)
        for log in logs:
            log.close()
        for i in range(n):
            text = (tmp_path / f"worker-{i}.log").read_text(errors="replace")
            sys.stderr.write(f"--- worker {i} (exit {procs[i].returncode}) ---\n{text[-3000:]}\n")


def wait_until(cond: Callable[[], bool], what: str, limit: float = LIMIT) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.05)


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def expected_runs(inp: dict[str, str]) -> tuple[WorkflowStatus, dict[str, int], dict[str, int]]:
    """Final status, attempts per step, compensations per step for one trip's input."""
    fail = STEPS.index(inp["fail_at"]) if "fail_at" in inp else None
    attempts: dict[str, int] = {}
    undone: dict[str, int] = {}
    for i, step in enumerate(STEPS):
        if fail is not None and i > fail:
            attempts[step] = 0
        elif i == fail:
            attempts[step] = 1  # a refusal is non-retryable, even on a flaky step
        else:
            attempts[step] = 2 if inp.get("flaky") == step else 1
        undone[step] = 1 if fail is not None and i < fail and step in UNDO else 0
    status = WorkflowStatus.COMPLETED if fail is None else WorkflowStatus.COMPENSATED
    return status, attempts, undone


def all_final(store: Store, ids: list[str]) -> bool:
    return all(
        store.get(i).status
        in (
            WorkflowStatus.COMPLETED,
            WorkflowStatus.COMPENSATED,
            WorkflowStatus.FAILED,
            WorkflowStatus.CANCELLED,
        )
        for i in ids
    )


def test_two_workers_run_fifty_trips_each_step_the_expected_number_of_times(
    queue_url: str, store_url: str, ledger: Path, tmp_path: Path
) -> None:
    store = open_store(store_url)
    store.initialize()
    engine = Engine(store, RQQueue.from_url(queue_url))
    definition = load_definition(str(TRIP))
    inputs = [CASES[n % len(CASES)] for n in range(50)]
    with workers(2, queue_url, store_url, ledger, tmp_path):
        ids = [engine.start(definition, {**BASE, **inp}).id for inp in inputs]
        wait_until(lambda: all_final(store, ids), "all 50 workflows final")

    runs = Counter((e["wf"], e["step"], e["undo"]) for e in read_ledger(ledger))
    for wf_id, inp in zip(ids, inputs, strict=True):
        wf = store.get(wf_id)
        status, attempts, undone = expected_runs(inp)
        assert wf.status is status, (inp, wf.status, wf.reason)
        for step in STEPS:
            s = wf.step(step)
            assert s.attempts == attempts[step], (inp, step)
            assert runs[(wf_id, step, False)] == attempts[step], (inp, step)
            comp_runs = s.compensation.attempts if s.compensation is not None else 0
            assert comp_runs == undone[step], (inp, step)
            assert runs[(wf_id, step, True)] == undone[step], (inp, step)
            if undone[step]:
                assert s.status is StepStatus.COMPENSATED
    assert len({e["pid"] for e in read_ledger(ledger)}) == 2, "both workers ran steps"
    engine.queue.close()
    store.close()


RETRY_ONCE = {
    "workflow": "retry_once",
    "handlers": "ledger_handlers",
    "steps": [
        {
            "name": "flaky",
            "action": "flaky_once",
            "retry": {"max_attempts": 2, "initial_interval": 1.0, "jitter": 0},
        }
    ],
}


def test_a_retry_waits_in_rqs_scheduler_not_in_a_sleeping_worker(
    queue_url: str, ledger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(TESTS))  # the definition names ledger_handlers
    store_url = f"sqlite:///{tmp_path / 'retry.db'}"
    store = open_store(store_url)
    queue = RQQueue.from_url(queue_url)
    # The definition's `handlers: ledger_handlers` is a hint the allow-list must match.
    engine = Engine(store, queue, allowed=AllowList.of(["ledger_handlers"]))
    with workers(1, queue_url, store_url, ledger, tmp_path):
        wf = engine.start(load_definition(RETRY_ONCE), {})
        wait_until(lambda: bool(queue.scheduled_job_ids()), "the retry is scheduled")
        (job_id,) = queue.scheduled_job_ids()
        rq_job = RQJob.fetch(
            job_id, connection=queue.connection, serializer=queue.rq_queue.serializer
        )
        (payload,) = rq_job.args  # the statesaga job's dict, and nothing else
        assert (payload["kind"], payload["workflow_id"], payload["step"], payload["attempt"]) == (
            "step",
            wf.id,
            "flaky",
            2,
        )
        assert wf.id in (rq_job.description or "") and "flaky" in (rq_job.description or "")
        due = queue.rq_queue.scheduled_job_registry.get_scheduled_time(job_id).timestamp()
        (first,) = read_ledger(ledger)
        assert due >= first["at"] + 1.0, "scheduled for after the 1 s backoff"

        # While attempt 2 waits in the ScheduledJobRegistry, nothing is queued and the worker
        # is idle, waiting for work: the wait is RQ's scheduler's, not a sleeping worker's.
        seen_idle = False
        while job_id in queue.scheduled_job_ids() and not seen_idle:
            (w,) = Worker.all(queue=queue.rq_queue)
            seen_idle = w.get_state() == "idle" and len(queue) == 0
            time.sleep(0.02)
        assert seen_idle, "the worker was never idle while the retry was scheduled"
        assert store.get(wf.id).step("flaky").status is StepStatus.RETRYING

        wait_until(lambda: store.get(wf.id).status is WorkflowStatus.COMPLETED, "completed")
    done = store.get(wf.id)
    assert done.step("flaky").attempts == 2
    first, second = read_ledger(ledger)
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert second["at"] >= first["at"] + 1.0
    assert queue.scheduled_job_ids() == []
    queue.close()
    store.close()


GRACEFUL = {
    "workflow": "graceful",
    "handlers": "ledger_handlers",
    "steps": [
        {"name": "long", "action": "wait_for_release"},
        {"name": "next", "action": "noop"},
    ],
}


def test_sigterm_lets_the_step_in_flight_finish_and_takes_nothing_new(
    queue_url: str, ledger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    store_url = f"sqlite:///{tmp_path / 'graceful.db'}"
    release = tmp_path / "release"
    store = open_store(store_url)
    queue = RQQueue.from_url(queue_url)
    # The definition's `handlers: ledger_handlers` is a hint the allow-list must match.
    engine = Engine(store, queue, allowed=AllowList.of(["ledger_handlers"]))
    with workers(
        1, queue_url, store_url, ledger, tmp_path, STATESAGA_TEST_RELEASE=str(release)
    ) as (proc,):
        wf = engine.start(load_definition(GRACEFUL), {})
        wait_until(lambda: len(read_ledger(ledger)) == 1, "the long step started")
        proc.send_signal(signal.SIGTERM)
        (w,) = Worker.all(queue=queue.rq_queue)
        # RQ records a warm shutdown request made while busy; then the step is released.
        wait_until(lambda: w.shutdown_requested_date is not None, "shutdown requested")
        assert proc.poll() is None, "the worker left with a step in flight"
        release.touch()
        assert proc.wait(timeout=20) == 0

    got: WorkflowState = store.get(wf.id)
    assert got.step("long").status is StepStatus.COMPLETED
    # The next step was enqueued after the save, and left on the queue for another worker.
    assert got.step("next").status is StepStatus.QUEUED
    assert len(queue) == 1
    assert [e["action"] for e in read_ledger(ledger)] == ["wait_for_release"]
    queue.close()
    store.close()
