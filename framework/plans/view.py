"""A plan as JSON, as `plan show --json`, the HTTP API and the MCP server return it."""

from __future__ import annotations

from typing import Any

from ..models import WorkflowState
from .approvals import open_requests
from .runs import items, require_plan


def plan_view(wf: WorkflowState) -> dict[str, Any]:
    """A plan as JSON: its items (each its agent's todo), the approvals it waits for, and
    every version with what it changed (what `plan show --json`, the API and MCP return)."""
    require_plan(wf)
    assert wf.plan is not None
    return {
        "id": wf.id,
        "plan": wf.name,
        "status": wf.status.value,
        "session_id": wf.session_id,
        "version": wf.plan.current.number,
        "reason": wf.reason,
        "items": [i.as_dict() for i in items(wf)],
        "approvals": [r.as_dict() for r in open_requests(wf)],
        "versions": [
            {"number": v.number, "at": v.at.isoformat(), "by": v.by, "changes": v.changes}
            for v in wf.plan.versions
        ],
    }


__all__ = ["plan_view"]
