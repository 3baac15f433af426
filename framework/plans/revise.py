"""Revising a running plan: items that have not started are replaced, added or removed.

A revision is a patch (`add`, `replace`, `remove`, and optionally `base_version`, the plan
version the agent read). It is applied to the stored document in one transaction of the
engine's kernel, so the store's revision check decides a race with a worker: if a worker
claimed an item first, the revision is evaluated again on the new document and refused,
naming the item and its state; if the revision saved first, the worker's claim sees the new
plan. An item may change only while it has not started: its step PENDING and its approval (if
any) not yet given. The new plan goes through every check a new plan does, then becomes the
next numbered version in `WorkflowState.plan`, with what it changed, and in the history.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._yaml import LineMap, load_yaml_file, pydantic_problems
from ..errors import DefinitionError, StateError
from ..models import HistoryEntry, SagaStep, StepStatus, WorkflowState, WorkflowStatus
from ..runtime.transaction import Txn
from ..vocabulary import WorkflowTrigger
from .plan import (
    APPROVE,
    PATTERNS,
    PlanItem,
    PlanSpec,
    approval_step,
    check_by,
    compile_plan,
    item_of,
    link_todos,
)
from .runs import require_plan, state_of
from .tools import tools_in

if TYPE_CHECKING:
    from ..engine import Engine


class PlanPatch(BaseModel):
    """What a revision changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_version: int | None = Field(
        None, description="the plan version this patch was written against (stale: refused)"
    )
    add: tuple[PlanItem, ...] = Field((), description="new items")
    replace: tuple[PlanItem, ...] = Field((), description="items given anew, by id")
    remove: tuple[str, ...] = Field((), description="ids of items to drop")


class PlanConflict(StateError):
    """Raised when a revision was written against a plan version that is no longer current."""


def load_patch(source: str | Path | Mapping[str, Any]) -> tuple[PlanPatch, LineMap]:
    if isinstance(source, Mapping):
        data: Any = dict(source)
        lines = LineMap("patch")
    else:
        data, lines = load_yaml_file(source)
    if not isinstance(data, Mapping):
        raise DefinitionError([lines.problem((), "a plan patch is a mapping (add/replace/remove)")])
    try:
        patch = PlanPatch.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(pydantic_problems(exc, lines, PATTERNS)) from None
    if not (patch.add or patch.replace or patch.remove):
        raise DefinitionError([lines.problem((), "the patch changes nothing (add/replace/remove)")])
    return patch, lines


def revisable(wf: WorkflowState, item_id: str) -> str | None:
    """None when the item may change; else its state, for the refusal."""
    by_name = {s.name: s for s in wf.steps}
    step = by_name[item_id]
    gate = by_name.get(approval_step(item_id))
    if step.status is not StepStatus.PENDING:
        return step.status.value
    if gate is not None and gate.status not in (StepStatus.PENDING, StepStatus.WAITING):
        return state_of(step, gate)
    return None


def _patched(spec: PlanSpec, patch: PlanPatch, wf: WorkflowState) -> tuple[PlanSpec, list[str]]:
    """The plan with the patch applied, and the changes in words; refuses a patch that names
    an item wrongly or changes one that has started."""
    current = {item.id: item for item in spec.items}
    problems: list[str] = []
    for item in patch.add:
        if item.id in current:
            problems.append(f"add {item.id!r}: the plan already has that item (use replace)")
    for what, ids in (("replace", [i.id for i in patch.replace]), ("remove", patch.remove)):
        for item_id in ids:
            if item_id not in current:
                problems.append(f"{what} {item_id!r}: no such item (items: {', '.join(current)})")
                continue
            state = revisable(wf, item_id)
            if state is not None:
                problems.append(
                    f"{what} {item_id!r}: the item is {state}; only items that have not "
                    "started can change"
                )
    if problems:
        raise StateError(f"{wf.id}: " + "; ".join(problems))
    replaced = {item.id: item for item in patch.replace}
    removed = set(patch.remove)
    new_items = [replaced.get(i.id, i) for i in spec.items if i.id not in removed]
    new_items.extend(patch.add)
    changes = (
        [f"added {i.id}" for i in patch.add]
        + [f"replaced {i.id}" for i in patch.replace]
        + [f"removed {r}" for r in patch.remove]
    )
    return spec.model_copy(update={"items": tuple(new_items)}), changes


def revise_plan(
    engine: Engine,
    workflow_id: str,
    source: PlanPatch | str | Path | Mapping[str, Any],
    *,
    by: str | None = None,
) -> WorkflowState:
    """Apply a patch to a running plan (see the module's docstring). Raises StateError (the
    item and its state), PlanConflict (a stale `base_version`) or DefinitionError (the new
    plan fails a check); nothing is saved then."""
    check_by(by, "a revision")
    patch = source if isinstance(source, PlanPatch) else load_patch(source)[0]
    tools = tools_in(engine.registry)

    def apply(txn: Txn) -> bool:
        wf = txn.wf
        require_plan(wf)
        assert wf.plan is not None
        if wf.status is not WorkflowStatus.RUNNING:
            raise StateError(
                f"{wf.id} is {wf.status.value}; a plan can be revised only while it runs"
            )
        current = wf.plan.current
        if patch.base_version is not None and patch.base_version != current.number:
            raise PlanConflict(
                f"{wf.id}: the patch was written against plan version {patch.base_version}, "
                f"but the plan is at version {current.number}; read it again "
                f"(`statesaga plan show {wf.id}`) and retry"
            )
        spec, changes = _patched(PlanSpec.model_validate(current.spec), patch, wf)
        number = current.number + 1
        compiled = compile_plan(spec, tools, LineMap(f"{wf.id} plan v{number}"), number)
        engine.load(compiled.definition)  # its tools' modules, for the jobs it sets going
        fresh = compiled.definition.instantiate({}, wf.session_id)
        changed = {i.id for i in patch.replace} | set(patch.remove)
        wf.steps = _merge(wf, fresh.steps, changed)
        for item_id in changed:
            wf.signals.pop(APPROVE + item_id, None)  # kept for the old args: void
        link_todos(wf, tools)
        wf.handlers = sorted(set(wf.handlers) | set(compiled.definition.spec.handlers))
        wf.plan.versions.append(compiled.record(txn.by, changes, number))
        wf.record(
            HistoryEntry(
                at=engine.clock.now(),
                chart="plan",
                trigger="revise",
                source=f"v{current.number}",
                dest=f"v{number}",
                by=txn.by,
                detail=", ".join(changes),
            )
        )
        # What became ready runs now; a plan left with only completed items completes.
        engine.kernel.fire(txn, None, WorkflowTrigger.ADVANCE, f"plan v{number}")
        txn.persist = True
        return True

    return engine.kernel.command(workflow_id, apply, by)


def _merge(wf: WorkflowState, fresh: list[SagaStep], changed: set[str]) -> list[SagaStep]:
    """The new plan's steps: a step that has started is kept as it is; one that has not takes
    the new plan's spec. A waiting approval of a changed item stays waiting (its timer and
    attempt stand) with the new request, so an approval of the old arguments no longer fits;
    if the item now depends on other items, its request closes until they have run."""
    old = {s.name: s for s in wf.steps}
    out = []
    for step in fresh:
        step.id = f"{wf.id}:{step.name}"
        before = old.get(step.name)
        if before is None or before.status is StepStatus.PENDING:
            out.append(step)
        elif before.status is StepStatus.WAITING and item_of(step.name) in changed:
            if before.depends_on == step.depends_on:
                before.params = step.params
                before.payload = step.payload
                out.append(before)
            else:
                # It now waits for other items: the request closes until they have run (a
                # fresh step; its old timer finds a later due time and puts itself back).
                out.append(step)
        else:
            out.append(before)
    return out


__all__ = ["PlanConflict", "PlanPatch", "load_patch", "revisable", "revise_plan"]
