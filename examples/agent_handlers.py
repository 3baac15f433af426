"""Handlers of the agent_task example: a stand-in model and search tool, so the example runs
offline. They report where they are with ctx.progress(), which moves the step through the
sub-states of examples/agent_step.yaml; a retried attempt resumes from ctx.resumed_from."""

from __future__ import annotations

from typing import Any

from statesaga.context import StepContext
from statesaga.registry import handler


class ToolUnavailable(Exception):
    """Raised by the stand-in search tool when the input asks it to flake once."""


@handler()
def research_with_tools(ctx: StepContext) -> dict[str, Any]:
    facts: list[str] = []
    if ctx.resumed_from == "WAITING_FOR_TOOL":
        facts.append("(resumed after a lost tool call)")
    for query in (f"{ctx.params['topic']} overview", f"{ctx.params['topic']} history"):
        ctx.progress("tool_called", f"search: {query}")
        if ctx.input.get("flaky_tool") and ctx.attempt == 1:
            raise ToolUnavailable("search tool timed out")
        facts.append(f"found: {query}")
        ctx.progress("tool_returned")
    ctx.progress("summarise")
    return {"facts": facts}


@handler()
def draft_note(ctx: StepContext) -> dict[str, Any]:
    ctx.progress("summarise", "writing the note")
    return {"note": f"NOTE-{ctx.workflow_id[-8:]}", "lines": len(ctx.params["facts"])}


@handler()
def delete_note(ctx: StepContext) -> dict[str, Any]:
    return {"deleted": ctx.params["note"]}
