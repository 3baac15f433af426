"""Bad plans, patches and approvals, as a hostile agent or a careless person sends them, through
the CLI, the HTTP API and the MCP server: each is refused in one clear line naming the item or
field (exit 1, a 4xx, an MCP tool error), and nothing is stored: the plan waiting for its
approval keeps its revision, and no other workflow appears."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel
from statesaga.app import EngineOptions
from statesaga.cli import main
from statesaga.engine import Engine
from statesaga.errors import DefinitionError
from statesaga.plans import open_requests, start_plan, tool

ROOT = Path(__file__).resolve().parents[1]
TRIP = ROOT / "examples" / "plans" / "trip.yaml"
TOOLS = "statesaga.examples.agent_tools"
PLAN = yaml.safe_load(TRIP.read_text(encoding="utf-8"))
NOTE = {"tool": "write_note", "args": {"title": "t", "text": "x"}}


class Anything(BaseModel):
    value: Any = None


@tool(read_only=True)
def echo(args: Anything) -> Any:
    """Any value, as given."""
    return args.value


def plan_of(*items: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {"plan": name, "items": list(items)}


#: plan run: (file name, text, what the one line says).
BAD_PLANS = [
    ("syntax.yaml", "plan: x\nitems: [\n", "syntax.yaml:3: YAML syntax error"),
    ("syntax.json", '{"plan": "x", "items": [', "syntax.json:1: YAML syntax error"),
    ("list.yaml", "- 1\n- 2\n", "list.yaml:1: a plan must be a mapping with `items`"),
    ("empty.yaml", "plan: x\nitems: []\n", "empty.yaml:2: [items] Tuple should have at least 1"),
    ("tool.json", json.dumps(plan_of({"id": "a", "tool": "rm_rf"})),
     "[items.0.tool] item 'a': unknown tool 'rm_rf' (tools: book_flight,"),
    ("args.json", json.dumps(plan_of({"id": "a", "tool": "pay", "args": {"amount": -1,
     "currency": "EUR", "reference": "r"}})),
     "[items.0.args.amount] item 'a': pay args.amount: Input should be greater than 0"),
    ("extra.json", json.dumps(plan_of({"id": "a", **NOTE, "args": {**NOTE["args"], "rm": 1}})),
     "[items.0.args.rm] item 'a': write_note args.rm: not an argument of this tool"),
    ("cycle.json", json.dumps(plan_of({"id": "a", **NOTE, "depends_on": ["b"]},
                                      {"id": "b", **NOTE, "depends_on": ["a"]})),
     "[items.1.depends_on] dependency cycle: a -> b -> a"),
    ("self.json", json.dumps(plan_of({"id": "a", **NOTE, "depends_on": "a"})),
     "[items.0.depends_on.0] step 'a' depends on itself"),
    ("nodep.json", json.dumps(plan_of({"id": "a", **NOTE, "depends_on": ["zz"]})),
     "[items.0.depends_on.0] step 'a' depends on unknown step 'zz'"),
    ("oddid.json", json.dumps(plan_of({"id": "../a b", **NOTE})),
     "[items.0.id] an item id is letters, digits, _ and - (starting with a letter or _), "
     "not '../a b'"),
    ("dotid.json", json.dumps(plan_of({"id": "a.approval", **NOTE})),
     "[items.0.id] an item id is letters, digits, _ and -"),
    ("dup.json", json.dumps(plan_of({"id": "a", **NOTE}, {"id": "a", **NOTE})),
     "[items.1.id] duplicate item id 'a'"),
    ("escape.json", json.dumps(plan_of({"id": "a", **NOTE}, name="trip\u001b[2J")),
     "[plan] no control characters (newline, tab, escape, NUL), not 'trip\\x1b[2J'"),
    ("title.json", json.dumps(plan_of({"id": "a", **NOTE, "title": "a\u0000b"})),
     "[items.0.title] no control characters"),
    ("huge.json", json.dumps(plan_of(*({"id": f"i{n}", **NOTE} for n in range(1001)))),
     "[items] 1001 items: a plan has at most 1000 (STATESAGA_MAX_PLAN_ITEMS)"),
]  # fmt: skip

PAYMENT = next(i for i in PLAN["items"] if i["id"] == "payment")
#: plan revise on a plan waiting for its payment's approval: (patch, what the line says).
BAD_PATCHES = [
    ({"remove": ["flight"]},
     "remove 'flight': the item is COMPLETED; only items that have not started can change"),
    ({"replace": [{**PLAN["items"][0], "args": {**PLAN["items"][0]["args"], "date": "x"}}]},
     "replace 'search': the item is COMPLETED"),
    ({"remove": ["zz"]}, "remove 'zz': no such item (items: search, flight,"),
    ({"add": [{"id": "note", **NOTE}]}, "add 'note': the plan already has that item (use replace)"),
    ({"add": [{"id": "x", "tool": "teleport"}]}, "item 'x': unknown tool 'teleport'"),
    ({"add": [{"id": "x y", **NOTE}]},
     "[add.0.id] an item id is letters, digits, _ and - (starting with a letter or _), not 'x y'"),
    ({"replace": [{"id": "itinerary", **NOTE, "depends_on": ["confirm"]},
                  {"id": "confirm", **NOTE, "depends_on": ["itinerary"]}]},
     "dependency cycle: confirm -> itinerary -> confirm"),
    ({"base_version": 7, "remove": ["itinerary"]},
     "the patch was written against plan version 7, but the plan is at version 1"),
    ({}, "patch.yaml:1: the patch changes nothing (add/replace/remove)"),
    ({"delete": ["itinerary"]}, "patch.yaml:1: [delete] unknown key 'delete'"),
    ({"add": [{"id": f"x{n}", **NOTE, "depends_on": ["payment"]} for n in range(995)]},
     "[items] 1003 items: a plan has at most 1000"),
]  # fmt: skip


@pytest.fixture
def waiting(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, str]]:
    """A store holding the trip plan, waiting for the payment's approval."""
    for name in ("STATESAGA_STORE", "STATESAGA_QUEUE", "STATESAGA_HANDLERS"):
        monkeypatch.delenv(name, raising=False)
    engine = EngineOptions(sqlite_url, "inline://", handlers=[TOOLS], allow="listed").build()
    wf, _ = start_plan(engine, PLAN, by="agent")
    engine.wait(wf.id)
    assert open_requests(engine.get(wf.id))
    yield engine, wf.id


def unchanged(engine: Engine, wf_id: str, revision: int) -> None:
    assert [w.id for w in engine.store.list()] == [wf_id], "another workflow was stored"
    assert engine.get(wf_id).revision == revision, "the plan changed"


def run_cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def one_line(result: Any, expect: str) -> None:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], result.output


def test_bad_plans_are_refused_by_plan_run(
    waiting: tuple[Engine, str], sqlite_url: str, tmp_path: Path
) -> None:
    engine, wf_id = waiting
    revision = engine.get(wf_id).revision
    for name, text, expect in BAD_PLANS:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        result = run_cli("plan", "run", str(path), "--tools", TOOLS, "--store", sqlite_url)
        assert result.exit_code == 1, (name, result.output)
        one_line(result, expect)
    unchanged(engine, wf_id, revision)


def test_bad_patches_are_refused_by_plan_revise(
    waiting: tuple[Engine, str], sqlite_url: str, tmp_path: Path
) -> None:
    engine, wf_id = waiting
    revision = engine.get(wf_id).revision
    path = tmp_path / "patch.yaml"
    for patch, expect in BAD_PATCHES:
        path.write_text(yaml.safe_dump(patch), encoding="utf-8")
        result = run_cli("plan", "revise", wf_id, str(path), "--tools", TOOLS, "--store",
                         sqlite_url, "--by", "agent")  # fmt: skip
        assert result.exit_code == 1, (patch, result.output)
        one_line(result, expect)
    unchanged(engine, wf_id, revision)


def test_approvals_are_refused_unless_for_the_current_call_once(
    waiting: tuple[Engine, str], sqlite_url: str, tmp_path: Path
) -> None:
    engine, wf_id = waiting
    old = open_requests(engine.get(wf_id))[0].hash
    patch = tmp_path / "patch.yaml"
    cheaper = {**PAYMENT, "args": {**PAYMENT["args"], "amount": 91000}}
    patch.write_text(yaml.safe_dump({"replace": [cheaper]}), encoding="utf-8")
    ok = run_cli("plan", "revise", wf_id, str(patch), "--tools", TOOLS, "--store", sqlite_url)
    assert ok.exit_code == 0, ok.output
    revision = engine.get(wf_id).revision

    def answer(*args: str) -> Any:
        return run_cli(*args, "--tools", TOOLS, "--store", sqlite_url)

    for _ in range(2):  # the same stale approval twice: refused both times
        stale = answer("approve", wf_id, "payment", "--hash", old, "--by", "bob")
        assert stale.exit_code == 1
        one_line(stale, "does not match the current call of item 'payment' (hash ")
    refusals = {
        ("approve", wf_id, "nope", "--hash", old, "--by", "bob"): "has no item 'nope'",
        ("approve", wf_id, "flight", "--hash", old, "--by", "bob"): "'flight' needs no approval",
        ("approve", wf_id, "payment", "--hash", old, "--by", "b\u001b[2Jb"):
            "an approval names who acts with printable text",
        ("reject", wf_id, "payment", "--by", " "): "a rejection names who gives it",
        ("approve", "WF-nope", "payment", "--hash", old, "--by", "bob"): "WF-nope",
    }  # fmt: skip
    for args, expect in refusals.items():
        result = answer(*args)
        assert result.exit_code == 1, (args, result.output)
        one_line(result, expect)
    unchanged(engine, wf_id, revision)
    new = open_requests(engine.get(wf_id))[0].hash
    taken = answer("approve", wf_id, "payment", "--hash", new, "--by", "bob")
    assert taken.exit_code == 0 and f"{wf_id} COMPLETED" in taken.output, taken.output
    revision = engine.get(wf_id).revision
    for args in (
        ("approve", wf_id, "payment", "--hash", new, "--by", "eve"),
        ("reject", wf_id, "payment", "--by", "eve"),
    ):
        again = answer(*args)
        assert again.exit_code == 1
        one_line(again, "item 'payment' was already approved by bob at ")
    finished = answer("plan", "revise", wf_id, str(patch))
    assert finished.exit_code == 1
    one_line(finished, f"{wf_id} is COMPLETED; a plan can be revised only while it runs")
    unchanged(engine, wf_id, revision)


def test_args_json_cannot_carry_are_refused_before_anything_is_stored(
    waiting: tuple[Engine, str],
) -> None:
    """A plan built in Python may hold values its store and its hash cannot: NaN, a date."""
    engine, wf_id = waiting
    engine.registry.register(echo)
    revision = engine.get(wf_id).revision
    for value, why in ((float("nan"), "nan is not a finite number (JSON has no NaN/Infinity)"),
                       (date(2026, 1, 1), "date is not a JSON value"),
                       (-(10**4300), "an integer of more than 4300 digits cannot be stored "
                                     "(pass it as text)")):  # fmt: skip
        with pytest.raises(DefinitionError) as refused:
            start_plan(engine, plan_of({"id": "a", "tool": "echo", "args": {"value": value}}))
        assert str(refused.value) == f"plan: [items.0.args] item 'a': args.value: {why}"
    unchanged(engine, wf_id, revision)


def test_the_http_api_refuses_with_a_4xx_and_stores_nothing(
    waiting: tuple[Engine, str], sqlite_url: str
) -> None:
    pytest.importorskip("starlette", reason="the API needs the ui extra")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    from statesaga.web import ServeSettings, create_app

    engine, wf_id = waiting
    revision = engine.get(wf_id).revision
    old = open_requests(engine.get(wf_id))[0].hash
    token = "plan-refusals-7781"
    auth = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    settings = ServeSettings(store=sqlite_url, queue="inline://", handlers=(TOOLS,), token=token)
    huge = plan_of(*({"id": f"i{n}", **NOTE} for n in range(1001)))
    nan = b'{"plan": {"plan": "p", "items": [{"id": "a", "tool": "write_note", "args": ' \
          b'{"title": "t", "text": NaN}}]}, "by": "a"}'  # fmt: skip
    calls = [
        ("/api/plans", b'{"plan": ', 400, "the request body is not JSON"),
        ("/api/plans", nan, 400, "plan.items[0].args.text: NaN is not JSON"),
        ("/api/plans", {"plan": huge, "by": "a"}, 400, "plan: [items] 1001 items"),
        ("/api/plans", {"plan": plan_of({"id": "a/b", **NOTE}), "by": "a"}, 400,
         "plan: [items.0.id] an item id is letters"),
        ("/api/plans", {"plan": PLAN, "by": "a\nb"}, 400, "`by` must name who asks"),
        (f"/api/plans/{wf_id}/revise", {"patch": {"remove": ["car"]}, "by": "a"}, 409,
         "remove 'car': the item is COMPLETED"),
        (f"/api/plans/{wf_id}/revise", {"patch": {"add": [{"id": "z", "tool": "x"}]}, "by": "a"},
         400, "item 'z': unknown tool 'x'"),
        (f"/api/plans/{wf_id}/approve/payment", {"hash": old[::-1], "by": "b"}, 409,
         "does not match the current call of item 'payment'"),
        (f"/api/plans/{wf_id}/approve/payment", {"hash": old[::-1], "by": "b"}, 409,
         "does not match the current call of item 'payment'"),
        (f"/api/plans/{wf_id}/approve/payment", {"by": "b"}, 400, "give `hash`"),
        (f"/api/plans/{wf_id}/approve/%2e%2e", {"hash": old, "by": "b"}, 409, "has no item '..'"),
    ]  # fmt: skip
    with TestClient(create_app(settings)) as c:
        for path, body, status, expect in calls:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = c.post(path, content=content, headers=auth)
            assert r.status_code == status, (path, r.text)
            assert expect in r.json()["error"] and "\n" not in r.json()["error"], r.text
        unchanged(engine, wf_id, revision)
        assert c.post(f"/api/plans/{wf_id}/approve/payment", json={"hash": old, "by": "b"},
                      headers=auth).status_code == 202  # fmt: skip
        dup = c.post(f"/api/plans/{wf_id}/approve/payment", json={"hash": old, "by": "e"},
                     headers=auth)  # fmt: skip
        assert dup.status_code == 409 and "already approved by b" in dup.json()["error"]


def test_the_mcp_server_refuses_with_a_tool_error_and_stores_nothing(
    waiting: tuple[Engine, str],
) -> None:
    pytest.importorskip("mcp", reason="the mcp extra")
    import anyio
    from mcp import Client
    from statesaga.plans.mcp_server import build_server

    engine, wf_id = waiting
    revision = engine.get(wf_id).revision
    old = open_requests(engine.get(wf_id))[0].hash
    calls = [
        ("start_plan", {"plan": plan_of({"id": "a", **NOTE}, name="p\u0000")},
         "plan: [plan] no control characters"),
        ("start_plan", {"plan": plan_of(*({"id": f"i{n}", **NOTE} for n in range(1001)))},
         "plan: [items] 1001 items"),
        ("start_plan", {"plan": plan_of({"id": "a", "tool": "rm_rf"})}, "unknown tool 'rm_rf'"),
        ("start_plan", {"plan": PLAN, "by": "x\u001b]0;pwned\u0007"},
         "a plan names who acts with printable text"),
        ("revise_plan", {"workflow_id": wf_id, "patch": {"remove": ["search"]}},
         "remove 'search': the item is COMPLETED"),
        ("approve", {"workflow_id": wf_id, "item": "payment", "hash": old[::-1], "by": "bob"},
         "does not match the current call"),
        ("reject", {"workflow_id": wf_id, "item": "payment", "by": "\u001b[2J"},
         "a rejection names who acts with printable text"),
    ]  # fmt: skip

    async def drive() -> None:
        async with Client(build_server(engine, approvals=True)) as client:
            for name, args, expect in calls:
                result = await client.call_tool(name, args)
                text = " ".join(getattr(c, "text", "") for c in result.content)
                assert result.is_error and expect in text, (name, text)
            unchanged(engine, wf_id, revision)
            ok = await client.call_tool(
                "approve", {"workflow_id": wf_id, "item": "payment", "hash": old, "by": "bob"}
            )
            assert not ok.is_error
            dup = await client.call_tool(
                "approve", {"workflow_id": wf_id, "item": "payment", "hash": old, "by": "eve"}
            )
            text = " ".join(getattr(c, "text", "") for c in dup.content)
            assert dup.is_error and "already approved by bob" in text

    anyio.run(drive)
    deadline = time.monotonic() + 30
    while engine.get(wf_id).status.value != "COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.get(wf_id).status.value == "COMPLETED"
