"""A plan as JSON, as `plan show --json`, the HTTP API and the MCP server return it; and what
each version of a plan changed, item by item and argument by argument."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from ..models import PlanVersion, WorkflowState
from .approvals import open_requests
from .runs import items, require_plan


def _value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _after(item: Mapping[str, Any], previous: str | None) -> list[str]:
    """The items `item` waits for, as the plan's rule reads `depends_on` (absent: the item
    before it)."""
    deps = item.get("depends_on")
    if deps is None:
        return [previous] if previous else []
    return [deps] if isinstance(deps, str) else list(deps)


def _items(spec: Mapping[str, Any]) -> dict[str, tuple[Mapping[str, Any], list[str]]]:
    out: dict[str, tuple[Mapping[str, Any], list[str]]] = {}
    previous = None
    for item in spec.get("items", []):
        out[item["id"]] = (item, _after(item, previous))
        previous = item["id"]
    return out


def version_details(
    before: Mapping[str, Any] | None, after: Mapping[str, Any], replaced: Collection[str] = ()
) -> list[str]:
    """What a version changed from the one before, one line per item: what was added (its
    call), removed, and for a replaced item each field and argument that differs. An item the
    revision did not name (not in `replaced`) that now waits for other items (the item before
    it was removed) is said to have moved."""
    if before is None:
        return [f"started with {len(after.get('items', []))} items"]
    old, new = _items(before), _items(after)
    lines = []
    for item_id, (item, deps) in new.items():
        if item_id not in old:
            where = f", after {', '.join(deps)}" if deps else ""
            lines.append(f"added {item_id}: {item['tool']} {_value(item.get('args', {}))}{where}")
            continue
        was, was_deps = old[item_id]
        diffs = []
        if was["tool"] != item["tool"]:
            diffs.append(f"tool {was['tool']} → {item['tool']}")
        args_was, args_now = was.get("args", {}), item.get("args", {})
        for key in sorted(set(args_was) | set(args_now)):
            if key not in args_now:
                diffs.append(f"args.{key} {_value(args_was[key])} dropped")
            elif key not in args_was:
                diffs.append(f"args.{key} {_value(args_now[key])} given")
            elif args_was[key] != args_now[key]:
                diffs.append(f"args.{key} {_value(args_was[key])} → {_value(args_now[key])}")
        if was_deps != deps:
            before_deps, now_deps = ", ".join(was_deps), ", ".join(deps)
            diffs.append(f"after {before_deps or 'nothing'} → {now_deps or 'nothing'}")
        for field in ("title", "approval"):
            if was.get(field) != item.get(field):
                diffs.append(f"{field} {_value(was.get(field))} → {_value(item.get(field))}")
        if diffs:
            verb = "replaced" if item_id in replaced else "moved"
            lines.append(f"{verb} {item_id}: {'; '.join(diffs)}")
        elif item_id in replaced:
            lines.append(f"replaced {item_id}: the same call")
    lines.extend(
        f"removed {item_id}: {item['tool']} {_value(item.get('args', {}))}"
        for item_id, (item, _) in old.items()
        if item_id not in new
    )
    return lines or ["no item changed"]


def versions(wf: WorkflowState) -> list[dict[str, Any]]:
    """Every version of the plan, oldest first: its number, when and by whom, what it changed
    in words (`changes`) and in detail (`details`)."""
    require_plan(wf)
    assert wf.plan is not None
    out = []
    before: PlanVersion | None = None
    for v in wf.plan.versions:
        out.append(
            {
                "number": v.number,
                "at": v.at.isoformat(),
                "by": v.by,
                "changes": v.changes,
                "details": version_details(
                    before.spec if before else None,
                    v.spec,
                    {c.partition(" ")[2] for c in v.changes if c.startswith("replaced ")},
                ),
            }
        )
        before = v
    return out


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
        "versions": versions(wf),
    }


__all__ = ["plan_view", "version_details", "versions"]
