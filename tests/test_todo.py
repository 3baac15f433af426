"""The Todo integration: the todo chart's answers, workflows built from todos, and todos that
follow their steps while the managers run the workflow on a real SQLite store."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from statesaga.charts.lifecycles import lifecycle
from statesaga.compat.managers import (
    SagaManager,
    StepExecutionError,
    WorkflowExecutor,
    WorkflowStateManager,
)
from statesaga.compat.todo import (
    STEP_TO_TODO,
    Todo,
    TodoTracker,
    can_transition,
    definition_from_todos,
    events_to,
    sync_todos,
    workflow_from_todos,
)
from statesaga.context import StepContext
from statesaga.engine import Engine
from statesaga.errors import TransitionError
from statesaga.models import RetryPolicy, StepStatus, TodoStatus, WorkflowStatus
from statesaga.plugins import open_queue, open_store

WF_ID = re.compile(r"^WF-\d{8}-[0-9a-f]{8}$")
TODO_ID = re.compile(r"^TODO-\d{8}-[0-9a-f]{8}$")


# -- the chart's answers ---------------------------------------------------------------------
def test_pending_to_dispatched_is_the_dispatched_event() -> None:
    assert can_transition(TodoStatus.PENDING, TodoStatus.DISPATCHED) == (True, "dispatched")
    assert can_transition("pending", "dispatched") == (True, "dispatched")
    assert can_transition("in_progress", "pending") == (True, "requeued")
    assert can_transition("pending", "completed") == (False, None)
    assert can_transition("completed", "in_progress") == (False, None)
    with pytest.raises(ValueError):
        can_transition("pending", "done")


def test_can_transition_answers_exactly_the_todo_chart() -> None:
    chart = lifecycle("todo")
    allowed = {(src, t.dest): t.trigger for t in chart.transitions for src in t.source}
    for src in TodoStatus:
        for dest in TodoStatus:
            expected = allowed.get((src.value, dest.value))
            assert can_transition(src, dest) == (expected is not None, expected), (src, dest)


def test_todo_fires_chart_events() -> None:
    todo = Todo(title="write the report", session_id="s", assignee="writer")
    assert TODO_ID.match(todo.id) and todo.status is TodoStatus.PENDING
    assert todo.agent == "writer"
    assert todo.fire("dispatched") is TodoStatus.DISPATCHED
    with pytest.raises(TransitionError, match="can't 'completed' when in dispatched"):
        todo.fire("completed")
    assert todo.status is TodoStatus.DISPATCHED  # unchanged by the refused event
    assert todo.fire("started") is TodoStatus.IN_PROGRESS
    assert todo.fire("completed") is TodoStatus.COMPLETED
    assert Todo.model_validate_json(todo.model_dump_json()) == todo


def test_events_to_is_a_shortest_path_through_the_chart() -> None:
    assert events_to("pending", "completed") == ["dispatched", "started", "completed"]
    assert events_to("in_progress", "in_progress") == []
    assert events_to("blocked", "completed") == ["started", "completed"]
    assert events_to("completed", "pending") is None  # done never goes back to pending
    assert events_to("completed", "reverted") == ["reverting", "reverted"]
    assert events_to("reverting", "failed") == ["revert_failed"]  # the undo failed
    assert events_to("reverted", "pending") is None  # no way out of a final status


# -- workflows from todos --------------------------------------------------------------------
def test_workflow_from_todos_links_one_step_per_todo() -> None:
    todos = [
        Todo(title="research", session_id="agent-7", params={"topic": "sagas"}),
        Todo(id="my todo #2", title="summarise", session_id="agent-7"),
    ]
    wf = workflow_from_todos(todos, action_type="agent_task")
    assert WF_ID.match(wf.id) and wf.status is WorkflowStatus.PENDING
    assert wf.session_id == "agent-7" and len(wf.steps) == 2
    first, second = wf.steps
    assert [s.todo_id for s in wf.steps] == [t.id for t in todos]
    assert [t.workflow_id for t in todos] == [wf.id, wf.id]
    assert [t.step for t in todos] == [first.name, second.name]
    assert second.name == "my_todo__2"  # ids are made into valid step names
    assert first.action_type == "agent_task" and first.depends_on == []
    assert second.depends_on == [first.name]  # in list order
    assert first.params == {"todo_id": todos[0].id, "title": "research", "topic": "sagas"}

    parallel = workflow_from_todos(
        [Todo(title="a"), Todo(title="b")], action_type="x", session_id="s", parallel=True
    )
    assert [s.depends_on for s in parallel.steps] == [[], []]
    definition = definition_from_todos(todos, action_type="agent_task", compensation="undo")
    assert [s.compensation.action for s in definition.steps if s.compensation] == ["undo"] * 2
    with pytest.raises(ValueError):
        workflow_from_todos([], action_type="x")


# -- todos follow their steps ----------------------------------------------------------------
@pytest.mark.parametrize(("step_status", "todo_status"), list(STEP_TO_TODO.items()))
def test_sync_todos_follows_the_step_table(
    step_status: StepStatus, todo_status: TodoStatus | None
) -> None:
    todo = Todo(title="t")
    wf = workflow_from_todos([todo], action_type="x", session_id="s")
    wf.steps[0].status = step_status
    changes = sync_todos(wf, [todo])
    if todo_status is None:
        assert changes == [] and todo.status is TodoStatus.PENDING
        return
    assert todo.status is todo_status
    assert [c.event for c in changes] == events_to("pending", todo_status)
    assert sync_todos(wf, [todo]) == []  # idempotent


class Agent:
    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail

    async def work(self, ctx: StepContext) -> dict[str, Any]:
        if ctx.params["title"] == self.fail:
            raise RuntimeError("gave up")
        return {"did": ctx.params["title"]}

    def undo(self, ctx: StepContext) -> None:
        return None


def run_todos(
    sqlite_url: str, todos: list[Todo], agent: Agent
) -> tuple[Any, TodoTracker, list[tuple[str, list[TodoStatus]]]]:
    store = open_store(sqlite_url)
    store.initialize()
    engine = Engine(store, open_queue("inline://"), heartbeat_interval=0)
    executor = WorkflowExecutor(engine)
    executor.register_handler("agent_task", agent.work)
    saga = SagaManager(engine)
    saga.register_compensation_handler("agent_task", agent.undo)
    tracker = TodoTracker(todos)
    engine.listeners.append(tracker)
    seen: list[tuple[str, list[TodoStatus]]] = []
    retry = RetryPolicy(max_attempts=1)

    async def scenario() -> Any:
        wf = workflow_from_todos(todos, action_type="agent_task", retry=retry)
        await WorkflowStateManager(store).create(wf)
        for step in wf.steps:
            await saga.create_compensation(wf, step)
        for step in wf.steps:
            try:
                await executor.execute_step(wf, step)
            except StepExecutionError:
                await saga.compensate_all(wf)
                break
            finally:
                seen.append((step.name, [t.status for t in todos]))
        return store.get(wf.id)

    try:
        return asyncio.run(scenario()), tracker, seen
    finally:
        store.close()


def test_todos_follow_their_steps_while_the_workflow_runs(sqlite_url: str) -> None:
    todos = [Todo(title="plan", session_id="s"), Todo(title="act", session_id="s")]
    wf, tracker, seen = run_todos(sqlite_url, todos, Agent())
    assert wf.status is WorkflowStatus.COMPLETED
    assert [t.status for t in todos] == [TodoStatus.COMPLETED, TodoStatus.COMPLETED]
    # After the first step: the second todo was handed to its (queued) step already.
    assert seen[0][1] == [TodoStatus.COMPLETED, TodoStatus.DISPATCHED]
    first = [(c.event, c.dest) for c in tracker.changes if c.todo_id == todos[0].id]
    assert first == [
        ("dispatched", TodoStatus.DISPATCHED),
        ("started", TodoStatus.IN_PROGRESS),
        ("completed", TodoStatus.COMPLETED),
    ]
    # What the stored document says agrees with the todos.
    assert sync_todos(wf, todos) == []


def test_a_failed_todo_fails_and_the_rest_are_cancelled(sqlite_url: str) -> None:
    todos = [Todo(title="plan"), Todo(title="act"), Todo(title="report")]
    wf, tracker, _ = run_todos(sqlite_url, todos, Agent(fail="act"))
    assert wf.status is WorkflowStatus.COMPENSATED
    assert [s.status for s in wf.steps] == [
        StepStatus.COMPENSATED,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
    ]
    # The done todo follows its step's undo (issue 15: before, it stayed `completed` on a
    # rolled-back saga), and the todo that never ran is cancelled.
    assert [t.status for t in todos] == [
        TodoStatus.REVERTED,
        TodoStatus.FAILED,
        TodoStatus.CANCELLED,
    ]
    assert [(c.event, c.dest) for c in tracker.changes if c.todo_id == todos[0].id][-2:] == [
        ("reverting", TodoStatus.REVERTING),
        ("reverted", TodoStatus.REVERTED),
    ]
    assert ("failed", TodoStatus.FAILED) in [
        (c.event, c.dest) for c in tracker.changes if c.todo_id == todos[1].id
    ]
