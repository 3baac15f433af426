"""Todo integration: an agent's todo items, their lifecycle (statecharts/todo.yaml), and how
they follow the saga steps that carry them out.

Everything here is derived from the shipped todo chart: whether a status change is allowed and
which event it is (`can_transition`), and how a todo catches up with its step (`sync_todos`:
the target status comes from one table, `STEP_TO_TODO`; the events that reach it are a shortest
path through the chart). So changing todo.yaml changes this behaviour, never the other way.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..charts.lifecycles import lifecycle
from ..charts.machine import CompiledChart
from ..definitions.load import WorkflowDefinition, load_definition
from ..models import (
    CompensationStrategy,
    HistoryEntry,
    RetryPolicy,
    StepStatus,
    TodoStatus,
    WorkflowState,
    new_id,
    utcnow,
)


class Todo(BaseModel):
    """One item of an agent's todo list; `workflow_id`/`step` link it to the saga step that
    carries it out (the step links back through `SagaStep.todo_id`)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: new_id("TODO"))
    title: str = Field(min_length=1)
    description: str = ""
    session_id: str | None = None
    assignee: str | None = Field(None, description="the agent the item is handed to")
    status: TodoStatus = TodoStatus.PENDING
    params: dict[str, Any] = Field(
        default_factory=dict, description="what the step's handler needs to carry it out"
    )
    workflow_id: str | None = None
    step: str | None = Field(None, description="the name of the step carrying it out")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def agent(self) -> str | None:
        """The origin design's name for the assignee."""
        return self.assignee

    def fire(self, event: str) -> TodoStatus:
        """Apply a todo-chart event (e.g. "dispatched"); raises TransitionError if the chart
        does not allow it from the current status, leaving the todo unchanged."""
        spec = _todo_chart().fire(self.status.value, event)
        self.status = TodoStatus(spec.dest)
        self.updated_at = utcnow()
        return self.status


@cache
def _todo_chart() -> CompiledChart:
    # The todo chart has no guards, so it compiles without a registry.
    return CompiledChart(lifecycle("todo"))


def can_transition(current: TodoStatus | str, target: TodoStatus | str) -> tuple[bool, str | None]:
    """Whether the todo chart allows `current -> target` directly, and the event that does it.

    `can_transition("pending", "dispatched") == (True, "dispatched")`; a change the chart does
    not allow answers `(False, None)`. Unknown statuses raise ValueError.
    """
    src, dest = TodoStatus(current).value, TodoStatus(target).value
    for t in lifecycle("todo").transitions_from(src):
        if t.dest == dest:
            return True, t.trigger
    return False, None


def events_to(current: TodoStatus | str, target: TodoStatus | str) -> list[str] | None:
    """The shortest list of todo-chart events leading from `current` to `target` ([] when they
    are equal), or None when the chart has no way there (e.g. out of a final status)."""
    src, dest = TodoStatus(current).value, TodoStatus(target).value
    chart = lifecycle("todo")
    paths: dict[str, list[str]] = {src: []}
    todo = deque([src])
    while todo:
        state = todo.popleft()
        if state == dest:
            return paths[state]
        for t in chart.transitions_from(state):
            if t.dest not in paths:
                paths[t.dest] = [*paths[state], t.trigger]
                todo.append(t.dest)
    return None


#: Where a todo stands while its step is in each status. None: the step's status says nothing
#: new about the item (a step in doubt stays where its last attempt left the item until the
#: unwinding saga undoes it).
STEP_TO_TODO: dict[StepStatus, TodoStatus | None] = {
    StepStatus.PENDING: TodoStatus.PENDING,
    StepStatus.QUEUED: TodoStatus.DISPATCHED,
    StepStatus.EXECUTING: TodoStatus.IN_PROGRESS,
    StepStatus.RETRYING: TodoStatus.PENDING,  # `requeued`: handed back until the next attempt
    StepStatus.COMPLETED: TodoStatus.COMPLETED,
    StepStatus.FAILED: TodoStatus.FAILED,
    StepStatus.IN_DOUBT: None,
    StepStatus.COMPENSATING: TodoStatus.REVERTING,
    StepStatus.COMPENSATED: TodoStatus.REVERTED,
    StepStatus.COMPENSATION_FAILED: TodoStatus.FAILED,
    StepStatus.SKIPPED: TodoStatus.CANCELLED,
}


@dataclass(frozen=True)
class TodoChange:
    """One event applied to a todo by `sync_todos`."""

    todo_id: str
    event: str
    source: TodoStatus
    dest: TodoStatus


def sync_todos(workflow: WorkflowState, todos: Iterable[Todo]) -> list[TodoChange]:
    """Move each todo linked to a step of `workflow` to where `STEP_TO_TODO` says its step
    stands, one chart event at a time; returns the events applied, in order.

    Idempotent: calling it again with nothing new changes nothing.
    """
    by_id = {t.id: t for t in todos}
    changes: list[TodoChange] = []
    for step in workflow.steps:
        todo = by_id.get(step.todo_id) if step.todo_id else None
        if todo is None:
            continue
        target = STEP_TO_TODO[StepStatus(step.status)]
        if target is None or target is todo.status:
            continue
        for event in events_to(todo.status, target) or ():
            source = todo.status
            todo.fire(event)
            changes.append(TodoChange(todo.id, event, source, todo.status))
    return changes


class TodoTracker:
    """An engine listener that keeps a list of todos in step with their workflow.

    `engine.listeners.append(TodoTracker(todos, on_change=print))`. The engine calls its
    listeners after each save; each call catches every linked todo up with the saved document,
    so a listener told of fewer transitions (e.g. only those with the `emit` effect) still
    passes each todo through every intermediate status, in order.
    """

    def __init__(
        self,
        todos: Iterable[Todo],
        on_change: Callable[[Todo, TodoChange], None] | None = None,
    ) -> None:
        self.todos = {t.id: t for t in todos}
        self.on_change = on_change
        self.changes: list[TodoChange] = []

    def __call__(self, workflow: WorkflowState, entry: HistoryEntry) -> None:
        linked = [self.todos[s.todo_id] for s in workflow.steps if s.todo_id in self.todos]
        for change in sync_todos(workflow, linked):
            self.changes.append(change)
            if self.on_change is not None:
                self.on_change(self.todos[change.todo_id], change)


_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def _step_name(todo: Todo, index: int, taken: set[str]) -> str:
    name = _NAME.sub("_", todo.id)
    if not re.match(r"[A-Za-z_]", name):
        name = f"todo_{name}"
    if name in taken:
        name = f"{name}_{index}"
    taken.add(name)
    return name


def definition_from_todos(
    todos: Sequence[Todo],
    *,
    action_type: str,
    name: str = "agent_session",
    compensation: str | None = None,
    retry: RetryPolicy | None = None,
    strategy: CompensationStrategy = CompensationStrategy.BACKWARD,
    parallel: bool = False,
    handlers: Sequence[str] = (),
) -> WorkflowDefinition:
    """A saga definition with one step per todo, each running `action_type` with the todo's
    title, id and params; in list order unless `parallel`. The step names are derived from the
    todo ids (see `workflow_from_todos`, which also links both ways)."""
    if not todos:
        raise ValueError("a workflow needs at least one todo")
    taken: set[str] = set()
    steps: list[dict[str, Any]] = []
    for i, todo in enumerate(todos):
        step: dict[str, Any] = {
            "name": _step_name(todo, i, taken),
            "action": action_type,
            "description": todo.title,
            "params": {"todo_id": todo.id, "title": todo.title, **todo.params},
        }
        if compensation is not None:
            step["compensation"] = compensation
        if parallel:
            step["depends_on"] = []
        steps.append(step)
    spec: dict[str, Any] = {
        "workflow": name,
        "strategy": strategy.value,
        "handlers": list(handlers),
        "steps": steps,
    }
    if retry is not None:
        spec["defaults"] = {"retry": retry.model_dump()}
    return load_definition(spec)


def workflow_from_todos(
    todos: Sequence[Todo],
    *,
    action_type: str,
    session_id: str | None = None,
    name: str = "agent_session",
    input: dict[str, Any] | None = None,
    compensation: str | None = None,
    retry: RetryPolicy | None = None,
    strategy: CompensationStrategy = CompensationStrategy.BACKWARD,
    parallel: bool = False,
    handlers: Sequence[str] = (),
) -> WorkflowState:
    """A new PENDING WorkflowState with one step per todo (built from `definition_from_todos`,
    so it is exactly what the engine would instantiate), linked both ways: each step's
    `todo_id`, each todo's `workflow_id` and `step`. Store it (`WorkflowStateManager.create`)
    and run it (`WorkflowExecutor.execute_step`, or `Engine.start_stored`)."""
    definition = definition_from_todos(
        todos,
        action_type=action_type,
        name=name,
        compensation=compensation,
        retry=retry,
        strategy=strategy,
        parallel=parallel,
        handlers=handlers,
    )
    session = session_id if session_id is not None else todos[0].session_id
    wf = definition.instantiate(input, session)
    for todo, step in zip(todos, wf.steps, strict=True):
        step.todo_id = todo.id
        todo.workflow_id = wf.id
        todo.step = step.name
        if todo.session_id is None:
            todo.session_id = session
    return wf


__all__ = [
    "STEP_TO_TODO",
    "Todo",
    "TodoChange",
    "TodoStatus",
    "TodoTracker",
    "can_transition",
    "definition_from_todos",
    "events_to",
    "sync_todos",
    "workflow_from_todos",
]
