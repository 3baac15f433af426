"""Pictures of a plan: one version of it, or the running plan with each item's status, each
noting what that version changed (an item added or replaced; removed items in the title)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from ..diagram import Diagram, DiagramNote, from_definition, from_instance
from ..errors import StateError
from ..models import PlanVersion, WorkflowState
from .plan import PlanSpec, compile_plan
from .runs import require_plan
from .tools import Tool


def _changes(version: PlanVersion) -> tuple[list[DiagramNote], list[str]]:
    notes, removed = [], []
    for change in version.changes:
        what, _, item = change.partition(" ")
        if what == "removed":
            removed.append(item)
        else:
            notes.append(DiagramNote(item, f"{what} in v{version.number}"))
    return notes, removed


def plan_diagram(
    wf: WorkflowState, tools: Mapping[str, Tool], version: int | None = None
) -> Diagram:
    """Version `version` of the plan as its saga (None: the running plan, live)."""
    require_plan(wf)
    assert wf.plan is not None
    found = [v for v in wf.plan.versions if version is None or v.number == version]
    if not found:
        raise StateError(f"{wf.id} has plan versions 1 to {wf.plan.current.number}, not {version}")
    chosen = found[-1]
    definition = compile_plan(PlanSpec.model_validate(chosen.spec), tools, version=chosen.number)
    drawing = (
        from_instance(wf, definition.definition)
        if version is None
        else from_definition(definition.definition)
    )
    notes, removed = _changes(chosen)
    title = f"{drawing.title} (plan v{chosen.number}"
    title += f"; removed: {', '.join(removed)})" if removed else ")"
    return replace(drawing, title=title, notes=(*drawing.notes, *notes))


__all__ = ["plan_diagram"]
