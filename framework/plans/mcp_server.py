"""`statesaga mcp`: agents' plans served to any MCP client, on the official MCP Python SDK
(`pip install 'statesaga[mcp]'`), over stdio or Streamable HTTP.

Its MCP tools: `list_tools` (the tools a plan may call, as JSON-Schema definitions),
`start_plan`, `revise_plan` and `plan_status`; with `approvals=True` (`--approvals`), also
`approve` and `reject`, for a person's client: an agent's own client should not be able to
approve its calls. The tools of plans come only from the operator's allow-list (`--tools`).
With the in-process queue a call runs the plan here until it ends or waits for a person; with
RQ, workers run it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import StatesagaError
from .approvals import approve as _approve
from .approvals import reject as _reject
from .revise import revise_plan as _revise
from .runs import start_plan as _start
from .tools import tools_in
from .view import plan_view

if TYPE_CHECKING:
    from ..engine import Engine


class MissingExtra(StatesagaError):
    """Raised when `statesaga mcp` runs without the MCP SDK installed."""


def build_server(engine: Engine, *, approvals: bool = False) -> Any:
    """The MCP server (an `mcp.server.mcpserver.MCPServer`) over one engine."""
    try:
        import anyio
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
    except ImportError:
        raise MissingExtra(
            "statesaga mcp needs the MCP Python SDK: pip install 'statesaga[mcp]'"
        ) from None

    server = MCPServer(
        "statesaga",
        instructions="Run an agent's plan of tool calls as a durable saga: every item that "
        "ran is undone, in reverse dependency order, if a later one fails; irreversible items "
        "wait for a person's approval of their exact arguments.",
    )
    in_process = engine.queue.in_process

    def settled(workflow_id: str) -> dict[str, Any]:
        wf = engine.wait(workflow_id) if in_process else engine.get(workflow_id)
        return plan_view(wf)

    def answered(func: Any) -> Any:
        """A refusal (an unknown tool, an item that started, a hash that does not match) is
        the tool's answer to the model, in statesaga's one line; anything else is a crash."""
        try:
            return func()
        except StatesagaError as exc:
            raise ToolError(str(exc)) from None

    async def run(func: Any) -> Any:
        # The engine blocks (the store, the in-process queue): off the event loop.
        return await anyio.to_thread.run_sync(answered, func)

    @server.tool()
    def list_tools(format: str = "openai") -> list[dict[str, Any]]:
        """The tools a plan's items may call, as JSON-Schema tool definitions (format:
        openai, anthropic, mcp or statesaga, which adds each tool's reversibility)."""
        if format not in ("openai", "anthropic", "mcp", "statesaga"):
            raise ToolError("format is one of openai, anthropic, mcp, statesaga")
        return [t.definition(format) for t in tools_in(engine.registry).values()]  # type: ignore[arg-type]

    @server.tool()
    async def start_plan(
        plan: dict[str, Any], session_id: str | None = None, by: str = "mcp"
    ) -> dict[str, Any]:
        """Start a plan: {plan: NAME, items: [{id, tool, args, depends_on, title}]}. Returns
        its state: each item's status, and the approval requests it waits for."""

        def go() -> dict[str, Any]:
            wf, _ = _start(engine, plan, session_id=session_id, by=by)
            return settled(wf.id)

        result: dict[str, Any] = await run(go)
        return result

    @server.tool()
    async def revise_plan(
        workflow_id: str, patch: dict[str, Any], by: str = "mcp"
    ) -> dict[str, Any]:
        """Revise a running plan: {base_version, add: [items], replace: [items], remove:
        [ids]}; only items that have not started may change."""

        def go() -> dict[str, Any]:
            _revise(engine, workflow_id, patch, by=by)
            return settled(workflow_id)

        result: dict[str, Any] = await run(go)
        return result

    @server.tool()
    async def plan_status(workflow_id: str) -> dict[str, Any]:
        """A plan's state: items, open approval requests (tool, args, hash) and versions."""
        result: dict[str, Any] = await run(lambda: plan_view(engine.get(workflow_id)))
        return result

    if approvals:

        @server.tool()
        async def approve(workflow_id: str, item: str, hash: str, by: str) -> dict[str, Any]:
            """Approve an item's exact call by the hash its approval request shows."""

            def go() -> dict[str, Any]:
                _approve(engine, workflow_id, item, hash, by=by)
                return settled(workflow_id)

            result: dict[str, Any] = await run(go)
            return result

        @server.tool()
        async def reject(workflow_id: str, item: str, by: str, reason: str = "") -> dict[str, Any]:
            """Reject an item's call: the plan unwinds."""

            def go() -> dict[str, Any]:
                _reject(engine, workflow_id, item, by=by, reason=reason)
                return settled(workflow_id)

            result: dict[str, Any] = await run(go)
            return result

    return server


__all__ = ["MissingExtra", "build_server"]
