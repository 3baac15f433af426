"""Pictures of a plan: one version of it, or the running plan with each item's status, each
noting what that version changed (an item added or replaced; removed items in the title)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from ..diagram import Diagram, DiagramNote, from_definition, from_instance
from ..errors import StateError
from ..models import PlanVersion, WorkflowState
from .plan import PlanSpec, compile_plan
from .runs import require_plan
from .tools import Tool


def _changes(versions: Sequence[PlanVersion]) -> tuple[list[DiagramNote], list[str]]:
    """Notes on the items `versions` changed (the latest change of each item), and the items
    they removed that no later version put back."""
    noted: dict[str, str] = {}
    removed: dict[str, None] = {}
    for version in versions:
        for change in version.changes:
            what, _, item = change.partition(" ")
            if what == "removed":
                removed[item] = None
                noted.pop(item, None)
            else:
                removed.pop(item, None)
                noted[item] = f"{what} in v{version.number}"
    return [DiagramNote(item, text) for item, text in noted.items()], list(removed)


def plan_diagram(
    wf: WorkflowState, tools: Mapping[str, Tool] | None = None, version: int | None = None
) -> Diagram:
    """Version `version` of the plan as its saga, noting what that version changed (its
    tools compile it); or (None) the running plan, live, noting what every revision changed."""
    require_plan(wf)
    assert wf.plan is not None
    if version is None:
        drawing = from_instance(wf)
        chosen, changed = wf.plan.current, wf.plan.versions[1:]
    else:
        found = [v for v in wf.plan.versions if v.number == version]
        if not found:
            raise StateError(
                f"{wf.id} has plan versions 1 to {wf.plan.current.number}, not {version}"
            )
        chosen, changed = found[0], found[:1]
        spec = PlanSpec.model_validate(chosen.spec)
        drawing = from_definition(compile_plan(spec, tools or {}, version=version).definition)
    notes, removed = _changes(changed)
    title = f"{drawing.title} (plan v{chosen.number}"
    title += f"; removed: {', '.join(removed)})" if removed else ")"
    return replace(drawing, title=title, notes=(*drawing.notes, *notes))


__all__ = ["plan_diagram"]
