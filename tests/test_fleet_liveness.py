"""A worker SIGKILLed mid-step stays in RQ's registry as `busy` until its entry's TTL runs out
(minutes), and RQ's own heartbeat does not move while an in-process job runs: the workers
page, /api/workers and the `statesaga_workers` gauge judge a busy worker by the heartbeat of
the saga it runs, and show the step it runs now (a worker runs the steps its own settle
claims inside the job it was given). The real fleet is in tests/test_web_fleet.py."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from statesaga.adapters.stores.memory import MemoryStore
from statesaga.models import HistoryEntry, SagaStep, StepStatus, WorkflowState, WorkflowStatus
from statesaga.observability.fleet import Fleet, WorkerInfo, with_saga_beats

NOW = datetime(2026, 12, 6, 19, 40, tzinfo=UTC)
JOB_START = NOW - timedelta(seconds=90)


def _saga(store: MemoryStore, beat_age: float, by: str) -> str:
    steps = [
        SagaStep(id="s1", name="reserve", action_type="a", status=StepStatus.COMPLETED),
        SagaStep(id="s2", name="charge", action_type="a", status=StepStatus.EXECUTING),
    ]
    history = [
        HistoryEntry(
            at=JOB_START,
            chart="step",
            trigger="dispatch",
            source="QUEUED",
            dest="EXECUTING",
            step="reserve",
            attempt=1,
            by=by,
        ),
        HistoryEntry(
            at=JOB_START,
            chart="step",
            trigger="dispatch",
            source="QUEUED",
            dest="EXECUTING",
            step="charge",
            attempt=2,
            by=by,
        ),
    ]
    wf = WorkflowState(
        name="order",
        status=WorkflowStatus.RUNNING,
        steps=steps,
        history=history,
        heartbeat_at=NOW - timedelta(seconds=beat_age),
    )
    store.create(wf)
    return wf.id


def _busy(name: str, wf_id: str) -> WorkerInfo:
    # RQ's beat is as old as the job: it does not move while an in-process job runs.
    return WorkerInfo(
        name=name,
        host="h",
        pid=1,
        state="busy",
        queues=("q",),
        last_beat=JOB_START,
        workflow_id=wf_id,
        step="reserve",
        kind="step",
        attempt=1,
        job_id="j",
    )


def test_a_busy_worker_whose_saga_stopped_beating_is_silent_not_live() -> None:
    store = MemoryStore()
    alive = _busy("w-alive", _saga(store, beat_age=1, by="w-alive"))
    dead = _busy("w-dead", _saga(store, beat_age=45, by="w-dead"))
    idle = WorkerInfo(name="w-idle", host="h", pid=3, state="idle", queues=("q",), last_beat=NOW)
    fleet = with_saga_beats(Fleet("rq", (alive, dead, idle)), store, 30.0, now=NOW)
    by_name = {w.name: w for w in fleet.workers}
    assert not by_name["w-alive"].silent
    assert by_name["w-dead"].silent
    assert (fleet.live, fleet.busy, fleet.idle, fleet.silent) == (2, 1, 1, 1)
    # The age an operator reads is the saga's beat, not RQ's 90-second-old one.
    assert by_name["w-alive"].beat() == NOW - timedelta(seconds=1)
    assert fleet.as_json()["workers"][1]["silent"] is True


def test_the_step_shown_is_the_one_the_worker_claimed_last() -> None:
    store = MemoryStore()
    w = _busy("w1", _saga(store, beat_age=1, by="w1"))
    shown = with_saga_beats(Fleet("rq", (w,)), store, 30.0, now=NOW).workers[0]
    assert (shown.step, shown.kind, shown.attempt) == ("charge", "step", 2)


def test_a_saga_that_cannot_be_read_leaves_the_worker_as_the_queue_says() -> None:
    w = _busy("w1", "WF-missing")
    shown = with_saga_beats(Fleet("rq", (w,)), MemoryStore(), 30.0, now=NOW).workers[0]
    assert shown == w


def test_a_stuck_saga_whose_step_only_waits_in_the_queue_does_not_blame_a_dead_worker(
    tmp_path: Path,
) -> None:
    """A backlog (every worker busy, none listening) leaves a saga's step QUEUED with a
    stale heartbeat: `recover` would take it, but no worker died in it; the page says so."""
    pytest.importorskip("starlette", reason="the dashboard needs the ui extra")
    with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx works
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    from statesaga.plugins import open_store
    from statesaga.web import ServeSettings, create_app

    url = f"sqlite:///{tmp_path / 'web.db'}"
    store = open_store(url)
    store.initialize()
    old = datetime.now(UTC) - timedelta(minutes=4)
    queued = WorkflowState(
        name="order",
        status=WorkflowStatus.RUNNING,
        steps=[SagaStep(id="s1", name="reserve", action_type="a", status=StepStatus.QUEUED)],
        created_at=old,
        heartbeat_at=old,
    )
    running = queued.model_copy(deep=True, update={"id": "WF-running"})
    running.steps[0].status = StepStatus.EXECUTING
    store.create(queued)
    store.create(running)
    store.close()
    with TestClient(create_app(ServeSettings(store=url, queue="inline://"))) as client:
        waits = client.get(f"/workflows/{queued.id}").text
        died = client.get("/workflows/WF-running").text
    assert 'id="stuck"' in waits and 'id="stuck"' in died
    assert "its step reserve has waited in the queue" in waits
    assert "most likely died" not in waits
    assert "most likely died" in died
