"""Agents' plans as durable sagas: tools that say how they are undone (`tool`), plans made
into saga definitions at run time (`start_plan`), revised while they run (`revise_plan`), and
approvals bound to one item's exact arguments (`approve`, `reject`)."""

from .approvals import ApprovalRequest, approve, open_requests, reject, request_of
from .plan import (
    CompiledPlan,
    PlanItem,
    PlanSpec,
    compile_plan,
    items_from_tool_calls,
    load_plan,
)
from .revise import PlanConflict, PlanPatch, load_patch, revise_plan
from .runs import ItemView, compile_for, items, start_plan
from .tools import Reversibility, Tool, ToolArgumentsError, args_hash, tool, tool_of, tools_in
from .view import plan_view

__all__ = [
    "ApprovalRequest",
    "CompiledPlan",
    "ItemView",
    "PlanConflict",
    "PlanItem",
    "PlanPatch",
    "PlanSpec",
    "Reversibility",
    "Tool",
    "ToolArgumentsError",
    "approve",
    "args_hash",
    "compile_for",
    "compile_plan",
    "items",
    "items_from_tool_calls",
    "load_patch",
    "load_plan",
    "open_requests",
    "plan_view",
    "reject",
    "request_of",
    "revise_plan",
    "start_plan",
    "tool",
    "tool_of",
    "tools_in",
]
