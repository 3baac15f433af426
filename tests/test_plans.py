"""Plans: an agent's tool calls compiled into a saga stored with its workflow, checked before
anything is stored, and revised while they run (items not started only, numbered versions,
the store's revision check deciding a race with a worker). Real SQLite files, the in-process
queue, the CLI as a user runs it, and RQ workers on a real Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from statesaga.app import EngineOptions
from statesaga.engine import Engine
from statesaga.errors import DefinitionError, StateError
from statesaga.models import StepStatus, WorkflowStatus
from statesaga.plans import (
    PlanConflict,
    approve,
    compile_for,
    items,
    open_requests,
    revise_plan,
    start_plan,
)

ROOT = Path(__file__).resolve().parents[1]
TRIP = ROOT / "examples" / "plans" / "trip.yaml"
TOOLS = "statesaga.examples.agent_tools"


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statesaga.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        check=False,
    )


def started(run: subprocess.CompletedProcess[str]) -> str:
    found = re.search(r"^(WF-\S+) started", run.stdout + run.stderr, re.M)
    assert found, run.stdout + run.stderr
    return found.group(1)


def ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def tools_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tools.jsonl"
    monkeypatch.setenv("STATESAGA_TOOLS_LEDGER", str(path))
    return path


@pytest.fixture
def engine(sqlite_url: str) -> Engine:
    return EngineOptions(sqlite_url, "inline://", handlers=[TOOLS], allow="listed").build()


def trip(**changes: Any) -> dict[str, Any]:
    """The example plan as a dict, with items replaced by id (None: removed)."""
    import yaml

    data = yaml.safe_load(TRIP.read_text(encoding="utf-8"))
    out = []
    for item in data["items"]:
        if item["id"] in changes:
            if changes[item["id"]] is not None:
                out.append({**item, **changes[item["id"]]})
        else:
            out.append(item)
    data["items"] = out
    return data


# -- checked before anything is stored ----------------------------------------------------------
def test_unknown_tool_and_bad_args_name_the_item_and_field(tmp_path: Path, sqlite_url: str) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "plan: p\n"
        "items:\n"
        "  - id: a\n"
        "    tool: book_hotel\n"
        "    args: {hotel: Plaza, nights: 0}\n"
        "  - id: b\n"
        "    tool: teleport\n"
        "  - id: c\n"
        "    tool: pay\n"
        "    args: {amount: 5, currency: EUR, reference: r, tip: 1}\n",
        encoding="utf-8",
    )
    out = cli("plan", "run", "plan.yaml", "--tools", TOOLS, "--store", sqlite_url, cwd=tmp_path)
    assert out.returncode == 1, out.stdout
    lines = out.stderr.splitlines()
    assert lines[0].startswith(
        "plan.yaml:5: [items.0.args.nights] item 'a': book_hotel args.nights"
    )
    assert "greater than or equal to 1" in lines[0]
    assert lines[1].startswith("plan.yaml:7: [items.1.tool] item 'b': unknown tool 'teleport'")
    assert lines[2] == (
        "plan.yaml:10: [items.2.args.tip] item 'c': pay args.tip: not an argument of this tool"
    )
    assert "Traceback" not in out.stderr
    assert (
        not (tmp_path / "statesaga.db").exists()
        or "WF-" not in cli("list", "--store", sqlite_url, cwd=tmp_path).stdout
    )


def test_the_saga_rules_are_reported_on_the_items(engine: Engine) -> None:
    cyclic = trip(search={"depends_on": ["itinerary"]})
    with pytest.raises(DefinitionError) as info:
        compile_for(engine, cyclic)
    assert "[items.1.depends_on] dependency cycle: search -> itinerary" in str(info.value)
    unknown = trip(car={"depends_on": ["boat"]})
    with pytest.raises(DefinitionError, match=r"items.3.depends_on.0.*unknown step 'boat'"):
        compile_for(engine, unknown)


def test_approval_needs_literal_args_and_one_point_of_no_return(engine: Engine) -> None:
    ref = trip(payment={"args": {"amount": "${steps.search.total}", "currency": "EUR",
                                 "reference": "x"}})  # fmt: skip
    with pytest.raises(DefinitionError, match="needs approval, so its args must be values"):
        compile_for(engine, ref)
    parallel = trip(confirm={"depends_on": ["search"]})
    with pytest.raises(DefinitionError, match="irreversible items .* may run in either order"):
        compile_for(engine, parallel)


def test_the_compiled_saga_gates_the_irreversible_item(engine: Engine) -> None:
    compiled = compile_for(engine, TRIP)
    d = compiled.definition
    names = [s.name for s in d.steps]
    assert names.index("payment.approval") == names.index("payment") - 1
    gate = d.steps[names.index("payment.approval")]
    assert gate.kind == "wait" and gate.signal == "approve:payment"
    assert d.dependencies["payment.approval"] == ("flight", "hotel", "car", "note")
    assert d.pivot == "payment"
    step = {s.name: s for s in d.steps}
    assert step["flight"].compensation is not None
    assert step["flight"].compensation.action == "cancel_flight"
    assert step["search"].compensation is None  # read-only: nothing to undo
    # Reversible after the point of no return: flagged, and never undone.
    assert step["itinerary"].compensation is None
    assert [w.field for w in compiled.warnings] == ["items.7.tool"]


# -- running, on a real SQLite file -------------------------------------------------------------
def test_a_plan_runs_to_its_approval_then_to_the_end(engine: Engine, tools_ledger: Path) -> None:
    wf, _ = start_plan(engine, TRIP, session_id="alice", by="agent")
    wf = engine.wait(wf.id)
    assert wf.status is WorkflowStatus.RUNNING
    view = {i.id: i for i in items(wf)}
    assert view["payment"].status == "WAITING for approval"
    assert view["flight"].todo == "completed" and view["confirm"].todo == "pending"
    [request] = open_requests(wf)
    assert request.args == {"amount": 98000, "currency": "EUR", "reference": "trip-alice"}
    assert not [e for e in ledger(tools_ledger) if e["step"] == "payment"]  # not before approval
    approve(engine, wf.id, "payment", request.hash, by="bob")
    wf = engine.wait(wf.id)
    assert wf.status is WorkflowStatus.COMPLETED
    applied = Counter(e["step"] for e in ledger(tools_ledger) if e["event"] == "apply")
    assert applied == {
        "flight": 1,
        "car": 1,
        "note": 1,
        "payment": 1,
        "confirm": 1,
        "itinerary": 1,
    }  # fmt: skip  (the Grand is full: nothing applied)
    assert [w.id for w in engine.store.list(session_id="alice")] == [wf.id]
    assert {i.todo for i in items(wf)} == {"completed"}


def test_a_revision_changes_only_items_not_started(engine: Engine, tools_ledger: Path) -> None:
    wf, _ = start_plan(engine, TRIP, session_id="alice", by="agent")
    wf = engine.wait(wf.id)
    hotel = next(i for i in items(wf) if i.id == "hotel")
    assert hotel.result == {"booked": False, "hotel": "Grand", "reason": "no rooms left"}
    before = wf.revision
    with pytest.raises(StateError, match=r"replace 'hotel': the item is COMPLETED; only items"):
        plaza = {"id": "hotel", "tool": "book_hotel", "args": {"hotel": "Plaza", "nights": 3}}
        revise_plan(engine, wf.id, {"replace": [plaza]})
    assert engine.get(wf.id).revision == before  # refused: nothing saved
    # The agent books another hotel, and pays the new total; the email is dropped.
    patch = {
        "base_version": 1,
        "add": [{"id": "hotel2", "tool": "book_hotel", "args": {"hotel": "Plaza", "nights": 3},
                 "depends_on": ["search"], "title": "book the Plaza"}],
        "replace": [{"id": "payment", "tool": "pay",
                     "depends_on": ["flight", "hotel2", "car", "note"],
                     "args": {"amount": 91000, "currency": "EUR", "reference": "trip-alice"}}],
        "remove": ["confirm"],
    }  # fmt: skip
    replace_itinerary = {"id": "itinerary", "tool": "write_note", "depends_on": ["payment"],
                         "args": {"title": "Lisbon", "text": "Plaza"}}  # fmt: skip
    wf = revise_plan(engine, wf.id, {**patch, "replace": [*patch["replace"], replace_itinerary]},
                     by="agent")  # fmt: skip
    wf = engine.wait(wf.id)
    assert wf.plan is not None and wf.plan.current.number == 2
    assert wf.plan.current.changes == [
        "added hotel2", "replaced payment", "replaced itinerary", "removed confirm",
    ]  # fmt: skip
    assert any(h.chart == "plan" and h.dest == "v2" and h.by == "agent" for h in wf.history)
    assert wf.step("hotel2").status is StepStatus.COMPLETED  # ready at once: it ran
    with pytest.raises(PlanConflict, match="written against plan version 1"):
        revise_plan(engine, wf.id, {"base_version": 1, "remove": ["note"]})
    [request] = open_requests(wf)
    assert request.args["amount"] == 91000 and request.plan_version == 2
    approve(engine, wf.id, "payment", request.hash, by="bob")
    wf = engine.wait(wf.id)
    assert wf.status is WorkflowStatus.COMPLETED
    ran = [e for e in ledger(tools_ledger) if e["event"] == "apply"]
    assert "confirm" not in {e["step"] for e in ran}  # a removed item never runs
    [paid] = [e for e in ran if e["step"] == "payment"]
    assert paid["args"]["amount"] == 91000  # the args of the version it ran under
    assert [e["args"]["text"] for e in ran if e["step"] == "itinerary"] == ["Plaza"]


def test_a_revision_racing_a_worker_loses_to_the_claim(engine: Engine, sqlite_url: str) -> None:
    """The store's revision check decides: the worker's claim saves first, the revision is
    evaluated again on the new document and refused, naming the item and its state."""
    plan = trip(payment=None, confirm=None, itinerary=None)
    wf, _ = start_plan(engine, plan, by="agent")  # inline: runs nothing until drained
    stored = engine.get(wf.id)
    assert stored.step("search").status is StepStatus.QUEUED
    other = EngineOptions(sqlite_url, "inline://", handlers=[TOOLS], allow="listed").build()
    real_save = engine.store.save
    raced = []

    def save_after_the_claim(doc: Any) -> None:
        if not raced:
            raced.append(True)
            other.queue.enqueue(other.step_job(stored, stored.step("search")))
            other.queue.drain(lambda: other.get(wf.id).step("search").status
                              is not StepStatus.QUEUED, 5)  # fmt: skip
        real_save(doc)

    assert stored.step("flight").status is StepStatus.PENDING  # revisable when it was read
    engine.store.save = save_after_the_claim  # type: ignore[method-assign]
    with pytest.raises(StateError, match=r"remove 'flight': the item is (QUEUED|COMPLETED)"):
        revise_plan(engine, wf.id, {"remove": ["flight"]})
    assert raced and engine.get(wf.id).plan.current.number == 1  # type: ignore[union-attr]


def test_removing_every_item_left_completes_the_plan(engine: Engine) -> None:
    wf, _ = start_plan(engine, trip(), by="agent")
    wf = engine.wait(wf.id)
    wf = revise_plan(engine, wf.id, {"remove": ["itinerary", "confirm", "payment"]})
    assert engine.wait(wf.id).status is WorkflowStatus.COMPLETED


# -- the CLI, as a user runs it ------------------------------------------------------------------
@pytest.mark.slow
def test_plan_run_revise_show_approve_from_the_command_line(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = {"STATESAGA_TOOLS_LEDGER": str(tmp_path / "l.jsonl")}
    run = cli("plan", "run", str(TRIP), "--tools", TOOLS, "--store", sqlite_url,
              "--session", "alice", cwd=tmp_path, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "warning:" in run.stderr and "delete_note would never run" in run.stderr
    wf_id = started(run)
    assert "payment          WAITING for approval" in run.stdout
    assert f"statesaga approve {wf_id} payment --hash " in run.stdout
    listed = cli("list", "--session", "alice", "--store", sqlite_url, cwd=tmp_path)
    assert wf_id in listed.stdout
    patch = tmp_path / "patch.yaml"
    patch.write_text(
        "replace:\n"
        "  - id: payment\n    tool: pay\n    depends_on: [flight, hotel, car, note]\n"
        "    args: {amount: 500, currency: EUR, reference: r}\n",
        encoding="utf-8",
    )
    revised = cli("plan", "revise", wf_id, str(patch), "--tools", TOOLS, "--store", sqlite_url,
                  "--by", "agent", cwd=tmp_path, env=env)  # fmt: skip
    assert revised.returncode == 0, revised.stderr
    assert "plan version 2: replaced payment" in revised.stdout
    shown = json.loads(cli("plan", "show", wf_id, "--store", sqlite_url, "--json",
                           cwd=tmp_path).stdout)  # fmt: skip
    assert shown["version"] == 2 and shown["approvals"][0]["args"]["amount"] == 500
    v1 = json.loads(cli("plan", "show", wf_id, "--version", "1", "--store", sqlite_url,
                        cwd=tmp_path).stdout)  # fmt: skip
    assert [i for i in v1["items"] if i["id"] == "payment"][0]["args"]["amount"] == 98000
    again = cli("plan", "revise", wf_id, str(tmp_path / "missing.yaml"), "--store", sqlite_url,
                cwd=tmp_path)  # fmt: skip
    assert again.returncode == 2 and "Traceback" not in again.stderr
    ok = cli("approve", wf_id, "payment", "--hash", shown["approvals"][0]["hash"], "--by",
             "bob", "--tools", TOOLS, "--store", sqlite_url, cwd=tmp_path, env=env)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert f"{wf_id} COMPLETED" in ok.stdout


# -- RQ workers on a real Redis, SIGKILLed while the plans are revised and approved -----------
@pytest.mark.redis
@pytest.mark.slow
def test_plans_on_rq_with_workers_killed_while_revised_and_approved(tmp_path: Path) -> None:
    """Two 8-item plans on three `statesaga worker` processes (one SIGKILLed every 1-2 s and
    replaced) and `statesaga recover --every 1`: one is revised and approved mid-flight and
    completes, the other is rejected and unwinds. Every call of an item carries its one
    idempotency key; the payment runs only with the args it was approved for; nothing of the
    rejected plan is left applied."""
    from plan_cluster import PlanCluster, chaos_plan, one_key_per_item

    c = PlanCluster(tmp_path)
    env = {k: v for k, v in c.env.items() if k.startswith("STATESAGA_")}
    plan = tmp_path / "trip.yaml"
    plan.write_text(json.dumps(chaos_plan(trip())), encoding="utf-8")  # JSON is YAML
    try:
        ids = []
        for session in ("alice", "bob"):
            run = cli("plan", "run", str(plan), "--session", session, cwd=tmp_path, env=env)
            assert run.returncode == 0, run.stderr
            ids.append(started(run))
        kept, rejected = ids
        wf = c.wait_for(kept, lambda w: open_requests(w), "no approval request")
        patch = tmp_path / "patch.yaml"
        patch.write_text(
            "base_version: 1\nreplace:\n  - id: payment\n    tool: pay\n"
            "    depends_on: [flight, hotel, car, note]\n"
            "    args: {amount: 91000, currency: EUR, reference: trip-alice}\n"
            "remove: [note]\n"
            "add:\n  - id: itinerary2\n    tool: write_note\n    depends_on: [payment]\n"
            "    args: {title: Lisbon, text: Plaza}\n",
            encoding="utf-8",
        )
        # `note` has run: refused, naming it and its state; nothing changes.
        refused = cli("plan", "revise", kept, str(patch), "--by", "agent", cwd=tmp_path, env=env)
        assert refused.returncode == 1, refused.stdout
        assert "remove 'note': the item is COMPLETED" in refused.stderr
        patch.write_text(
            patch.read_text(encoding="utf-8").replace("remove: [note]", "remove: [confirm]"),
            encoding="utf-8",
        )
        revised = cli("plan", "revise", kept, str(patch), "--by", "agent", cwd=tmp_path, env=env)
        assert revised.returncode == 0, revised.stderr
        old_hash = open_requests(wf)[0].hash
        stale = cli("approve", kept, "payment", "--hash", old_hash, "--by", "bob", cwd=tmp_path,
                    env=env)  # fmt: skip
        assert stale.returncode == 1 and "does not match" in stale.stderr
        new_hash = open_requests(c.store.get(kept))[0].hash
        ok = cli("approve", kept, "payment", "--hash", new_hash, "--by", "bob", cwd=tmp_path,
                 env=env)  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        dup = cli("approve", kept, "payment", "--hash", new_hash, "--by", "eve", cwd=tmp_path,
                  env=env)  # fmt: skip
        assert dup.returncode == 1 and "already approved by bob" in dup.stderr
        c.wait_for(rejected, lambda w: open_requests(w), "no approval request (rejected plan)")
        no = cli("reject", rejected, "payment", "--by", "carol", cwd=tmp_path, env=env)
        assert no.returncode == 0, no.stderr
        done = c.wait_for(kept, lambda w: w.status is WorkflowStatus.COMPLETED, "not completed")
        undone = c.wait_for(rejected, lambda w: w.status is WorkflowStatus.COMPENSATED,
                            "did not unwind")  # fmt: skip
    finally:
        c.close()
    assert c.kills, "no worker was killed"
    print(f"{c.kills} workers SIGKILLed")
    entries = c.ledger()
    mine = [e for e in entries if e["workflow"] == kept]
    keys = one_key_per_item(mine)
    assert all(len(k) == 1 for k in keys.values()), keys
    applied = {e["step"] for e in mine if e["event"] == "apply"}
    assert applied == {"flight", "car", "note", "payment", "itinerary", "itinerary2"}
    assert "confirm" not in {e["step"] for e in mine}  # removed: never ran
    assert {e["args"]["amount"] for e in mine if e["step"] == "payment"} == {91000}
    assert not [e for e in mine if e["event"] == "undo"]
    assert done.plan is not None and done.plan.current.number == 2
    # The rejected plan: nothing paid, every booking undone.
    theirs = [e for e in entries if e["workflow"] == rejected]
    assert not [e for e in theirs if e["step"] in ("payment", "confirm", "itinerary")]
    live = {e["step"] for e in theirs if e["event"] == "apply"}
    gone = {e["step"] for e in theirs if e["event"] == "undo"}
    assert live == gone == {"flight", "car", "note"}
    assert undone.step("payment.approval").error.type == "ApprovalRejected"  # type: ignore[union-attr]


# -- the HTTP API ---------------------------------------------------------------------------
def test_plans_over_the_http_api(tmp_path: Path, sqlite_url: str, tools_ledger: Path) -> None:
    pytest.importorskip("starlette", reason="the API needs the ui extra")
    import warnings

    import yaml

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    from statesaga.web import ServeSettings, create_app

    token = "plan-token-5512"
    auth = {"Authorization": f"Bearer {token}"}
    settings = ServeSettings(store=sqlite_url, queue="inline://", handlers=(TOOLS,), token=token)
    plan = yaml.safe_load(TRIP.read_text(encoding="utf-8"))
    with TestClient(create_app(settings)) as c:
        listed = c.get("/api/tools?format=anthropic").json()
        assert "pay" in {t["name"] for t in listed} and "input_schema" in listed[0]
        assert c.post("/api/plans", json={"plan": plan, "by": "agent"}).status_code == 401
        bad = {**plan, "items": [{**plan["items"][0], "tool": "teleport"}]}
        refused = c.post("/api/plans", json={"plan": bad, "by": "agent"}, headers=auth)
        assert refused.status_code == 400
        assert "[items.0.tool] item 'search': unknown tool 'teleport'" in refused.json()["error"]
        started = c.post(
            "/api/plans", json={"plan": plan, "by": "agent", "session_id": "alice"}, headers=auth
        )
        assert started.status_code == 201, started.text
        wf_id = started.json()["id"]

        def poll(cond: Any) -> dict[str, Any]:
            end = time.monotonic() + 30
            while time.monotonic() < end:
                view = c.get(f"/api/plans/{wf_id}").json()
                if cond(view):
                    return view
                time.sleep(0.05)
            pytest.fail(f"timed out: {view}")

        view = poll(lambda v: v["approvals"])
        old = view["approvals"][0]["hash"]
        payment = {
            "id": "payment",
            "tool": "pay",
            "depends_on": ["flight", "hotel", "car", "note"],
            "args": {"amount": 700, "currency": "EUR", "reference": "r"},
        }
        patch = {"replace": [payment]}
        revised = c.post(f"/api/plans/{wf_id}/revise", json={"patch": patch, "by": "agent"},
                         headers=auth)  # fmt: skip
        assert revised.status_code == 202 and revised.json()["version"] == 2
        stale = c.post(f"/api/plans/{wf_id}/approve/payment", json={"hash": old, "by": "bob"},
                       headers=auth)  # fmt: skip
        assert stale.status_code == 409 and "does not match" in stale.json()["error"]
        new = revised.json()["approvals"][0]["hash"]
        # The dashboard's approval card shows the exact call and approves that hash.
        assert c.post("/login", data={"user": "bob", "token": token}).status_code in (200, 303)
        page = c.get(f"/workflows/{wf_id}").text
        assert 'id="approve-payment"' in page and '"amount": 700' in page
        assert f'name="hash" value="{new}"' in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        ok = c.post(
            f"/workflows/{wf_id}/approve/payment",
            data={"csrf": csrf, "hash": new, "answer": "approve"},
            follow_redirects=False,
        )
        assert ok.status_code == 303, ok.text
        done = poll(lambda v: v["status"] == "COMPLETED")
        assert [v["changes"] for v in done["versions"]] == [[], ["replaced payment"]]
    paid = [e for e in ledger(tools_ledger) if e["step"] == "payment"]
    assert [e["args"]["amount"] for e in paid] == [700]


def test_the_scripted_agent_example_plans_revises_and_finishes(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "statesaga.examples.agent_planner", "--db", str(tmp_path / "a.db")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "the Grand is full: revising the rest of the plan" in out.stdout
    assert re.search(r"approval needed: pay \{\"amount\": 91000", out.stdout)
    assert re.search(r"WF-\S+: COMPLETED after 2 plan versions", out.stdout)


@pytest.mark.slow
def test_plan_diagrams_of_a_version_and_of_the_running_plan(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    subprocess.run([sys.executable, "-m", "statesaga.examples.agent_planner", "--db", str(db)],
                   capture_output=True, timeout=120, cwd=tmp_path, check=True)  # fmt: skip
    url = f"sqlite:///{db}"
    wf_id = cli("list", "--store", url, cwd=tmp_path).stdout.split()[0]
    v1 = cli("plan", "diagram", wf_id, "--version", "1", "--tools", TOOLS, "--store", url,
             "--format", "dot", cwd=tmp_path)  # fmt: skip
    now = cli("plan", "diagram", wf_id, "--tools", TOOLS, "--store", url, "--format", "dot",
              cwd=tmp_path)  # fmt: skip
    assert v1.returncode == 0 and now.returncode == 0, v1.stderr + now.stderr
    assert "(plan v1)" in v1.stdout and "hotel2" not in v1.stdout
    assert "(plan v2)" in now.stdout and "added in v2" in now.stdout
    assert "replaced in v2" in now.stdout
    # The approval of the payment waits for the new hotel, not the full one.
    assert re.search(r'"hotel2" -> "payment.approval"', now.stdout)
    assert not re.search(r'"hotel" -> "payment.approval"', now.stdout)
    svg = subprocess.run(["dot", "-Tsvg"], input=now.stdout, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert svg.stdout.lstrip().startswith(("<?xml", "<svg"))


# -- the simulation -----------------------------------------------------------------------------
@pytest.mark.slow
def test_the_plan_simulation_holds_its_invariants() -> None:
    from statesaga.verify.plansim import run_plan_seeds

    summary = run_plan_seeds(range(40))
    assert summary.ok, summary.failed[0].report()
    assert summary.revisions > 0 and summary.approvals > 0
    assert {"COMPLETED", "COMPENSATED"} <= set(summary.outcomes)


@pytest.mark.slow
def test_the_plan_simulation_catches_a_revision_of_a_started_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A defect planted in the revision rule (started items may change) is found."""
    from statesaga.plans import revise as revise_module
    from statesaga.verify.plansim import run_plan_seeds

    monkeypatch.setattr(revise_module, "revisable", lambda wf, item: None)
    summary = run_plan_seeds(range(60))
    assert not summary.ok
    assert "VIOLATION" in summary.failed[0].report()


def test_plan_simulate_replays_a_seed(tmp_path: Path) -> None:
    a = cli("plan", "simulate", "--seed", "7", cwd=tmp_path)
    b = cli("plan", "simulate", "--seed", "7", cwd=tmp_path)
    assert a.returncode == 0, a.stdout[-2000:]
    assert a.stdout == b.stdout and "every invariant held" in a.stdout


def test_model_tool_calls_become_plan_items(engine: Engine) -> None:
    """OpenAI Chat Completions, Responses API and Pydantic AI shapes: the same items."""
    from dataclasses import dataclass as _dc

    from statesaga.plans import items_from_tool_calls

    @_dc
    class ToolCallPart:  # the fields Pydantic AI's part has
        tool_name: str
        args: Any
        tool_call_id: str

    args = {"hotel": "Plaza", "nights": 2}
    shapes = [
        {"id": "call_1", "type": "function",
         "function": {"name": "book_hotel", "arguments": json.dumps(args)}},
        {"type": "function_call", "call_id": "call_1", "name": "book_hotel",
         "arguments": json.dumps(args)},
        {"tool_name": "book_hotel", "args": args, "tool_call_id": "call_1"},
        ToolCallPart("book_hotel", json.dumps(args), "call_1"),
    ]  # fmt: skip
    for shape in shapes:
        assert items_from_tool_calls([shape], depends_on=["search"]) == [
            {"id": "call_1", "tool": "book_hotel", "args": args, "depends_on": ["search"]}
        ]
    bad = items_from_tool_calls([{"tool_name": "book_hotel", "args": {"hotel": "X"},
                                  "tool_call_id": "c.2"}])  # fmt: skip
    with pytest.raises(DefinitionError, match=r"items.0.args.nights\] item 'c_2'"):
        compile_for(engine, {"plan": "p", "items": bad})
