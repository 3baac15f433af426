"""Eager dispatch (the default) and the settle without a second read, on real components:
the settle of a step claims the next ready step in the same save and the worker that ran the
step runs it at once; parallel branches still go through the queue to other workers."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from statesaga import Job, Registry, StepStatus, WorkflowStatus
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.queues.rq.queue import RQQueue
from statesaga.adapters.queues.rq.worker import make_rq_worker
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.context import StepContext
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.models import WorkflowState
from statesaga.ports import Queue
from statesaga.runtime.recovery import Recovery
from statesaga.verify.simulation import run_seeds
from statesaga.worker import serving

HELD = "held by the worker that ran the last step, claimed right before its call"
CLAIMED = "claimed by the worker that ran the last step"


class CountingStore(SQLiteStore):
    """A real SQLite store that counts document reads."""

    reads = 0

    def get(self, workflow_id: str) -> WorkflowState:
        self.reads += 1
        return super().get(workflow_id)


def _registry(ran: list[str]) -> Registry:
    reg = Registry()
    for name in ("a", "b", "c", "d", "s0", "s1", "s2"):
        reg.register_handler(name, lambda ctx: ran.append(ctx.step) or {"v": ctx.step})
    reg.register_handler("undo", lambda ctx: None)
    return reg


def _claimed(wf: WorkflowState, detail: str = CLAIMED) -> list[str]:
    return [h.step or "" for h in wf.history if h.trigger == "dispatch" and h.detail == detail]


# Steps with a compensation: a lost claimed attempt of one is undone by its key, so the settle
# of the step before claims it in its own save (no write of its own before the call).
DIAMOND = {
    "workflow": "diamond",
    "steps": [
        {"name": "a", "action": "a", "compensation": "undo"},
        {"name": "b", "action": "b", "depends_on": ["a"], "compensation": "undo"},
        {"name": "c", "action": "c", "depends_on": ["a"], "compensation": "undo"},
        {"name": "d", "action": "d", "depends_on": ["b", "c"], "compensation": "undo"},
    ],
}
THREE = {
    "workflow": "three",
    "steps": [{"name": f"s{i}", "action": f"s{i}", "compensation": "undo"} for i in range(3)],
}


@pytest.mark.redis
def test_on_rq_the_worker_runs_the_next_step_and_a_parallel_branch_goes_to_the_queue(
    redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    url = redis_url.replace("redis://", "rq://", 1) + f"?queue=q-{uuid.uuid4().hex[:8]}"
    ran: list[str] = []
    client = Engine(SQLiteStore(tmp_path / "s.db"), RQQueue.from_url(url), _registry(ran))
    worker_queue = RQQueue.from_url(url)
    worker = Engine(
        CountingStore(tmp_path / "s.db"), worker_queue, _registry(ran), heartbeat_interval=0
    )
    jobs: list[str] = []

    def runner(job: Job) -> None:
        jobs.append(job.step)
        worker.run_job(job)

    wf = client.start(load_definition(DIAMOND))
    with serving(runner):
        make_rq_worker(worker_queue.rq_queue).work(burst=True, logging_level="WARNING")
    done = client.get(wf.id)
    assert done.status is WorkflowStatus.COMPLETED
    assert [s.attempts for s in done.steps] == [1, 1, 1, 1]
    assert sorted(ran) == ["a", "b", "c", "d"]
    # Four steps, two RQ jobs: `a` ran b (or c) itself; the other branch went to the queue and
    # the job that ran it found d ready and ran it too.
    assert jobs == ["a", "c"]
    assert _claimed(done) == ["b", "d"]
    # One read per RQ job (its claim): each settle works on the document its claim saved.
    assert worker.store.reads == 2  # type: ignore[attr-defined]


def test_a_sequential_saga_is_read_once_and_saved_once_per_step(tmp_path: Path) -> None:
    ran: list[str] = []
    store = CountingStore(tmp_path / "s.db")
    engine = Engine(store, InlineQueue(), _registry(ran), heartbeat_interval=0)
    wf = engine.start(load_definition(THREE))
    store.reads = 0
    engine.queue.drain(lambda: False)
    assert store.reads == 1  # the first step's claim; nothing after it reads
    done = engine.get(wf.id)
    assert done.status is WorkflowStatus.COMPLETED and ran == ["s0", "s1", "s2"]
    assert done.revision == 1 + 1 + 3  # create, the first claim, one save per step
    assert _claimed(done) == ["s1", "s2"]


def test_what_a_handler_does_to_its_arguments_never_reaches_the_store(tmp_path: Path) -> None:
    reg = Registry()

    def meddle(ctx: StepContext) -> dict[str, Any]:
        ctx.input["order"]["qty"] = -1  # type: ignore[index]
        for result in ctx.results.values():
            result["v"] = "changed"
        ctx.params["items"].append("extra")
        return {"v": ctx.step}

    for name in ("s0", "s1", "s2"):
        reg.register_handler(name, meddle)
    definition = load_definition(
        {
            "workflow": "meddling",
            "steps": [
                {"name": f"s{i}", "action": f"s{i}", "params": {"items": "${input.items}"}}
                for i in range(3)
            ],
        }
    )
    engine = Engine(SQLiteStore(tmp_path / "s.db"), InlineQueue(), reg, heartbeat_interval=0)
    done = engine.run(definition, {"order": {"qty": 2}, "items": ["x"]})
    assert done.status is WorkflowStatus.COMPLETED
    assert done.input == {"order": {"qty": 2}, "items": ["x"]}
    assert done.results == {"s0": {"v": "s0"}, "s1": {"v": "s1"}, "s2": {"v": "s2"}}


class Crash(Exception):
    """The worker dies (raised by the probe at a boundary)."""


def test_a_worker_lost_after_claiming_the_next_step_is_recovered(tmp_path: Path) -> None:
    ran: list[str] = []
    store = SQLiteStore(tmp_path / "s.db")

    def die_after_the_first_settle(boundary: str, job: Job) -> None:
        if boundary == "after_save" and job.step == "s0":
            raise Crash

    dying = Engine(
        store, InlineQueue(), _registry(ran), heartbeat_interval=0, probe=die_after_the_first_settle
    )
    wf = dying.start(load_definition(THREE))
    with pytest.raises(Crash):
        dying.queue.drain(lambda: False)
    lost = store.get(wf.id)
    assert [s.status for s in lost.steps] == [
        StepStatus.COMPLETED,
        StepStatus.EXECUTING,  # claimed in the settle's save; its worker died before running it
        StepStatus.PENDING,
    ]
    assert ran == ["s0"]
    fresh = Engine(store, InlineQueue(), _registry(ran), heartbeat_interval=0)
    report = Recovery(fresh, timeout=0).run_once()
    assert report.resumed == [wf.id]
    done = fresh.wait(wf.id, timeout=10)
    assert done.status is WorkflowStatus.COMPLETED
    assert ran == ["s0", "s1", "s2"]
    assert done.step("s1").attempts == 2  # the lost attempt counts; a zombie's result is stale


def test_renew_rearms_an_armed_rq_alarm_with_the_next_steps_timeout(redis_url: str) -> None:
    queue: Queue = RQQueue.from_url(redis_url.replace("redis://", "rq://", 1))
    assert isinstance(queue, RQQueue)
    job = Job(kind="step", workflow_id="WF-1", step="s1", attempt=1, timeout=5)
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        queue.renew(job)  # no alarm armed (not inside an RQ job with a timeout): left alone
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
        signal.alarm(1000)
        queue.renew(job)
        assert 30 < signal.getitimer(signal.ITIMER_REAL)[0] <= 35  # 5 s + the 30 s margin
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        queue.close()


@pytest.mark.parametrize(
    ("saga", "seeds"), [("tests/sagas/chaos.yaml", 200), ("examples/trip.yaml", 200)]
)
@pytest.mark.slow
def test_the_simulation_invariants_hold_with_every_step_through_the_queue(
    saga: str, seeds: int
) -> None:
    """The simulation runs the engine's default (eager dispatch) in tests/test_simulation.py;
    this runs the other way, used by the step-at-a-time managers and a worker shutting down."""
    root = Path(__file__).resolve().parents[1]
    summary = run_seeds(load_definition(root / saga), range(seeds), eager=False)
    assert summary.ran == seeds
    assert summary.ok, summary.failed[0].report()


@pytest.mark.redis
@pytest.mark.parametrize("flag", ["--eager", "--no-eager"])
@pytest.mark.slow
def test_statesaga_worker_runs_a_saga_in_one_rq_job_unless_told_not_to(
    flag: str, redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    import subprocess
    import sys

    url = redis_url.replace("redis://", "rq://", 1) + f"?queue=q-{uuid.uuid4().hex[:8]}"
    store = f"sqlite:///{tmp_path / 'w.db'}"
    queue = RQQueue.from_url(url)
    client = Engine(SQLiteStore(tmp_path / "w.db"), queue)
    data = {"origin": "TPE", "destination": "NRT", "nights": 2, "amount": 10, "email": "a@b.c"}
    wf = client.start(load_definition(Path("examples/trip.yaml")), data)
    worker = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", "worker", "--burst", flag, "--queue", url,
         "--store", store, "--handlers", "statesaga.examples.trip_handlers"],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=str(Path(__file__).resolve().parents[1]),
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-2000:]
    done = client.get(wf.id)
    assert done.status is WorkflowStatus.COMPLETED
    assert [s.attempts for s in done.steps] == [1] * 5
    names = [s.name for s in done.steps]
    ran = queue.rq_queue.finished_job_registry.get_job_ids()
    if flag == "--eager":
        # The pivot and the step after it (no compensation) are held, each claimed by its own
        # save right before its call: still one RQ job.
        assert _claimed(done) == names[1:3] and len(ran) == 1
        assert _claimed(done, HELD) == names[3:]
    else:
        assert _claimed(done) == [] and len(ran) == 5
    queue.close()


def test_the_run_display_prints_each_step_as_it_is_saved(tmp_path: Path) -> None:
    """With eager dispatch a saga is one job; `statesaga run` still shows each transition as
    it is saved, not all of them when the saga ends."""
    import io

    from rich.console import Console
    from statesaga.cli.console import run_with_progress

    out = io.StringIO()
    seen_by_s2: list[str] = []
    reg = Registry()
    for name in ("s0", "s1"):
        reg.register_handler(name, lambda ctx: None)
    reg.register_handler("s2", lambda ctx: seen_by_s2.append(out.getvalue()))
    reg.register_handler("undo", lambda ctx: None)
    engine = Engine(SQLiteStore(tmp_path / "s.db"), InlineQueue(), reg, heartbeat_interval=0)
    console = Console(file=out, width=200, color_system=None)
    final = run_with_progress(engine, load_definition(THREE), {}, console)
    assert final.status is WorkflowStatus.COMPLETED
    [shown] = seen_by_s2
    assert [line.split()[1:3] for line in shown.splitlines()[1:]][-4:] == [
        ["s1", "succeed"], ["(workflow)", "advance"], ["s2", "schedule"], ["s2", "dispatch"],
    ]  # fmt: skip
    assert out.getvalue().count("succeed") == 3  # and nothing printed twice
    assert engine.listeners == [engine.telemetry.observe]  # run's own listener is gone
