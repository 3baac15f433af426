"""Approvals bound to the exact action: the hash of the item's current args, taken once, a
rejection or a timeout unwinding the plan in reverse dependency order; and the `payload:`
schema of a YAML saga's wait step, checked by `signal` before anything is stored."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from statesaga.app import EngineOptions
from statesaga.engine import Engine
from statesaga.errors import InputError, StateError
from statesaga.models import StepStatus, WorkflowStatus
from statesaga.plans import (
    approve,
    open_requests,
    reject,
    request_of,
    revise_plan,
    start_plan,
)

ROOT = Path(__file__).resolve().parents[1]
TOOLS = "statesaga.examples.agent_tools"

#: a -> b -> pay (approval) -> mail: two reversible items in a chain before the payment.
CHAIN = {
    "plan": "chain",
    "items": [
        {"id": "a", "tool": "book_flight", "args": {"flight": "SS1", "passenger": "A"}},
        {"id": "b", "tool": "rent_car", "args": {"city": "Lisbon", "days": 2}},
        {"id": "pay", "tool": "pay", "args": {"amount": 100, "currency": "EUR", "reference": "c"}},
        {"id": "mail", "tool": "send_email", "args": {"to": "a@b.c", "text": "done"}},
    ],
}


@pytest.fixture
def tools_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tools.jsonl"
    monkeypatch.setenv("STATESAGA_TOOLS_LEDGER", str(path))
    return path


def ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def engine(sqlite_url: str) -> Engine:
    return EngineOptions(sqlite_url, "inline://", handlers=[TOOLS], allow="listed").build()


def waiting(engine: Engine, plan: dict[str, Any] = CHAIN) -> str:
    wf, _ = start_plan(engine, plan, by="agent")
    wf = engine.wait(wf.id)
    assert [r.item for r in open_requests(wf)] == ["pay"]
    return wf.id


def test_a_hash_that_does_not_match_is_refused_and_changes_nothing(engine: Engine) -> None:
    wf_id = waiting(engine)
    before = engine.get(wf_id).revision
    with pytest.raises(StateError, match="does not match the current call of item 'pay'"):
        approve(engine, wf_id, "pay", "0" * 64, by="bob")
    with pytest.raises(StateError, match="names who gives it"):
        approve(engine, wf_id, "pay", request_of(engine.get(wf_id), "pay").hash, by=" ")
    assert engine.get(wf_id).revision == before


def test_an_approval_is_taken_once_and_the_tool_runs_once(
    engine: Engine, tools_ledger: Path
) -> None:
    wf_id = waiting(engine)
    request = request_of(engine.get(wf_id), "pay")
    approve(engine, wf_id, "pay", request.hash, by="bob", note="ok")
    with pytest.raises(StateError, match="already approved by bob"):
        approve(engine, wf_id, "pay", request.hash, by="eve")
    # Nor through the plain signal it is sent as: no step is left to take it.
    with pytest.raises(StateError, match="no step is left to take the signal 'approve:pay'"):
        engine.signal(wf_id, "approve:pay", {"hash": request.hash, "by": "eve"})
    wf = engine.wait(wf_id)
    assert wf.status is WorkflowStatus.COMPLETED
    assert wf.step("pay.approval").result == {"hash": request.hash, "by": "bob", "note": "ok"}
    paid = [e for e in ledger(tools_ledger) if e["step"] == "pay"]
    assert len(paid) == 1 and paid[0]["args"] == request.args


def test_a_plain_signal_must_carry_the_hash_too(engine: Engine) -> None:
    wf_id = waiting(engine)
    before = engine.get(wf_id).revision
    with pytest.raises(InputError) as info:
        engine.signal(wf_id, "approve:pay", {"by": "mallory", "hash": "f" * 64})
    assert "[hash] must be one of" in str(info.value)
    with pytest.raises(InputError, match=r"\[by\] missing required value"):
        engine.signal(wf_id, "approve:pay", {"hash": request_of(engine.get(wf_id), "pay").hash})
    assert engine.get(wf_id).revision == before


def test_no_approval_before_the_request_is_open(engine: Engine) -> None:
    slow = {**CHAIN, "items": [*CHAIN["items"][:2], {**CHAIN["items"][2], "depends_on": ["b"]}]}
    wf, _ = start_plan(engine, slow, by="agent")  # nothing drained: `b` has not run
    with pytest.raises(StateError, match="has no approval request open yet"):
        approve(engine, wf.id, "pay", request_of(engine.get(wf.id), "pay").hash, by="bob")
    with pytest.raises(StateError, match="item 'a' needs no approval"):
        approve(engine, wf.id, "a", "x", by="bob")


def test_a_rejection_unwinds_in_reverse_dependency_order(
    engine: Engine, tools_ledger: Path
) -> None:
    wf_id = waiting(engine)
    reject(engine, wf_id, "pay", by="carol", reason="too expensive")
    wf = engine.wait(wf_id)
    assert wf.status is WorkflowStatus.COMPENSATED
    gate = wf.step("pay.approval")
    assert gate.status is StepStatus.FAILED and gate.error is not None
    assert gate.error.type == "ApprovalRejected" and "rejected by carol: too expensive" in (
        gate.error.message
    )
    events = [(e["event"], e["step"]) for e in ledger(tools_ledger)]
    assert events == [("apply", "a"), ("apply", "b"), ("undo", "b"), ("undo", "a")]
    assert wf.step("pay").status is StepStatus.SKIPPED
    with pytest.raises(StateError, match="FAILED: pay: rejected by carol"):
        approve(engine, wf_id, "pay", "x", by="bob")


def test_an_unanswered_request_times_out_and_unwinds(engine: Engine, tools_ledger: Path) -> None:
    wf_id = waiting(engine, {**CHAIN, "approval_timeout": 0.3})
    wf = engine.wait(wf_id, timeout=20, until_signal=False)
    assert wf.status is WorkflowStatus.COMPENSATED
    assert wf.step("pay.approval").error.type == "WaitTimeout"  # type: ignore[union-attr]
    undone = Counter(e["step"] for e in ledger(tools_ledger) if e["event"] == "undo")
    assert undone == {"a": 1, "b": 1}


# -- HTTP-free command line: approve / reject, and a YAML wait step's payload schema -------------
def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statesaga.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=dict(os.environ),
        check=False,
    )


def test_reject_from_the_command_line(tmp_path: Path, sqlite_url: str) -> None:
    plan = tmp_path / "chain.json"
    plan.write_text(json.dumps(CHAIN), encoding="utf-8")
    run = cli("plan", "run", "chain.json", "--tools", TOOLS, "--store", sqlite_url, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    wf_id = re.search(r"(WF-\S+) started", run.stderr + run.stdout).group(1)  # type: ignore[union-attr]
    out = cli("reject", wf_id, "pay", "--by", "carol", "--reason", "no", "--tools", TOOLS,
              "--store", sqlite_url, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"{wf_id} COMPENSATED" in out.stdout


@pytest.mark.slow
def test_signal_checks_a_wait_steps_payload_schema_before_storing(
    tmp_path: Path, sqlite_url: str
) -> None:
    expense = str(ROOT / "examples" / "expense.yaml")
    run = cli("run", expense, "--input", '{"employee": "bob", "amount": 120}', "--store",
              sqlite_url, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    wf_id = re.search(r"(WF-\S+) step approval waits", run.stdout + run.stderr).group(1)  # type: ignore[union-attr]
    status = json.loads(cli("status", wf_id, "--json", "--store", sqlite_url, cwd=tmp_path).stdout)
    bad = cli("signal", wf_id, "approve", "--payload", '{"who": "alice"}', "--store", sqlite_url,
              "--handlers", "statesaga.examples.expense_handlers", cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2, bad.stdout
    assert "signal approve: [by] missing required value" in bad.stderr
    assert "[who] not a declared input" in bad.stderr
    assert "Traceback" not in bad.stderr
    after = json.loads(cli("status", wf_id, "--json", "--store", sqlite_url, cwd=tmp_path).stdout)
    assert after["revision"] == status["revision"] and not after["signals"]
    good = cli("signal", wf_id, "approve", "--payload", '{"by": "alice"}', "--store", sqlite_url,
               "--handlers", "statesaga.examples.expense_handlers", cwd=tmp_path)  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert f"{wf_id} COMPLETED" in good.stdout


def test_a_revision_that_adds_a_dependency_closes_the_request_until_it_ran(
    engine: Engine, tools_ledger: Path
) -> None:
    wf_id = waiting(engine)
    patch = {
        "add": [{"id": "c", "tool": "write_note", "args": {"title": "t"}, "depends_on": ["b"]}],
        "replace": [{**CHAIN["items"][2], "depends_on": ["c"]}],
    }
    revise_plan(engine, wf_id, patch, by="agent")
    wf = engine.get(wf_id)
    assert wf.step("pay.approval").status is StepStatus.PENDING  # `c` has not run yet
    with pytest.raises(StateError, match="has no approval request open yet"):
        approve(engine, wf_id, "pay", request_of(wf, "pay").hash, by="bob")
    wf = engine.wait(wf_id)
    approve(engine, wf_id, "pay", request_of(wf, "pay").hash, by="bob")
    assert engine.wait(wf_id).status is WorkflowStatus.COMPLETED
    order = [e["step"] for e in ledger(tools_ledger) if e["event"] == "apply"]
    assert order.index("c") < order.index("pay")


@pytest.mark.slow
def test_approve_on_the_inline_queue_needs_the_tools_first(tmp_path: Path, sqlite_url: str) -> None:
    """Without the tools module, approving would run the payment here and fail every attempt:
    refused before anything changes, naming what to pass."""
    (tmp_path / "my_tools.py").write_text(
        (ROOT / "examples" / "agent_tools.py").read_text(encoding="utf-8"), encoding="utf-8"
    )
    plan = tmp_path / "chain.json"
    plan.write_text(json.dumps(CHAIN), encoding="utf-8")
    run = cli("plan", "run", "chain.json", "--tools", "my_tools", "--store", sqlite_url,
              cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    wf_id = re.search(r"(WF-\S+) started", run.stderr + run.stdout).group(1)  # type: ignore[union-attr]
    shown = json.loads(cli("plan", "show", wf_id, "--json", "--store", sqlite_url,
                           cwd=tmp_path).stdout)  # fmt: skip
    hash_ = shown["approvals"][0]["hash"]
    bare = cli("approve", wf_id, "pay", "--hash", hash_, "--by", "bob", "--store", sqlite_url,
               cwd=tmp_path)  # fmt: skip
    assert bare.returncode == 2 and "--handlers my_tools" in bare.stderr, bare.stderr
    again = json.loads(cli("plan", "show", wf_id, "--json", "--store", sqlite_url,
                           cwd=tmp_path).stdout)  # fmt: skip
    assert again["approvals"] and again["status"] == "RUNNING"
    ok = cli("approve", wf_id, "pay", "--hash", hash_, "--by", "bob", "--tools", "my_tools",
             "--store", sqlite_url, cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0 and f"{wf_id} COMPLETED" in ok.stdout, ok.stderr


def test_past_the_approved_payment_a_failure_halts_and_names_only_real_effects(
    engine: Engine,
) -> None:
    """A read-only item has no effect: never listed among the effects that may remain."""
    plan = {
        "plan": "halts",
        "retry": {"max_attempts": 1},
        "items": [
            {"id": "look", "tool": "search_flights",
             "args": {"origin": "BER", "destination": "LIS", "date": "2026-05-01"}},
            CHAIN["items"][0],
            CHAIN["items"][2],
            {"id": "car", "tool": "rent_car", "args": {"city": "X", "days": 1, "fail": True}},
        ],
    }  # fmt: skip
    wf_id = waiting(engine, plan)
    approve(engine, wf_id, "pay", request_of(engine.get(wf_id), "pay").hash, by="bob")
    wf = engine.wait(wf_id)
    assert wf.status is WorkflowStatus.FAILED
    assert wf.reason is not None and "effects that may remain: a, pay." in wf.reason
    assert "look" not in wf.reason
