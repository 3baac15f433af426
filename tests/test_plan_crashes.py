"""`check-crashes --plan`: an agent's plan (examples/plans/trip.yaml) run by a worker process
SIGKILLed at every job boundary in turn, revised mid-flight and its payment approved (or
rejected) in every run, each run judged by the saga's checks and the plan's invariants."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from statesaga.app import EngineOptions
from statesaga.verify.crashcheck import Scenario, check_crashes, format_table
from statesaga.verify.crashcheck.plans import PLAN_RECORD, PlanRun, check_plan, read_record

ROOT = Path(__file__).resolve().parents[1]
TRIP = ROOT / "examples" / "plans" / "trip.yaml"
TOOLS = "statesaga.examples.agent_tools"
#: Replaces the payment's args (its approval request changes), removes an item that has not
#: started and adds one after the payment.
PATCH = """\
base_version: 1
replace:
  - id: payment
    tool: pay
    depends_on: [flight, hotel, car, note]
    args: {amount: 91000, currency: EUR, reference: trip-alice}
remove: [confirm]
add:
  - id: itinerary2
    tool: write_note
    depends_on: [payment]
    args: {title: Lisbon, text: Plaza}
"""


@pytest.fixture
def patch(tmp_path: Path) -> Path:
    path = tmp_path / "patch.yaml"
    path.write_text(PATCH, encoding="utf-8")
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESAGA_")}
    return subprocess.run(
        [sys.executable, "-m", "statesaga.cli", "check-crashes", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
        check=False,
    )


def rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.splitlines()[2:-1]]


@pytest.mark.slow
def test_check_crashes_runs_a_plan_revised_and_approved_at_every_boundary(
    tmp_path: Path, patch: Path
) -> None:
    run = cli("--plan", str(TRIP), "--tools", TOOLS, "--revise", str(patch), "--revise-after",
              "search", cwd=tmp_path)  # fmt: skip
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    table = rows(run.stdout)
    jobs = [r[3] for r in table if r[1] != "(no"]
    # Every item's call is killed before and after it ran; the revision's save and the
    # approval's save are crash points too.
    items = ["search", "flight", "hotel", "car", "note", "payment", "itinerary", "itinerary2"]
    assert sorted(j for j in jobs if j.endswith("#1") and "." not in j) == sorted(
        [f"{i}#1" for i in items] * 2 + ["search#1", "note#1", "payment#1"]
    )
    assert "revise#2" in jobs and "payment.approval#1" in jobs
    assert "confirm#1" not in jobs  # removed by the revision: never ran
    assert all("COMPLETED" in r and r[-1] == "ok" for r in table), run.stdout
    assert run.stdout.splitlines()[-1] == f"{len(table)} runs: {len(table)} ok, 0 failed"


@pytest.mark.slow
def test_a_rejected_plan_unwinds_at_every_undo_boundary(tmp_path: Path, patch: Path) -> None:
    """The patch waits for the approval request (no --revise-after), then the request is
    rejected: every booking is undone, with the worker killed around each undo."""
    scenario = Scenario("trip", str(TRIP), handlers=(TOOLS,), plan=PlanRun(str(patch), reject=True))
    results = check_crashes(
        [scenario],
        workdir=tmp_path,
        boundaries=("before_compensation", "after_compensation"),
        parallel=2,
    )
    table = format_table(results)
    print(table)
    assert all(r.ok for r in results), table
    assert {r.status for r in results} == {"COMPENSATED"}
    undone = sorted(r.event.step for r in results if r.event is not None)
    assert undone == sorted(["flight", "hotel", "car", "note"] * 2), table
    assert all((r.applies, r.undos) == (5, 4) for r in results), table


def test_a_revision_the_engine_refuses_fails_the_check(tmp_path: Path, patch: Path) -> None:
    """Revised only once the payment ran, the patch is refused (the payment is COMPLETED):
    the check says so instead of passing a plan that was never revised."""
    scenario = Scenario(
        "late", str(TRIP), handlers=(TOOLS,), plan=PlanRun(str(patch), revise_after="payment")
    )
    [clean] = check_crashes([scenario], workdir=tmp_path, boundaries=())
    assert not clean.ok
    assert any("revision refused" in p and "'payment': the item is COMPLETED" in p
               for p in clean.problems), clean.problems  # fmt: skip


def test_the_plan_checks_catch_what_they_promise(tmp_path: Path, patch: Path) -> None:
    """The checks over one real run's record, each broken in one way."""
    scenario = Scenario(
        "trip", str(TRIP), handlers=(TOOLS,), plan=PlanRun(str(patch), revise_after="search")
    )
    [clean] = check_crashes([scenario], workdir=tmp_path, boundaries=())
    assert clean.ok, clean.problems
    [celldir] = [p for p in tmp_path.iterdir() if p.is_dir()]
    records = read_record(celldir / PLAN_RECORD)
    store = EngineOptions(f"sqlite:///{celldir / 'store.db'}", "inline://").build().store
    [wf] = store.list()
    run = scenario.plan
    assert run is not None
    assert check_plan(records, wf, run) == []

    def broken(change: Any) -> list[str]:
        copy = [dict(r) for r in records]
        change(copy)
        return check_plan(copy, wf, run)

    payment = next(i for i, r in enumerate(records) if r["step"] == "payment")

    def removed_ran(rs: list[dict[str, Any]]) -> None:
        rs.append({**rs[0], "step": "confirm", "key": f"{wf.id}:confirm"})

    def old_args(rs: list[dict[str, Any]]) -> None:
        rs[payment]["args"] = {**rs[payment]["args"], "amount": 98000}

    def unapproved(rs: list[dict[str, Any]]) -> None:
        rs[payment]["gate"] = "WAITING"

    def other_key(rs: list[dict[str, Any]]) -> None:
        rs.append({**rs[payment], "key": "another"})

    def out_of_order(rs: list[dict[str, Any]]) -> None:
        base = {"workflow": wf.id, "op": "undo", "args": {}}
        rs += [{**base, "step": "search", "key": "s"}, {**base, "step": "flight", "key": "f"}]

    assert broken(removed_ran) == ["confirm: removed from the plan, but it ran"]
    [wrong] = broken(old_args)
    assert wrong.startswith("payment: ran with {'amount': 98000") and "91000" in wrong
    assert broken(unapproved) == ["payment: ran without its approval (WAITING)"]
    assert broken(other_key) == ["payment: called with 2 idempotency keys"]
    assert "search: undone before flight, which depends on it" in broken(out_of_order)
    taken = [h for h in wf.history if h.step == "payment.approval" and h.dest == "COMPLETED"]
    twice = wf.model_copy(update={"history": [*wf.history, *taken]})
    assert check_plan(records, twice, run) == ["payment.approval: approved 2 times"]
    assert wf.plan is not None
    unrevised = wf.plan.model_copy(update={"versions": wf.plan.versions[:1]})
    first_only = wf.model_copy(update={"plan": unrevised})
    assert "the plan was never revised" in check_plan(records, first_only, run)


def test_check_crashes_refuses_a_plan_it_cannot_run(tmp_path: Path, patch: Path) -> None:
    cases = {
        ("--plan", str(TRIP), "--revise", str(patch)): "needs its tools: give --tools MODULE",
        ("--plan", str(TRIP), "--tools", TOOLS, "--revise", str(patch), "--revise-after", "nope"):
            "--revise-after 'nope': the plan has no such item (items: search, flight",
        ("--tools", TOOLS, "--revise", str(patch), str(ROOT / "examples" / "trip.yaml")):
            "--revise goes with --plan PLAN",
        ("--plan", str(TRIP), "--tools", TOOLS, "--input", "{}"): "a plan takes no --input",
        ("--tools", TOOLS): "give a saga DEFINITION or --plan PLAN",
        ("--plan", str(TRIP), "--tools", TOOLS, "--revise-after", "car"):
            "--revise-after goes with --revise PATCH",
    }  # fmt: skip
    for args, message in cases.items():
        run = cli(*args, cwd=tmp_path)
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        assert message in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(TRIP.read_text(encoding="utf-8").replace("tool: pay", "tool: wire"), "utf-8")
    run = cli("--plan", str(bad), "--tools", TOOLS, cwd=tmp_path)
    assert run.returncode != 0 and "unknown tool 'wire'" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
