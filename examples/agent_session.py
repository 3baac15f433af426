"""An agent session written against the origin design's async API, on the SQLite store.

Two sessions, each with two todos turned into a saga (one step per todo):

- `research`: both todos are carried out; the second one's first attempt fails and is retried.
- `rollback`: the second todo fails for good, so the first one's work is undone.

Run it: `python -m statesaga.examples.agent_session [--db PATH]`. The handlers below are also
marked with `@handler`, so `statesaga worker --handlers statesaga.examples.agent_session` can
run these steps on RQ workers.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from statesaga.compat.managers import (
    HeartbeatManager,
    SagaManager,
    StepExecutionError,
    WorkflowExecutor,
    WorkflowRecoveryManager,
    WorkflowStateManager,
)
from statesaga.compat.todo import Todo, TodoChange, TodoTracker, workflow_from_todos
from statesaga.context import StepContext
from statesaga.engine import Engine
from statesaga.models import RetryPolicy, WorkflowState
from statesaga.plugins import open_queue, open_store
from statesaga.registry import handler

ACTION = "agent_task"


class AgentGaveUp(Exception):
    """Raised by an agent that cannot do a todo; retrying would not help."""


@handler(ACTION)
async def agent_task(ctx: StepContext) -> dict[str, Any]:
    """Carry out one todo (the agent's real work would happen here)."""
    if ctx.params.get("fail"):
        raise AgentGaveUp(f"{ctx.params['title']}: no way to do this")
    if ctx.params.get("flaky") and ctx.attempt == 1:
        raise ConnectionError("the model API timed out")
    return {"todo": ctx.params["todo_id"], "done": ctx.params["title"], "attempt": ctx.attempt}


@handler(f"{ACTION}.compensate")
def undo_agent_task(ctx: StepContext) -> dict[str, Any]:
    """Undo what `agent_task` did; `ctx.result` is what it returned."""
    return {"undone": ctx.result["done"]}


RETRY = RetryPolicy(
    max_attempts=3, initial_interval=0.05, backoff_rate=2.0, non_retryable=["AgentGaveUp"]
)


async def run_session(
    engine: Engine,
    session_id: str,
    todos: list[Todo],
    say: Callable[[str], None],
) -> WorkflowState:
    """One agent session: its todos become a saga that the managers run step by step."""
    state = WorkflowStateManager(engine.store)
    executor = WorkflowExecutor(engine)
    saga = SagaManager(engine)
    heartbeat = HeartbeatManager(engine.store)
    executor.register_handler(ACTION, agent_task)
    saga.register_compensation_handler(ACTION, undo_agent_task)

    def show(todo: Todo, change: TodoChange) -> None:
        say(f"    todo {todo.title!r}: {change.source} --{change.event}--> {change.dest}")

    tracker = TodoTracker(todos, on_change=show)
    engine.listeners.append(tracker)
    try:
        workflow = workflow_from_todos(
            todos, action_type=ACTION, session_id=session_id, retry=RETRY
        )
        await state.create(workflow)
        say(f"session {session_id}: {workflow.id} with {len(workflow.steps)} steps")
        for step in workflow.steps:
            comp = await saga.create_compensation(workflow, step)
            title = step.params["title"]
            say(f"  step {step.name} ({title!r}) undone by {comp.action_type} {comp.id}")
        results: dict[str, Any] = {}
        for step in workflow.steps:
            await heartbeat.start(workflow.id, step.id, interval=5.0)
            try:
                result = await executor.execute_step(workflow, step, results)
                say(f"  step {step.name}: {step.status} after {step.attempts} attempt(s): {result}")
            except StepExecutionError as exc:
                say(f"  step {step.name}: {step.status}: {exc.error.message if exc.error else exc}")
                final = await saga.compensate_all(workflow)
                say(f"  unwound: {final.id} is {final.status}")
                break
            finally:
                await heartbeat.stop(workflow.id)
        return workflow
    finally:
        engine.listeners.remove(tracker)


async def main(db: str | Path, say: Callable[[str], None] = print) -> list[WorkflowState]:
    store = open_store(f"sqlite:///{db}")
    engine = Engine(store, open_queue("inline://"))
    await WorkflowStateManager(store).initialize()
    try:
        done = await run_session(
            engine,
            "research",
            [
                Todo(title="Find three flights to Lisbon", assignee="researcher"),
                Todo(title="Write the itinerary", assignee="writer", params={"flaky": True}),
            ],
            say,
        )
        undone = await run_session(
            engine,
            "rollback",
            [
                Todo(title="Reserve a table for six", assignee="concierge"),
                Todo(title="Book a private jet", assignee="concierge", params={"fail": True}),
            ],
            say,
        )
        state = WorkflowStateManager(store)
        recovery = WorkflowRecoveryManager(engine)
        for session in ("research", "rollback"):
            stored = await state.list_by_session(session)
            left = await recovery.get_recoverable_workflows(session)
            summary = ", ".join(f"{wf.id} {wf.status}" for wf in stored)
            say(f"stored for {session}: {summary}; {len(left)} to recover")
        return [done, undone]
    finally:
        store.close()
        engine.queue.close()


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", default=None, help="SQLite file (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.db:
        asyncio.run(main(args.db))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp) / "agent_session.db"))


if __name__ == "__main__":
    cli()
