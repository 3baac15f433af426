"""`statesaga mcp` as a real process, driven by the MCP Python SDK's own client, over stdio and
over Streamable HTTP: the tool list, a plan started, revised and approved, and refusals."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

mcp = pytest.importorskip("mcp", reason="the mcp extra")
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOOLS = "statesaga.examples.agent_tools"
PLAN = yaml.safe_load((ROOT / "examples" / "plans" / "trip.yaml").read_text(encoding="utf-8"))


def structured(result: Any) -> Any:
    """The JSON a tool returned (its structured content, else its text)."""
    assert not result.is_error, result.content
    if result.structured_content is not None:
        data = result.structured_content
        return data.get("result", data) if set(data) == {"result"} else data
    return json.loads(result.content[0].text)


def error_text(result: Any) -> str:
    assert result.is_error
    return " ".join(getattr(c, "text", "") for c in result.content)


async def drive(client: Client, ledger: Path) -> None:
    listed = await client.list_tools()
    names = {t.name for t in listed.tools}
    assert {"list_tools", "start_plan", "revise_plan", "plan_status", "approve"} <= names
    tools = structured(await client.call_tool("list_tools", {"format": "mcp"}))
    assert "pay" in {t["name"] for t in tools} and "inputSchema" in tools[0]

    bad = {**PLAN, "items": [{**PLAN["items"][0], "args": {"origin": "B"}}]}
    refused = await client.call_tool("start_plan", {"plan": bad})
    assert "items.0.args" in error_text(refused)

    view = structured(await client.call_tool("start_plan", {"plan": PLAN, "session_id": "s1"}))
    wf_id = view["id"]
    assert view["status"] == "RUNNING" and [r["item"] for r in view["approvals"]] == ["payment"]
    old = view["approvals"][0]["hash"]
    payment = {
        "id": "payment",
        "tool": "pay",
        "depends_on": ["flight", "hotel", "car", "note"],
        "args": {"amount": 91000, "currency": "EUR", "reference": "trip-alice"},
    }
    view = structured(
        await client.call_tool(
            "revise_plan", {"workflow_id": wf_id, "patch": {"replace": [payment]}, "by": "agent"}
        )
    )
    assert view["version"] == 2
    stale = await client.call_tool(
        "approve", {"workflow_id": wf_id, "item": "payment", "hash": old, "by": "bob"}
    )
    assert "does not match" in error_text(stale)
    new = view["approvals"][0]["hash"]
    view = structured(
        await client.call_tool(
            "approve", {"workflow_id": wf_id, "item": "payment", "hash": new, "by": "bob"}
        )
    )
    for _ in range(100):
        if view["status"] == "COMPLETED":
            break
        await anyio.sleep(0.1)
        view = structured(await client.call_tool("plan_status", {"workflow_id": wf_id}))
    assert view["status"] == "COMPLETED"
    paid = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert [e["args"]["amount"] for e in paid if e["step"] == "payment"] == [91000]


def env_for(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "STATESAGA_STORE": f"sqlite:///{tmp_path / 'mcp.db'}",
        "STATESAGA_QUEUE": "inline://",
        "STATESAGA_TOOLS_LEDGER": str(tmp_path / "l.jsonl"),
    }


@pytest.mark.slow  # a real `statesaga mcp` process
def test_mcp_over_stdio(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "statesaga.cli", "mcp", "--tools", TOOLS, "--approvals"],
        env=env,
        cwd=str(tmp_path),
    )

    async def main() -> None:
        async with Client(params) as client:
            await drive(client, tmp_path / "l.jsonl")

    anyio.run(main)


@pytest.mark.slow  # a real `statesaga mcp` server
def test_mcp_over_http_and_no_approvals_unless_asked(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "mcp.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "statesaga.cli", "mcp", "--tools", TOOLS, "--approvals", "--http",
         "--port", str(port)],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "mcp.log").read_text()
                assert time.monotonic() < deadline, "the MCP server did not listen"
                time.sleep(0.1)

        async def main() -> None:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                await drive(client, tmp_path / "l.jsonl")

        anyio.run(main)
    finally:
        server.terminate()
        server.wait(20)
        log.close()

    # Without --approvals, an agent's client cannot approve its own calls.
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "statesaga.cli", "mcp", "--tools", TOOLS],
        env=env, cwd=str(tmp_path),
    )  # fmt: skip

    async def agent() -> None:
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "approve" not in names and "start_plan" in names

    anyio.run(agent)


@pytest.mark.redis
@pytest.mark.slow
def test_an_8_item_plan_through_mcp_on_rq_with_workers_killed(tmp_path: Path) -> None:
    """The issue's plan through `statesaga mcp` (stdio, the SDK's client) with RQ workers,
    one SIGKILLed every 1-2 s: revised and approved mid-flight, it completes; each item's calls
    carry one idempotency key, and the payment ran only with the args it was approved for."""
    from plan_cluster import PlanCluster, chaos_plan, one_key_per_item

    c = PlanCluster(tmp_path)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "statesaga.cli", "mcp", "--tools", TOOLS, "--approvals"],
        env=c.env,
        cwd=str(tmp_path),
    )

    async def status(client: Client, wf_id: str, cond: Any, what: str) -> dict[str, Any]:
        for _ in range(1200):
            view = structured(await client.call_tool("plan_status", {"workflow_id": wf_id}))
            if cond(view):
                return view
            await anyio.sleep(0.1)
        pytest.fail(f"{what}: {view}")

    async def main() -> str:
        async with Client(params) as client:
            view = structured(await client.call_tool("start_plan", {"plan": chaos_plan(PLAN)}))
            wf_id = view["id"]
            assert len(view["items"]) == 8
            view = await status(client, wf_id, lambda v: v["approvals"], "no approval request")
            old = view["approvals"][0]["hash"]
            payment = {
                "id": "payment",
                "tool": "pay",
                "depends_on": ["flight", "hotel", "car", "note"],
                "args": {"amount": 91000, "currency": "EUR", "reference": "trip-alice"},
            }
            patch = {"base_version": 1, "replace": [payment], "remove": ["confirm"]}
            view = structured(
                await client.call_tool("revise_plan", {"workflow_id": wf_id, "patch": patch})
            )
            stale = await client.call_tool(
                "approve", {"workflow_id": wf_id, "item": "payment", "hash": old, "by": "bob"}
            )
            assert "does not match" in error_text(stale)
            new = view["approvals"][0]["hash"]
            await client.call_tool(
                "approve", {"workflow_id": wf_id, "item": "payment", "hash": new, "by": "bob"}
            )
            again = await client.call_tool(
                "approve", {"workflow_id": wf_id, "item": "payment", "hash": new, "by": "eve"}
            )
            assert "already approved by bob" in error_text(again)
            done = await status(client, wf_id, lambda v: v["status"] == "COMPLETED", "not done")
            assert [v["number"] for v in done["versions"]] == [1, 2]
            return str(wf_id)

    try:
        wf_id = anyio.run(main)
    finally:
        c.close()
    assert c.kills
    mine = [e for e in c.ledger() if e["workflow"] == wf_id]
    assert all(len(k) == 1 for k in one_key_per_item(mine).values())
    assert "confirm" not in {e["step"] for e in mine}
    assert {e["args"]["amount"] for e in mine if e["step"] == "payment"} == {91000}
    assert not [e for e in mine if e["event"] == "undo"]
