"""Recovery: which workflows count as lost, resume of forward work and of a half-done
compensation, a zombie attempt rejected, `statesaga recover` after a real SIGKILL, and a Redis
restart in the middle of a run (every job lost) recovered from what the store says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import ops_redis
import pytest
from statesaga import Registry, StepStatus, WorkflowStatus
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.context import StepContext
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.models import utcnow
from statesaga.plugins import open_queue
from statesaga.runtime.recovery import Recovery, RecoveryAction, get_recoverable_workflows
from statesaga.verify.crashcheck import LEDGER_ENV, Ledger, check_ledger, trip_scenarios

WAIT = 30  # seconds a blocked handler or a helper process may take at most (a safety net)
LEDGER_HANDLERS = "statesaga.examples.ledger_handlers"


@pytest.fixture
def trip() -> tuple[Any, dict[str, Any]]:
    scenario = trip_scenarios()[0]
    definition = load_definition(scenario.definition)
    definition.spec = definition.spec.model_copy(update={"handlers": (LEDGER_HANDLERS,)})
    return definition, dict(scenario.input)


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(LEDGER_ENV, str(path))
    return Ledger(path)


def engine_on(path: Path, **kwargs: Any) -> Engine:
    """A fresh engine on a shared SQLite file: what a new worker process would build."""
    reg = Registry()
    reg.register_module(LEDGER_HANDLERS)
    return Engine(SQLiteStore(path), InlineQueue(), reg, heartbeat_interval=0, **kwargs)


class Later:
    """The clock of a recovery process looking at the store some minutes from now."""

    def __init__(self, minutes: float) -> None:
        self.at = utcnow() + timedelta(minutes=minutes)

    def now(self) -> datetime:
        return self.at


def test_recoverable_means_stale_active_or_suspended(tmp_path: Path, trip: Any) -> None:
    definition, data = trip
    engine = engine_on(tmp_path / "s.db")
    store = engine.store
    stale = engine.start(definition, data, session_id="s1")
    fresh = engine.start(definition, data, session_id="s1")
    parked = engine.start(definition, data, session_id="s2")
    engine.suspend(parked.id)
    done = engine_on(tmp_path / "s.db").run(definition, data)  # its own queue: only this one
    later = Later(5)
    store.heartbeat(fresh.id, later.now() - timedelta(seconds=10))  # its worker is alive

    found = {wf.id for wf in get_recoverable_workflows(store, 60, clock=later)}
    assert found == {stale.id, parked.id}
    assert done.status is WorkflowStatus.COMPLETED
    assert {wf.id for wf in get_recoverable_workflows(store, 60, "s1", clock=later)} == {stale.id}
    assert {wf.id for wf in get_recoverable_workflows(store, 0.0, clock=Later(6))} == {
        stale.id,
        fresh.id,
        parked.id,
    }


def test_resume_picks_up_a_suspended_workflow(tmp_path: Path, trip: Any, ledger: Ledger) -> None:
    definition, data = trip
    engine = engine_on(tmp_path / "s.db")
    wf = engine.start(definition, data)
    engine.suspend(wf.id, reason="operator")
    engine.queue.drain()  # the queued job is stale while SUSPENDED
    assert engine.get(wf.id).status is WorkflowStatus.SUSPENDED
    assert ledger.records() == []

    report = Recovery(engine_on(tmp_path / "s.db"), timeout=60).run_once()
    assert report.resumed == [wf.id]
    worker = engine_on(tmp_path / "s.db")
    report = Recovery(worker, timeout=0).run_once()  # RUNNING now, heartbeat 0 s old
    worker.wait(wf.id, WAIT)
    final = worker.get(wf.id)
    assert final.status is WorkflowStatus.COMPLETED
    assert check_ledger(ledger.records(), [final]) == []


def test_resume_of_a_half_done_compensation(tmp_path: Path, trip: Any, ledger: Ledger) -> None:
    definition, data = trip
    first = engine_on(tmp_path / "s.db")
    wf = first.start(definition, dict(data, fail_at="reserve_car"))

    def hotel_undone() -> bool:
        return first.get(wf.id).step("reserve_hotel").status is StepStatus.COMPENSATED

    first.queue.drain(hotel_undone)
    half = first.get(wf.id)
    assert half.status is WorkflowStatus.COMPENSATING
    assert half.step("reserve_flight").status is StepStatus.COMPENSATING
    # The process holding the queue dies: the job undoing the flight is lost with it.
    first.queue.close()

    worker = engine_on(tmp_path / "s.db")
    report = Recovery(worker, timeout=0).run_once()
    assert report.resumed == [wf.id]
    worker.wait(wf.id, WAIT)
    final = worker.get(wf.id)
    assert final.status is WorkflowStatus.COMPENSATED
    assert [s.status for s in final.steps] == [
        StepStatus.COMPENSATED,
        StepStatus.COMPENSATED,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
        StepStatus.SKIPPED,
    ]
    undos = [(r.step, r.fresh) for r in ledger.records() if r.op == "undo"]
    assert undos == [("reserve_hotel", True), ("reserve_flight", True)]
    assert check_ledger(ledger.records(), [final]) == []
    resumes = [h for h in final.history if h.trigger == "resume"]
    assert [(h.source, h.dest) for h in resumes] == [("COMPENSATING", "COMPENSATING")]


def test_a_zombie_attempt_finishing_after_resume_is_rejected(tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []
    entered, release = threading.Event(), threading.Event()

    def pay(ctx: StepContext) -> dict[str, Any]:
        calls.append((ctx.attempt_key, ctx.attempt))
        if ctx.attempt == 1:  # the zombie: its worker is taken for dead while it runs
            entered.set()
            assert release.wait(WAIT)
        return {"receipt": f"R{ctx.attempt}"}

    def ship(ctx: StepContext) -> dict[str, Any]:
        calls.append((ctx.attempt_key, ctx.attempt))
        return {"parcel": ctx.params["receipt"]}

    def make() -> Engine:
        reg = Registry()
        reg.register_handler("pay", pay)
        reg.register_handler("ship", ship)
        return Engine(SQLiteStore(tmp_path / "z.db"), InlineQueue(), reg, heartbeat_interval=0)

    definition = load_definition(
        {
            "workflow": "zombie",
            "defaults": {"retry": {"max_attempts": 3, "initial_interval": 0.01}},
            "steps": [
                {"name": "pay", "action": "pay"},
                {"name": "ship", "action": "ship", "params": {"receipt": "${steps.pay.receipt}"}},
            ],
        }
    )
    zombie = make()
    wf = zombie.start(definition)
    thread = threading.Thread(target=zombie.queue.drain, daemon=True)
    thread.start()
    assert entered.wait(WAIT)

    rescuer = make()
    resumed = rescuer.resume(wf.id)
    assert resumed.step("pay").status is StepStatus.RETRYING  # attempt 1 counted as lost
    rescuer.wait(wf.id, WAIT)
    done = rescuer.get(wf.id)
    assert done.status is WorkflowStatus.COMPLETED
    assert done.results["pay"] == {"receipt": "R2"}

    release.set()  # the zombie reports back now
    thread.join(WAIT)
    final = rescuer.get(wf.id)
    assert final.revision == done.revision  # its result applied nothing
    assert final.results == {"pay": {"receipt": "R2"}, "ship": {"parcel": "R2"}}
    assert final.step("pay").attempts == 2
    assert [key for key, _ in calls] == [
        f"{wf.id}:pay:1",
        f"{wf.id}:pay:2",
        f"{wf.id}:ship:1",
    ]


# -- real processes -------------------------------------------------------------------------
def crash_worker(spec: dict[str, Any], env: dict[str, str]) -> int:
    proc = subprocess.run(
        [sys.executable, "-m", "statesaga.verify.crashcheck", json.dumps(spec)],
        env=env,
        capture_output=True,
        timeout=WAIT * 2,
        check=False,
    )
    return proc.returncode


@pytest.mark.slow
def test_cli_recover_after_a_worker_was_killed(tmp_path: Path, trip: Any) -> None:
    definition, data = trip
    store = f"sqlite:///{tmp_path / 's.db'}"
    ledger_path = tmp_path / "ledger.jsonl"
    env = dict(os.environ, **{LEDGER_ENV: str(ledger_path)})
    spec = {
        "store": store,
        "queue": "inline://",
        "handlers": [LEDGER_HANDLERS],
        "definition": definition.file,
        "input": data,
        "kill_at": ["after_action", 3],
    }
    assert crash_worker(spec, env) == -signal.SIGKILL

    stuck = SQLiteStore(tmp_path / "s.db").list()
    assert [wf.step("reserve_car").status for wf in stuck] == [StepStatus.EXECUTING]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "statesaga.cli",
            "recover",
            "--once",
            "--timeout",
            "0",
            "--store",
            store,
            "--handlers",
            LEDGER_HANDLERS,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"resumed {stuck[0].id}" in proc.stdout
    final = SQLiteStore(tmp_path / "s.db").get(stuck[0].id)
    assert final.status is WorkflowStatus.COMPLETED
    car = final.step("reserve_car")
    assert car.attempts == 2
    assert [h.detail for h in final.history if h.trigger == "time_out"] == [
        "worker lost (heartbeat stale); resumed"
    ]
    assert check_ledger(Ledger(ledger_path).records(), [final]) == []


@pytest.mark.slow
def test_cli_recover_cancel_compensates_a_lost_workflow(tmp_path: Path, trip: Any) -> None:
    definition, data = trip
    store = f"sqlite:///{tmp_path / 's.db'}"
    ledger_path = tmp_path / "ledger.jsonl"
    env = dict(os.environ, **{LEDGER_ENV: str(ledger_path)})
    spec = {
        "store": store,
        "queue": "inline://",
        "handlers": [LEDGER_HANDLERS],
        "definition": definition.file,
        "input": data,
        # The hotel's outcome saved, with the car claimed by the same save (eager dispatch);
        # the worker dies before it runs the car.
        "kill_at": ["after_save", 2],
    }
    assert crash_worker(spec, env) == -signal.SIGKILL
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "statesaga.cli",
            "recover",
            "--cancel",
            "--timeout",
            "0",
            "--store",
            store,
            "--handlers",
            LEDGER_HANDLERS,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    [final] = SQLiteStore(tmp_path / "s.db").list()
    assert final.status is WorkflowStatus.COMPENSATED
    # The car's claimed attempt is lost: its outcome is unknown to recovery, so it is undone
    # by its key (the undo finds nothing applied); the others are undone for real.
    car = final.step("reserve_car")
    assert car.status is StepStatus.COMPENSATED and car.in_doubt and car.result is None
    records = Ledger(ledger_path).records()
    assert not [r for r in records if r.step == "reserve_car" and r.op != "undo"]
    assert sorted(r.step for r in records if r.op == "undo") == ["reserve_flight", "reserve_hotel"]
    assert check_ledger(records, [final]) == []


# -- Redis restarted in the middle of a run ------------------------------------------------
class RedisServer(ops_redis.RedisServer):
    """A redis-server of this test alone, on its own port, so it can be restarted. No
    persistence: a restart loses every queued job, the worst case recovery must cover."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, "--save", "", "--appendonly", "no")

    @property
    def url(self) -> str:
        return f"rq://127.0.0.1:{self.port}/0?queue=restart"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.redis
@pytest.mark.slow
def test_redis_restart_mid_run_loses_no_workflow(
    tmp_path: Path, trip: Any, own_redis: RedisServer
) -> None:
    definition, data = trip
    store_path = tmp_path / "s.db"
    store = f"sqlite:///{store_path}"
    ledger_path = tmp_path / "ledger.jsonl"
    env = dict(os.environ, **{LEDGER_ENV: str(ledger_path)})
    starter = Engine(SQLiteStore(store_path), open_queue(own_redis.url), heartbeat_interval=0)
    inputs = [data, dict(data, fail_at="reserve_car"), data]
    ids = [starter.start(definition, i).id for i in inputs]
    # A worker runs part of the work, then dies between saving an outcome and enqueueing
    # what comes next; jobs of the other workflows are still waiting in Redis.
    spec = {
        "store": store,
        "queue": own_redis.url,
        "handlers": [LEDGER_HANDLERS],
        "kill_at": ["after_save", 4],
    }
    assert crash_worker(spec, env) == -signal.SIGKILL
    midway = [SQLiteStore(store_path).get(i) for i in ids]
    assert all(wf.status is not WorkflowStatus.COMPLETED for wf in midway)

    own_redis.stop()
    own_redis.start()  # empty: every queued job is gone

    rescuer = Engine(SQLiteStore(store_path), open_queue(own_redis.url), heartbeat_interval=0)
    report = Recovery(rescuer, timeout=0, action=RecoveryAction.RESUME).run_once()
    assert sorted(report.resumed) == sorted(ids)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "statesaga.cli",
            "worker",
            "--queue",
            own_redis.url,
            "--store",
            store,
            "--handlers",
            LEDGER_HANDLERS,
            "--with-scheduler",
            "--log-level",
            "WARNING",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        final = rescuer.wait(ids[0], WAIT)
        for wf_id in ids:
            final = rescuer.wait(wf_id, WAIT)
            assert final.status in (WorkflowStatus.COMPLETED, WorkflowStatus.COMPENSATED)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(WAIT)
    finals = [rescuer.get(i) for i in ids]
    assert [wf.status for wf in finals] == [
        WorkflowStatus.COMPLETED,
        WorkflowStatus.COMPENSATED,
        WorkflowStatus.COMPLETED,
    ]
    assert get_recoverable_workflows(rescuer.store, 0.0) == []
    assert check_ledger(Ledger(ledger_path).records(), finals) == []


def test_a_workflow_only_waiting_for_a_signal_is_not_lost_until_its_timeout_is_due(
    tmp_path: Path,
) -> None:
    reg = Registry()
    reg.register_handler("noop", lambda ctx: None)
    engine = Engine(SQLiteStore(tmp_path / "w.db"), InlineQueue(), reg, heartbeat_interval=0)
    definition = load_definition(
        {
            "workflow": "approval",
            "steps": [
                {"name": "ask", "action": "noop"},
                {"name": "approval", "signal": "approve", "timeout": 3600},
            ],
        }
    )
    wf = engine.start(definition)
    waiting = engine.wait(wf.id)
    assert waiting.step("approval").status is StepStatus.WAITING
    # Its heartbeat is stale (nothing runs), yet nothing is lost: no scan picks it up...
    assert get_recoverable_workflows(engine.store, timeout=0) == []

    # ...until the wait's due time has passed and its timer should have fired.
    class Later:
        def now(self) -> datetime:
            return utcnow() + timedelta(hours=2)

    found = get_recoverable_workflows(engine.store, timeout=0, clock=Later())
    assert [w.id for w in found] == [wf.id]
