"""Durable timers: a sleep step; a timer that fires early puts itself back; and a timer whose
worker is SIGKILLed while it is pending still fires after recovery, on the embedded default
(a shared SQLite file, an in-process queue) and on RQ with a real Redis and real workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from process_helpers import stop
from statesaga import StepStatus, WorkflowStatus
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.models import utcnow
from statesaga.ports import Job
from statesaga.runtime.recovery import Recovery

LIMIT = 60.0  # a safeguard against a hung test, not a measurement


def napping(duration: float) -> dict[str, Any]:
    return {
        "workflow": "nap",
        "handlers": "statesaga.examples.expense_handlers",
        "steps": [
            {"name": "submit", "action": "submit_claim",
             "params": {"employee": "${input.employee}", "amount": 1}},
            {"name": "nap", "duration": duration},
            {"name": "after", "action": "notify_employee",
             "params": {"employee": "${input.employee}", "payment": "${steps.submit.claim}"}},
        ],
    }  # fmt: skip


def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.05)


def statesaga_command() -> list[str]:
    script = Path(sys.executable).with_name("statesaga")
    return [str(script)] if script.exists() else [sys.executable, "-m", "statesaga.cli"]


def test_a_sleep_step_waits_then_the_saga_goes_on(tmp_path: Path) -> None:
    engine = Engine(SQLiteStore(tmp_path / "t.db"), InlineQueue(), heartbeat_interval=0)
    done = engine.run(load_definition(napping(0.05)), {"employee": "bob"})
    assert done.status is WorkflowStatus.COMPLETED
    nap = done.step("nap")
    assert nap.status is StepStatus.COMPLETED and nap.next_attempt_at is None
    assert nap.result["slept_until"] is not None
    assert [h.trigger for h in done.history if h.step == "nap"] == ["schedule", "wake"]
    assert done.step("after").status is StepStatus.COMPLETED


def test_a_timer_that_fires_early_puts_itself_back(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    queue = InlineQueue()
    engine = Engine(store, queue, heartbeat_interval=0)
    wf = engine.start(load_definition(napping(3600)), {"employee": "bob"})
    queue.drain(lambda: store.get(wf.id).step("nap").status is StepStatus.WAITING)
    waiting = store.get(wf.id)
    due = waiting.step("nap").next_attempt_at
    engine.run_job(Job(kind="timer", workflow_id=wf.id, step="nap", attempt=1))
    after = store.get(wf.id)
    nap = after.step("nap")
    assert nap.status is StepStatus.WAITING and nap.next_attempt_at == due
    assert after.history[-1].trigger == "requeue"
    assert after.history[-1].detail == "the timer fired early"
    # A timer of another wait (a stale token) is ignored and changes nothing.
    engine.run_job(Job(kind="timer", workflow_id=wf.id, step="nap", attempt=7))
    assert store.get(wf.id).revision == after.revision


def _wait_until_due(store: SQLiteStore, workflow_id: str) -> None:
    due = store.get(workflow_id).step("nap").next_attempt_at
    assert due is not None
    wait_until(lambda: utcnow() > due, "the sleep's due time to pass")


def _definition_file(tmp_path: Path, duration: float) -> Path:
    path = tmp_path / "nap.yaml"
    path.write_text(yaml.safe_dump(napping(duration)), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_sleeping_workflow_whose_process_is_killed_wakes_after_recovery_sqlite(
    tmp_path: Path,
) -> None:
    """The embedded default: the in-process queue holds the timer in the process that ran the
    workflow. Kill it; `statesaga recover` in a fresh process finds the due time in the SQLite
    file and runs the timer there, for the time it had left."""
    db = tmp_path / "shared.db"
    store_url = f"sqlite:///{db}"
    runner = subprocess.Popen(
        [*statesaga_command(), "run", str(_definition_file(tmp_path, 2.0)),
         "--input", '{"employee": "bob"}', "--store", store_url, "--queue", "inline://"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    store = SQLiteStore(db)
    try:

        def sleeping() -> bool:
            found = store.list() if db.exists() else []
            return bool(found) and found[0].step("nap").status is StepStatus.WAITING

        wait_until(sleeping, "the workflow to reach its sleep")
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
    finally:
        if runner.poll() is None:
            runner.kill()
    wf = store.list()[0]
    assert wf.status is WorkflowStatus.RUNNING and wf.step("nap").status is StepStatus.WAITING
    # Until the sleep is due nothing is lost (the scan leaves merely waiting workflows alone);
    # once it is due, the timer that died with the process should have fired.
    _wait_until_due(store, wf.id)

    recover = subprocess.run(
        [*statesaga_command(), "recover", "--once", "--timeout", "0", "--store", store_url,
         "--queue", "inline://", "--handlers", "statesaga.examples.expense_handlers"],
        cwd=tmp_path, capture_output=True, text=True, timeout=LIMIT, check=False,
    )  # fmt: skip
    assert recover.returncode == 0, recover.stderr
    assert f"resumed {wf.id}" in recover.stdout
    done = store.get(wf.id)
    assert done.status is WorkflowStatus.COMPLETED
    nap = [(h.trigger, h.detail) for h in done.history if h.step == "nap"]
    assert nap == [("schedule", None), ("requeue", "resumed"), ("wake", None)]


@pytest.mark.redis
@pytest.mark.slow
def test_a_timer_whose_worker_is_killed_fires_after_recovery_on_rq(
    tmp_path: Path, redis_url: str
) -> None:
    """RQ: the timer is a scheduled RQ job. The worker that ran the steps is SIGKILLed while
    the timer is pending; recovery resumes the workflow (re-enqueueing the timer for the time
    left), and a fresh worker with the scheduler fires it, once."""
    import redis as redis_lib
    from statesaga.adapters.queues.rq.queue import RQQueue

    conn = redis_lib.Redis.from_url(redis_url)
    conn.flushdb()
    queue_url = redis_url.replace("redis://", "rq://", 1) + f"?queue=t-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "shared.db"
    store_url = f"sqlite:///{db}"
    env = {**os.environ}

    def worker(name: str, *extra: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115  (the child owns it)
        return subprocess.Popen(
            [*statesaga_command(), "worker", "--queue", queue_url, "--store", store_url,
             "--handlers", "statesaga.examples.expense_handlers", "--heartbeat", "1",
             "--name", f"{name}-{uuid.uuid4().hex[:6]}", *extra],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    store = SQLiteStore(db)
    engine = Engine(store, RQQueue.from_url(queue_url), heartbeat_interval=0)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # The first worker runs without the scheduler, so its death leaves no scheduler lock.
        first = worker("first")
        procs.append(first)
        wf = engine.start(load_definition(_definition_file(tmp_path, 3.0)), {"employee": "bob"})
        wait_until(
            lambda: store.get(wf.id).step("nap").status is StepStatus.WAITING,
            "the first worker to run `submit` and start the sleep",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        # Not due yet: nothing is lost, so nothing is resumed (the scheduled job is in Redis).
        assert Recovery(engine, timeout=0.0).run_once().resumed == []
        _wait_until_due(store, wf.id)  # due, and no scheduler has fired it: recover it

        report = Recovery(engine, timeout=0.0).run_once()
        assert report.resumed == [wf.id]
        procs.append(worker("second", "--with-scheduler"))
        done = engine.wait(wf.id, timeout=LIMIT)
    finally:
        stop(procs)
        for name in ("first", "second"):
            log = tmp_path / f"{name}.log"
            if log.exists():
                sys.stderr.write(f"--- {name} ---\n{log.read_text(errors='replace')[-3000:]}\n")
        conn.flushdb()
    assert done.status is WorkflowStatus.COMPLETED
    triggers = [h.trigger for h in done.history if h.step == "nap"]
    assert triggers.count("wake") == 1 and "requeue" in triggers
    assert done.step("after").status is StepStatus.COMPLETED
