"""The origin design's async managers, awaited against a real SQLite file (and RQ workers)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.compat.managers import (
    HeartbeatManager,
    RQTaskWrapper,
    SagaManager,
    StepExecutionError,
    WorkflowExecutor,
    WorkflowRecoveryManager,
    WorkflowStateManager,
)
from statesaga.compat.todo import Todo, workflow_from_todos
from statesaga.context import StepContext
from statesaga.engine import Engine
from statesaga.errors import ConflictError, RegistryError, StateError
from statesaga.models import (
    CompensationStrategy,
    RetryPolicy,
    StepStatus,
    WorkflowState,
    WorkflowStatus,
)
from statesaga.plugins import open_queue, open_store
from statesaga.ports import Job, Store, SystemClock

WF_ID = re.compile(r"^WF-\d{8}-[0-9a-f]{8}$")
COMP_ID = re.compile(r"^COMP-\d{8}-[0-9a-f]{8}$")
FAST = RetryPolicy(max_attempts=3, initial_interval=0.01, backoff_rate=2.0, non_retryable=["Nope"])


class Nope(Exception):
    """A failure that retrying cannot fix."""


class Recorder:
    """Handlers that record what they were asked to do."""

    def __init__(self, fail_at: str | None = None, flaky: int = 0) -> None:
        self.calls: list[tuple[str, int]] = []
        self.undone: list[Any] = []
        self.fail_at = fail_at
        self.flaky = flaky

    def work(self, ctx: StepContext) -> dict[str, Any]:
        self.calls.append((ctx.params["title"], ctx.attempt))
        if ctx.params["title"] == self.fail_at:
            raise Nope("cannot")
        if ctx.attempt <= self.flaky:
            raise ConnectionError(f"attempt {ctx.attempt} lost")
        return {"did": ctx.params["title"]}

    async def undo(self, ctx: StepContext) -> dict[str, Any]:
        self.undone.append(ctx.result)
        return {"undid": ctx.result["did"]}


class RecordingQueue(InlineQueue):
    """The real inline queue, remembering the delay every job was enqueued with."""

    def __init__(self) -> None:
        super().__init__()
        self.delays: list[tuple[str, int, float]] = []

    def enqueue(self, job: Job, delay: float = 0.0) -> None:
        self.delays.append((job.step, job.attempt, delay))
        super().enqueue(job, delay)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    s = open_store(sqlite_url)
    s.initialize()
    yield s
    s.close()


def make_engine(store: Store, queue: Any = None) -> Engine:
    return Engine(store, queue or open_queue("inline://"), heartbeat_interval=0)


def todo_workflow(session: str = "s1", n: int = 2, **kw: Any) -> tuple[WorkflowState, list[Todo]]:
    todos = [Todo(title=f"todo {i + 1}", session_id=session) for i in range(n)]
    kw.setdefault("retry", FAST)
    return workflow_from_todos(todos, action_type="work", session_id=session, **kw), todos


def managers(engine: Engine, rec: Recorder) -> tuple[WorkflowExecutor, SagaManager]:
    executor = WorkflowExecutor(engine)
    executor.register_handler("work", rec.work)
    saga = SagaManager(engine, retry=FAST)
    saga.register_compensation_handler("work", rec.undo)
    return executor, saga


# -- WorkflowStateManager --------------------------------------------------------------------
def test_state_manager_stores_documents_in_the_sqlite_file(store: Store, sqlite_url: str) -> None:
    async def scenario() -> None:
        state = WorkflowStateManager(store)
        await state.initialize()
        await state.initialize()  # idempotent
        first, _ = todo_workflow("s1")
        second, _ = todo_workflow("s1")
        other, _ = todo_workflow("s2")
        for wf in (first, second, other):
            assert await state.create(wf) is wf
        assert WF_ID.match(first.id) and first.revision == 1
        with pytest.raises(ConflictError):
            await state.create(first)

        got = await state.get(first.id)
        assert got is not None and got.model_dump() == first.model_dump()
        assert await state.get("WF-20260208-00000000") is None

        got.input["note"] = "edited"
        assert (await state.update(got)).revision == 2
        stale = first  # still at revision 1
        stale.reason = "lost update"
        with pytest.raises(ConflictError):
            await state.update(stale)

        assert [w.id for w in await state.list_by_session("s1")] == [first.id, second.id]
        assert [w.id for w in await state.list_by_session("s2")] == [other.id]
        assert await state.list_by_session("nobody") == []

        assert (await state.get(first.id)).heartbeat_at is None  # type: ignore[union-attr]
        await state.update_heartbeat(first.id)
        beat = await state.get(first.id)
        assert beat is not None and beat.heartbeat_at is not None and beat.revision == 2

    asyncio.run(scenario())
    # A fresh store on the same file (another process would see the same): the edit and the
    # revision check's winner are what was written.
    again = open_store(sqlite_url)
    docs = again.list(session_id="s1")
    assert docs[0].input == {"note": "edited"} and docs[0].reason is None
    again.close()


# -- WorkflowExecutor ------------------------------------------------------------------------
def test_execute_step_runs_each_step_through_the_engine(store: Store) -> None:
    rec = Recorder()
    engine = make_engine(store)
    executor, _ = managers(engine, rec)

    async def scenario() -> None:
        wf, todos = todo_workflow()
        first, second = wf.steps
        results: dict[str, Any] = {}
        # Not stored yet: execute_step stores and starts it.
        assert await executor.execute_step(wf, first, results) == {"did": "todo 1"}
        assert first.status is StepStatus.COMPLETED and first.attempts == 1
        assert results == {first.name: {"did": "todo 1"}}
        stored = store.get(wf.id)
        assert stored.status is WorkflowStatus.RUNNING
        assert stored.step(first.name).status is StepStatus.COMPLETED
        # The workflow lifecycle's `advance` queued the next step; it has not run yet.
        assert stored.step(second.name).status is StepStatus.QUEUED
        assert rec.calls == [("todo 1", 1)]

        assert await executor.execute_step(wf, second.name, results) == {"did": "todo 2"}
        stored = store.get(wf.id)
        assert stored.status is WorkflowStatus.COMPLETED and wf.status is WorkflowStatus.COMPLETED
        assert stored.results == results
        # Asking again is answered from the stored document; nothing runs twice.
        assert await executor.execute_step(wf, first) == {"did": "todo 1"}
        assert rec.calls == [("todo 1", 1), ("todo 2", 1)]

    asyncio.run(scenario())


def test_execute_step_retries_with_exponential_backoff(store: Store) -> None:
    rec = Recorder(flaky=2)
    queue = RecordingQueue()
    engine = make_engine(store, queue)
    executor, _ = managers(engine, rec)

    async def scenario() -> None:
        wf, _ = todo_workflow(n=1)
        await WorkflowStateManager(store).create(wf)
        (step,) = wf.steps
        assert await executor.execute_step(wf, step, {}) == {"did": "todo 1"}
        assert step.attempts == 3 and step.status is StepStatus.COMPLETED

    asyncio.run(scenario())
    name = store.list()[0].steps[0].name
    # initial_interval * backoff_rate ** (attempt - 1): 0.01 then 0.02.
    assert [(s, a) for s, a, _ in queue.delays] == [(name, 1), (name, 2), (name, 3)]
    assert [round(d, 6) for _, _, d in queue.delays] == [0.0, 0.01, 0.02]
    history = [(h.trigger, h.dest) for h in store.list()[0].history if h.chart == "step"]
    assert history.count(("fail", "RETRYING")) == 2 and ("succeed", "COMPLETED") in history


def test_execute_step_failure_raises_and_the_engine_unwinds(store: Store) -> None:
    rec = Recorder(fail_at="todo 2")
    engine = make_engine(store)
    executor, saga = managers(engine, rec)

    async def scenario() -> None:
        wf, _ = todo_workflow()
        await WorkflowStateManager(store).create(wf)
        first, second = wf.steps
        for step in wf.steps:
            await saga.create_compensation(wf, step)
        await executor.execute_step(wf, first)
        with pytest.raises(StepExecutionError) as info:
            await executor.execute_step(wf, second)
        assert info.value.error is not None and info.value.error.type == "Nope"
        assert second.status is StepStatus.FAILED and second.attempts == 1  # not retryable
        assert store.get(wf.id).status is WorkflowStatus.COMPENSATING

        final = await saga.compensate_all(wf)
        assert final.status is WorkflowStatus.COMPENSATED
        stored = store.get(wf.id)
        undo = stored.step(first.name)
        assert undo.status is StepStatus.COMPENSATED
        assert undo.compensation is not None and undo.compensation.result == {"undid": "todo 1"}
        assert rec.undone == [{"did": "todo 1"}]
        assert stored.error is not None and stored.error.type == "Nope"

    asyncio.run(scenario())


def test_executor_built_from_store_queue_and_registry(store: Store) -> None:
    rec = Recorder()
    executor = WorkflowExecutor(store)  # queue defaults to inline://
    executor.register_handler("work", rec.work)
    executor.register_handler("work", rec.work)  # registering again replaces

    async def scenario() -> None:
        wf, _ = todo_workflow(n=1)
        assert await executor.execute_step(wf, wf.steps[0]) == {"did": "todo 1"}

    asyncio.run(scenario())
    assert store.list()[0].status is WorkflowStatus.COMPLETED


def test_rq_task_wrapper_runs_job_payloads_once(store: Store) -> None:
    rec = Recorder()
    engine = make_engine(store)
    executor, _ = managers(engine, rec)
    assert RQTaskWrapper.FUNCTION == "statesaga.worker.run_job"
    wf, _ = todo_workflow(n=1)
    store.create(wf)
    engine.start_stored(wf.id)
    stored = store.get(wf.id)
    # What the RQ queue puts on Redis: the job's dict, as JSON.
    payload = json.loads(json.dumps(engine.step_job(stored, stored.steps[0]).to_dict()))
    wrapper = executor.task_wrapper()
    wrapper(payload)
    wrapper(payload)  # a duplicate delivery: its attempt token is stale now
    done = store.get(wf.id)
    assert done.status is WorkflowStatus.COMPLETED and done.steps[0].attempts == 1
    assert rec.calls == [("todo 1", 1)]


@pytest.mark.redis
@pytest.mark.slow
def test_execute_step_on_the_rq_queue_with_a_worker_process(
    sqlite_url: str, redis_url: str, redis_client: Any
) -> None:
    from statesaga.examples import agent_session

    queue_url = redis_url.replace("redis://", "rq://") + "?queue=managers"
    binary = shutil.which("statesaga", path=os.path.dirname(sys.executable))
    assert binary is not None
    worker = subprocess.Popen(
        [
            binary, "worker", "--queue", queue_url, "--store", sqlite_url,
            "--handlers", "statesaga.examples.agent_session", "--with-scheduler",
            "--heartbeat", "1", "--log-level", "WARNING",
        ],
    )  # fmt: skip
    store = open_store(sqlite_url)
    store.initialize()
    engine = Engine(store, open_queue(queue_url))
    executor = WorkflowExecutor(engine)
    executor.register_handler(agent_session.ACTION, agent_session.agent_task)
    saga = SagaManager(engine)
    saga.register_compensation_handler(agent_session.ACTION, agent_session.undo_agent_task)
    todos = [Todo(title="plan"), Todo(title="go", params={"fail": True})]
    wf = workflow_from_todos(
        todos, action_type=agent_session.ACTION, session_id="rq", retry=agent_session.RETRY
    )

    async def scenario() -> None:
        await WorkflowStateManager(store).create(wf)
        for step in wf.steps:
            comp = await saga.create_compensation(wf, step)
            assert COMP_ID.match(comp.id)
        first = await executor.execute_step(wf, wf.steps[0], timeout=30)
        assert first["done"] == "plan"
        with pytest.raises(StepExecutionError):
            await executor.execute_step(wf, wf.steps[1], timeout=30)
        final = await saga.compensate_all(wf, timeout=30)
        assert final.status is WorkflowStatus.COMPENSATED

    try:
        asyncio.run(scenario())
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        store.close()
    stored = open_store(sqlite_url).get(wf.id)
    undone = stored.steps[0].compensation
    assert undone is not None and undone.result == {"undone": "plan"}
    # The steps ran in the worker process, not here.
    workers = [h.by for h in stored.history if h.trigger == "dispatch"]
    assert len(workers) == 2 and all(by and by.startswith("statesaga.") for by in workers)


# -- SagaManager -----------------------------------------------------------------------------
def test_create_compensation_is_stored_and_idempotent(store: Store) -> None:
    engine = make_engine(store)
    _, saga = managers(engine, Recorder())

    async def scenario() -> None:
        wf, _ = todo_workflow()
        step = wf.steps[0]
        # Before the workflow is stored: attached to the caller's document only.
        early = await saga.create_compensation(wf, step)
        assert COMP_ID.match(early.id) and step.compensation == early
        await WorkflowStateManager(store).create(wf)
        later = await saga.create_compensation(wf, wf.steps[1], params={"why": "undo"})
        assert COMP_ID.match(later.id) and later.id != early.id
        stored = store.get(wf.id)
        assert stored.revision == 2 and wf.revision == 2
        assert stored.steps[0].compensation == early
        assert stored.steps[1].compensation == later
        assert later.action_type == "work.compensate" and later.step_id == wf.steps[1].name
        assert later.params == {"why": "undo"}
        assert (await saga.create_compensation(wf, wf.steps[1])).id == later.id
        assert store.get(wf.id).revision == 2  # nothing new to save

        other = workflow_from_todos([Todo(title="x")], action_type="other")
        with pytest.raises(RegistryError, match="no compensation handler registered for 'other'"):
            await saga.create_compensation(other, other.steps[0])

    asyncio.run(scenario())
    assert set(saga.strategies) == set(CompensationStrategy)


class RacedStore:
    """The real store, where another process saves the workflow right after each of the
    first `races` reads (so the save that follows loses the revision check)."""

    def __init__(self, inner: Store, races: int) -> None:
        self.inner = inner
        self.races = races

    def get(self, workflow_id: str) -> WorkflowState:
        read = self.inner.get(workflow_id)
        if self.races:
            self.races -= 1
            theirs = self.inner.get(workflow_id)
            theirs.reason = f"saved by another process ({self.races} races left)"
            self.inner.save(theirs)
        return read

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_create_compensation_that_loses_the_revision_check_is_attached_again(
    store: Store,
) -> None:
    raced = RacedStore(store, races=2)
    engine = make_engine(raced)  # type: ignore[arg-type]
    _, saga = managers(engine, Recorder())

    async def scenario() -> None:
        wf, _ = todo_workflow()
        store.create(wf)
        comp = await saga.create_compensation(wf, wf.steps[0])
        stored = store.get(wf.id)
        # Both racing saves stand, and the compensation went onto the document after them.
        assert stored.reason == "saved by another process (0 races left)"
        assert stored.revision == 4 and wf.revision == 4
        assert stored.steps[0].compensation == comp and wf.steps[0].compensation == comp

    asyncio.run(scenario())
    assert raced.races == 0


def test_create_compensation_is_refused_once_nothing_can_be_undone(store: Store) -> None:
    engine = make_engine(store)
    _, saga = managers(engine, Recorder())
    wf, _ = todo_workflow()
    wf.steps[0].status = StepStatus.SKIPPED
    wf.steps[1].status = StepStatus.IN_DOUBT  # may have applied: still worth undoing
    store.create(wf)

    async def scenario() -> None:
        with pytest.raises(StateError, match="is SKIPPED; too late to undo"):
            await saga.create_compensation(wf, wf.steps[0])
        assert (await saga.create_compensation(wf, wf.steps[1])) is not None
        assert store.get(wf.id).revision == 2

    asyncio.run(scenario())


@pytest.mark.parametrize("strategy", [CompensationStrategy.BACKWARD, CompensationStrategy.PARALLEL])
def test_compensate_all_unwinds_a_running_workflow(
    store: Store, strategy: CompensationStrategy
) -> None:
    rec = Recorder()
    engine = make_engine(store)
    executor, saga = managers(engine, rec)

    async def scenario() -> WorkflowState:
        wf, _ = todo_workflow(n=3, strategy=strategy)
        await WorkflowStateManager(store).create(wf)
        for step in wf.steps:
            await saga.create_compensation(wf, step)
        await executor.execute_step(wf, wf.steps[0])
        await executor.execute_step(wf, wf.steps[1])
        final = await saga.compensate_all(wf)
        assert await saga.compensate_all(wf) == final  # already unwound: nothing more
        return final

    final = asyncio.run(scenario())
    assert final.status is WorkflowStatus.COMPENSATED
    assert [s.status for s in final.steps] == [
        StepStatus.COMPENSATED,
        StepStatus.COMPENSATED,
        StepStatus.SKIPPED,
    ]
    assert "force_cancel" in [h.trigger for h in final.history]
    if strategy is CompensationStrategy.BACKWARD:
        assert rec.undone == [{"did": "todo 2"}, {"did": "todo 1"}]
    else:
        assert sorted(u["did"] for u in rec.undone) == ["todo 1", "todo 2"]
    assert rec.calls == [("todo 1", 1), ("todo 2", 1)]


def test_compensate_all_refuses_a_completed_workflow(store: Store) -> None:
    engine = make_engine(store)
    executor, saga = managers(engine, Recorder())

    async def scenario() -> None:
        wf, _ = todo_workflow(n=1)
        await executor.execute_step(wf, wf.steps[0])
        with pytest.raises(StateError, match="already COMPLETED"):
            await saga.compensate_all(wf)

    asyncio.run(scenario())


# -- HeartbeatManager ------------------------------------------------------------------------
class LaterClock:
    """The system clock, seen from `offset` seconds in the future."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> Any:
        return SystemClock().now() + timedelta(seconds=self.offset)


def test_heartbeat_manager_beats_into_the_store(store: Store) -> None:
    engine = make_engine(store)
    rec = Recorder()
    managers(engine, rec)

    async def scenario() -> None:
        wf, _ = todo_workflow()
        pending, _ = todo_workflow()
        store.create(wf)
        store.create(pending)
        engine.start_stored(wf.id)  # RUNNING, its jobs never run here
        beats = HeartbeatManager(store)
        before = store.get(wf.id).heartbeat_at
        await beats.start(wf.id, wf.steps[0].id, interval=60.0)
        after = store.get(wf.id).heartbeat_at
        assert before is not None and after is not None and after > before
        assert beats.active == {wf.id: wf.steps[0].id}
        assert store.get(wf.id).revision == 2  # beats do not bump the revision

        assert await beats.check_all_timed_out(timeout=300.0) == []
        later = HeartbeatManager(store, clock=LaterClock(301.0))
        stale = await later.check_all_timed_out(timeout=300.0)
        # Only active workflows count: the PENDING one has no worker to lose.
        assert [w.id for w in stale] == [wf.id]

        await beats.stop(wf.id)
        assert beats.active == {}
        await beats.stop(wf.id)  # stopping twice is harmless
        await beats.start(wf.id, wf.steps[1].id, interval=60.0)
        await beats.stop_all()
        assert beats.active == {}

    asyncio.run(scenario())


# -- WorkflowRecoveryManager -----------------------------------------------------------------
def lost_workflow(store: Store, session: str) -> WorkflowState:
    """A started workflow whose first job was on a queue that is gone (a crashed process)."""
    crashed = make_engine(store)
    managers(crashed, Recorder())
    wf, _ = todo_workflow(session)
    store.create(wf)
    crashed.start_stored(wf.id)
    crashed.queue.close()  # the in-process queue dies with its process
    return store.get(wf.id)


def test_recovery_resumes_a_lost_session(store: Store) -> None:
    lost = lost_workflow(store, "agent-1")
    lost_workflow(store, "agent-2")
    rec = Recorder()
    engine = make_engine(store)  # the process that comes back
    managers(engine, rec)

    async def scenario() -> None:
        patient = WorkflowRecoveryManager(engine)  # 30 s: the heartbeats are fresh
        assert await patient.get_recoverable_workflows("agent-1") == []
        recovery = WorkflowRecoveryManager(engine, timeout=0.0)
        found = await recovery.get_recoverable_workflows("agent-1")
        assert [w.id for w in found] == [lost.id]
        assert len(await recovery.get_recoverable_workflows()) == 2

        final = await recovery.resume(lost.id)
        assert final.status is WorkflowStatus.COMPLETED
        resumed = [h for h in final.history if h.trigger == "resume"]
        assert [(h.source, h.dest, h.by) for h in resumed] == [("RUNNING", "RUNNING", "recovery")]
        # The lost job was put back (requeue), not run as a second attempt.
        assert [s.attempts for s in final.steps] == [1, 1]
        assert await recovery.get_recoverable_workflows("agent-1") == []

    asyncio.run(scenario())
    assert rec.calls == [("todo 1", 1), ("todo 2", 1)]


def test_recovery_cancels_forced_and_graceful(store: Store) -> None:
    rec = Recorder()
    engine = make_engine(store)
    executor, saga = managers(engine, rec)

    async def scenario() -> None:
        recovery = WorkflowRecoveryManager(engine, timeout=0.0)
        forced = lost_workflow(store, "agent-3")
        final = await recovery.cancel(forced.id, force=True)
        assert final.status is WorkflowStatus.COMPENSATED
        assert {s.status for s in final.steps} == {StepStatus.SKIPPED}

        wf, _ = todo_workflow("agent-3")
        for step in wf.steps:
            await saga.create_compensation(wf, step)
        await executor.execute_step(wf, wf.steps[0])
        final = await recovery.cancel(wf.id, force=False)
        assert final.status is WorkflowStatus.COMPENSATED
        triggers = [h.trigger for h in final.history if h.chart == "workflow"]
        assert "cancel" in triggers and "force_cancel" not in triggers
        assert rec.undone == [{"did": "todo 1"}]
        assert await recovery.get_recoverable_workflows("agent-3") == []
        with pytest.raises(StateError):
            await recovery.cancel(wf.id)

    asyncio.run(scenario())


# -- the example -----------------------------------------------------------------------------
def test_agent_session_example_runs_on_sqlite(tmp_path: Path) -> None:
    from statesaga.examples import agent_session

    lines: list[str] = []
    done, undone = asyncio.run(agent_session.main(tmp_path / "agent.db", lines.append))
    store = open_store(f"sqlite:///{tmp_path / 'agent.db'}")
    assert store.get(done.id).status is WorkflowStatus.COMPLETED
    assert store.get(undone.id).status is WorkflowStatus.COMPENSATED
    assert [s.attempts for s in store.get(done.id).steps] == [1, 2]  # the flaky one retried
    assert WF_ID.match(done.id) and WF_ID.match(undone.id)
    assert all(s.compensation and COMP_ID.match(s.compensation.id) for s in undone.steps)
    text = "\n".join(lines)
    assert "'Write the itinerary': in_progress --requeued--> pending" in text
    assert "'Book a private jet': in_progress --failed--> failed" in text
    assert f"unwound: {undone.id} is COMPENSATED" in text
    store.close()


@pytest.mark.slow
def test_agent_session_example_runs_as_a_module(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "statesaga.examples.agent_session", "--db", str(tmp_path / "a.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "stored for research:" in out.stdout and "COMPENSATED" in out.stdout
