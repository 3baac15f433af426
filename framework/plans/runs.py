"""Starting a plan on an engine, and reading where each of its items stands.

`start_plan` checks the plan against the tools the engine's registry holds (the operator's
allow-list put them there), compiles it, and creates the workflow with its first plan version
in the same save that starts it. `items` describes each item as its agent's todo: the step's
status, the todo status it maps to (statesaga.compat.todo.STEP_TO_TODO) and its approval.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._yaml import LineMap
from ..compat.todo import STEP_TO_TODO
from ..errors import StateError
from ..models import SagaStep, StepStatus, WorkflowState
from ..vocabulary import WorkflowTrigger
from .plan import (
    CompiledPlan,
    PlanSpec,
    approval_step,
    check_by,
    compile_plan,
    instantiate,
    load_plan,
)
from .tools import tools_in

if TYPE_CHECKING:
    from ..engine import Engine


def compile_for(
    engine: Engine, source: str | Path | Mapping[str, Any] | PlanSpec, version: int = 1
) -> CompiledPlan:
    """Check and compile a plan against the tools this engine may run."""
    if isinstance(source, PlanSpec):
        spec, lines = source, LineMap(None)
    else:
        spec, lines = load_plan(source)
    return compile_plan(spec, tools_in(engine.registry), lines, version)


def start_plan(
    engine: Engine,
    source: str | Path | Mapping[str, Any] | PlanSpec,
    *,
    session_id: str | None = None,
    by: str | None = None,
) -> tuple[WorkflowState, CompiledPlan]:
    """Start a plan (a file, a dict or a PlanSpec): nothing is stored unless every item is
    a known tool with arguments its model accepts and the saga passes its rules."""
    check_by(by, "a plan")
    compiled = compile_for(engine, source)
    engine.load(compiled.definition)
    wf = instantiate(compiled, session_id, by)
    engine.telemetry.begin(wf)
    engine.kernel.create(wf, lambda txn: engine.kernel.fire(txn, None, WorkflowTrigger.START), by)
    return wf, compiled


def require_plan(wf: WorkflowState) -> None:
    if wf.plan is None or not wf.plan.versions:
        raise StateError(f"{wf.id} was not started from a plan (it is the saga {wf.name!r})")


@dataclass(frozen=True)
class ItemView:
    """One item of a plan as its agent sees it."""

    id: str
    tool: str
    title: str
    status: str
    todo: str
    approval: str | None
    args: dict[str, Any]
    result: Any
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tool": self.tool,
            "title": self.title,
            "status": self.status,
            "todo": self.todo,
            "approval": self.approval,
            "args": self.args,
            "result": self.result,
            "error": self.error,
        }


def items(wf: WorkflowState) -> list[ItemView]:
    """The current plan's items, in plan order."""
    require_plan(wf)
    assert wf.plan is not None
    spec = wf.plan.current.spec
    by_name = {s.name: s for s in wf.steps}
    out = []
    for item in spec.get("items", []):
        step = by_name.get(item["id"])
        if step is None:
            continue
        gate = by_name.get(approval_step(item["id"]))
        todo = STEP_TO_TODO.get(StepStatus(step.status))
        out.append(
            ItemView(
                id=item["id"],
                tool=item["tool"],
                title=item.get("title", ""),
                status=state_of(step, gate),
                todo=todo.value if todo is not None else "unknown (outcome in doubt)",
                approval=_approval_state(gate),
                args=dict(step.params),
                result=step.result,
                error=f"{step.error.type}: {step.error.message}" if step.error else None,
            )
        )
    return out


def state_of(step: SagaStep, gate: SagaStep | None) -> str:
    """An item's state in words: its step's status, or where its approval stands while the
    step has not started."""
    if step.status is StepStatus.PENDING and gate is not None:
        if gate.status is StepStatus.WAITING:
            return "WAITING for approval"
        if gate.status is StepStatus.COMPLETED:
            return "APPROVED, not started"
        if gate.status is not StepStatus.PENDING:
            return f"approval {gate.status.value}"
    return step.status.value


def _approval_state(gate: SagaStep | None) -> str | None:
    if gate is None:
        return None
    if gate.status is StepStatus.COMPLETED and isinstance(gate.result, dict):
        return f"approved by {gate.result.get('by')}"
    if gate.status is StepStatus.FAILED and gate.error is not None:
        return gate.error.message
    return {
        StepStatus.PENDING: "not requested yet",
        StepStatus.WAITING: "requested",
        StepStatus.SKIPPED: "not needed (the plan unwound)",
    }.get(gate.status, gate.status.value)


__all__ = [
    "ItemView",
    "compile_for",
    "items",
    "require_plan",
    "start_plan",
    "state_of",
]
