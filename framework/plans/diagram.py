"""Pictures of a plan: one version of it, or the running plan with each item's status, each
noting what that version changed (an item added or replaced; removed items in the title)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from ..diagram import Diagram, DiagramNote, from_definition, from_instance
from ..errors import StateError
from ..models import PlanVersion, WorkflowState
from .plan import PlanSpec, compile_plan
from .runs import require_plan
from .tools import Tool
from .view import version_details


def _changes(
    all_versions: Sequence[PlanVersion], numbers: Collection[int]
) -> tuple[list[DiagramNote], list[str]]:
    """Notes on the items the versions `numbers` changed (the latest change of each item, with
    the args it changed), and the items they removed that no later version put back."""
    noted: dict[str, str] = {}
    removed: dict[str, None] = {}
    before: PlanVersion | None = None
    for version in all_versions:
        if version.number in numbers and before is not None:
            replaced = {c.partition(" ")[2] for c in version.changes if c.startswith("replaced ")}
            how = {
                line.split(":", 1)[0].partition(" ")[2]: line.split(": ", 1)[1]
                for line in version_details(before.spec, version.spec, replaced)
                if line.startswith("replaced ")
            }
            for change in version.changes:
                what, _, item = change.partition(" ")
                if what == "removed":
                    removed[item] = None
                    noted.pop(item, None)
                else:
                    removed.pop(item, None)
                    detail = f": {how[item]}" if item in how else ""
                    noted[item] = f"{what} in v{version.number}{detail}"
        before = version
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
        chosen, changed = wf.plan.current, [v.number for v in wf.plan.versions]
    else:
        found = [v for v in wf.plan.versions if v.number == version]
        if not found:
            raise StateError(
                f"{wf.id} has plan versions 1 to {wf.plan.current.number}, not {version}"
            )
        chosen, changed = found[0], [version]
        spec = PlanSpec.model_validate(chosen.spec)
        drawing = from_definition(compile_plan(spec, tools or {}, version=version).definition)
    notes, removed = _changes(wf.plan.versions, changed)
    title = f"{drawing.title} (plan v{chosen.number}"
    title += f"; removed: {', '.join(removed)})" if removed else ")"
    return replace(drawing, title=title, notes=(*drawing.notes, *notes))


__all__ = ["plan_diagram"]
