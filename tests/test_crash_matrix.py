"""The crash matrix on the example trip saga: a real worker process SIGKILLed at every job
boundary in turn, then recovery and a fresh worker; every run must converge with each side
effect applied at most once net of its compensation. On RQ + real Redis (the production
shape) and on the embedded default (inline queue + a shared SQLite file)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from statesaga.definitions.load import load_definition
from statesaga.models import WorkflowState, WorkflowStatus
from statesaga.verify.crashcheck import (
    BOUNDARIES,
    CellResult,
    Ledger,
    LedgerRecord,
    Scenario,
    check_crashes,
    check_ledger,
    format_table,
    trip_scenarios,
)

#: What each boundary must produce on the trip saga (success) and its failing variant.
EXPECTED_CELLS = {
    "trip": {"before_action": 5, "after_action": 5, "after_save": 4},
    "trip-fails": {
        "before_action": 3,
        "after_action": 3,
        "after_save": 4,
        "before_compensation": 2,
        "after_compensation": 2,
    },
}
EXPECTED_FINAL = {"trip": "COMPLETED", "trip-fails": "COMPENSATED"}


def assert_all_green(results: list[CellResult], capsys: pytest.CaptureFixture[str]) -> None:
    table = format_table(results)
    with capsys.disabled():
        print("\n" + table)
    assert all(r.ok for r in results), table
    cells: dict[str, dict[str, int]] = {}
    for r in results:
        if r.event is not None:
            assert r.killed, table
            per = cells.setdefault(r.scenario, {})
            per[r.event.boundary] = per.get(r.event.boundary, 0) + 1
    assert cells == {name: EXPECTED_CELLS[name] for name in cells}, table
    final = {r.scenario: r.status for r in results}
    assert final == {name: EXPECTED_FINAL[name] for name in final}


@pytest.mark.redis
@pytest.mark.slow
def test_crash_matrix_on_rq_with_real_redis(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rq_url = "rq://" + redis_url.split("://", 1)[1]
    results = check_crashes(trip_scenarios(), queue=rq_url, workdir=tmp_path)
    assert_all_green(results, capsys)


@pytest.mark.slow
def test_crash_matrix_on_the_embedded_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The failing variant passes every kind of boundary (forward and compensation); the RQ
    # test above runs both variants. Keeps this file's run time reasonable.
    results = check_crashes(trip_scenarios()[1:], queue="inline://", workdir=tmp_path)
    assert_all_green(results, capsys)
    assert {b for r in results if r.event for b in [r.event.boundary]} == set(BOUNDARIES)


def _wf(status: WorkflowStatus) -> WorkflowState:
    wf = load_definition(trip_scenarios()[0].definition).instantiate({})
    wf.status = status
    return wf


def _rec(op: str, wf_id: str, step: str, ref: str, fresh: bool = True) -> LedgerRecord:
    return LedgerRecord(op, wf_id, step, f"{wf_id}:{step}:1", ref, fresh, 1)  # type: ignore[arg-type]


def test_the_ledger_check_catches_double_and_leftover_effects() -> None:
    done = _wf(WorkflowStatus.COMPLETED)
    undone = _wf(WorkflowStatus.COMPENSATED)
    ok = [_rec("apply", done.id, "reserve_flight", "FL-1")]
    assert check_ledger(ok, [done]) == []

    twice = [*ok, _rec("apply", done.id, "reserve_flight", "FL-2")]
    assert any("applied 2 times" in p for p in check_ledger(twice, [done]))

    left = [_rec("apply", undone.id, "reserve_hotel", "HT-1")]
    assert check_ledger(left, [undone]) == [
        "reserve_hotel: still applied on a COMPENSATED workflow"
    ]
    stray = [_rec("undo", undone.id, "reserve_hotel", "HT-9")]
    assert any("never applied" in p for p in check_ledger(stray, [undone]))


@pytest.mark.slow
def test_attempt_scoped_keys_show_a_lost_attempt_applied_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Why the example service keys operations by workflow and step: the attempt-scoped
    idempotency key of a re-run lost attempt is new, so a service keyed by it books twice."""
    results = check_crashes(
        trip_scenarios()[:1],
        workdir=tmp_path,
        boundaries=["after_action"],
        ledger_scope="attempt",
    )
    crashed = [r for r in results if r.event is not None and r.event.n == 1]
    assert crashed == [results[1]]
    [cell] = crashed
    assert cell.status == "COMPLETED"
    assert any("reserve_flight: applied 2 times" in p for p in cell.problems)
    ledger = Ledger(tmp_path / "trip-after_action-1" / "ledger.jsonl", scope="attempt")
    keys = [r.key for r in ledger.records() if r.step == "reserve_flight"]
    assert [k.rsplit(":", 1)[1] for k in keys] == ["1", "2"]


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TRIP = {"origin": "CDG", "destination": "LIS", "nights": 3, "amount": 640, "email": "a@b.org"}
TIGHT = str(Path(__file__).parent / "sagas" / "trip_tight.yaml")


@pytest.mark.slow
def test_an_expected_failed_outcome_passes_and_an_unstated_one_says_how_to_state_it(
    tmp_path: Path,
) -> None:
    """A failure after the pivot: FAILED (halted, nothing undone) is the correct outcome."""
    trip = trip_scenarios()[0]
    past_pivot = dict(TRIP, fail_at="send_confirmation")
    stated = Scenario("stated", trip.definition, past_pivot, trip.handlers, expect="FAILED")
    results = check_crashes(
        [stated], workdir=tmp_path / "stated", boundaries=("after_action",), parallel=2
    )
    assert all(r.ok for r in results), format_table(results)
    assert {r.status for r in results} == {"FAILED"}
    assert len(results) > 1
    unstated = Scenario("unstated", trip.definition, past_pivot, trip.handlers)
    [clean] = check_crashes([unstated], workdir=tmp_path / "unstated", boundaries=())
    assert not clean.ok
    assert "say so: --expect FAILED" in clean.problems[0]
    with pytest.raises(ValueError, match="cannot expect RUNNING"):
        Scenario("bad", trip.definition, expect="RUNNING")


@pytest.mark.slow
def test_a_lost_attempt_that_cost_the_last_retry_is_reported_as_correct(tmp_path: Path) -> None:
    flaky = Scenario("tight", TIGHT, dict(TRIP, flaky="reserve_hotel"), expect="COMPLETED")
    results = check_crashes([flaky], workdir=tmp_path, boundaries=("after_action",), parallel=2)
    table = format_table(results)
    assert all(r.ok for r in results), table
    costly = [r for r in results if r.status != "COMPLETED"]
    assert costly, table  # killing reserve_hotel's second (last) attempt
    for r in costly:
        assert (
            r.status == "COMPENSATED" and r.note == "a lost attempt of reserve_hotel cost a retry"
        )
        assert r.applies == r.undos  # what the lost attempt applied was undone by its key
    assert "ok (a lost attempt of reserve_hotel cost a retry)" in table


@pytest.mark.slow
def test_a_claimed_pivot_is_no_reason_to_halt_and_a_lost_one_halts_as_documented(
    tmp_path: Path,
) -> None:
    """Issue 28, the trip failing at its pivot: a worker killed right after the save that
    settles reserve_car (which holds the pivot) leaves a pivot never started, so the saga
    unwinds as the clean run does; one killed around the pivot's call (its claim was the last
    write) may have charged, so the retry's failure halts FAILED, which is the README's
    promise, and the checker says so rather than failing the cell."""
    trip = trip_scenarios()[0]
    at_pivot = Scenario("pivot", trip.definition, dict(TRIP, fail_at="charge_payment"))
    results = check_crashes(
        [at_pivot],
        workdir=tmp_path,
        boundaries=("before_action", "after_action", "after_save"),
        parallel=2,
    )
    table = format_table(results)
    assert all(r.ok for r in results), table
    by_cell = {(r.event.boundary, r.event.label): r for r in results if r.event}
    held = by_cell["after_save", "reserve_car#1"]
    assert held.status == "COMPENSATED" and held.note is None, table
    for boundary in ("before_action", "after_action"):
        lost = by_cell[boundary, "charge_payment#1"]
        assert lost.status == "FAILED", table
        assert lost.note == "a lost attempt of the pivot charge_payment may have applied: halted"
    assert {r.status for r in results} == {"COMPENSATED", "FAILED"}


APPROVAL = {"employee": "bob", "amount": 120}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statesaga.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_an_approval_saga_is_checked_with_its_signal_and_its_timeout_fast_forwarded(
    tmp_path: Path,
) -> None:
    """The expense claim: input 1 gets the manager's approval whenever `approval` waits
    (the signal's own save is a boundary too) and completes; input 2 gets none, so its
    three-day timeout is fast-forwarded and the claim is withdrawn, also after a worker dies
    right after the save that scheduled the wait (its timer job died with it)."""
    out = _cli(
        "check-crashes", str(EXAMPLES / "expense.yaml"),
        "--handlers", "statesaga.examples.ledger_handlers",
        "--input", json.dumps(APPROVAL), "--input", json.dumps(APPROVAL),
        "--signal", '1:approval={"by": "alice"}', "--parallel", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    ends: dict[str, set[str]] = {}
    for line in out.stdout.splitlines()[2:-1]:
        end = re.search(r"\b(COMPLETED|COMPENSATED|FAILED|RUNNING)\b", line)
        assert end is not None, line
        ends.setdefault(line.split()[0], set()).add(end.group(1))
    assert ends == {"expense-1": {"COMPLETED"}, "expense-2": {"COMPENSATED"}}, out.stdout
    assert re.search(r"expense-1 +after_save +\d +approval#1 ", out.stdout)  # the signal's save
    assert re.search(r"expense-2 +after_save +1 +submit#1 +yes +COMPENSATED", out.stdout)
    assert out.stdout.rstrip().endswith("ok, 0 failed")


def test_check_crashes_refuses_a_signal_for_a_step_that_does_not_wait(tmp_path: Path) -> None:
    out = _cli(
        "check-crashes", str(EXAMPLES / "expense.yaml"), "--input", json.dumps(APPROVAL),
        "--signal", 'pay={"by": "alice"}', cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2 and out.stdout == ""
    assert "a signal for 'pay', which is not a wait step of expense_claim" in out.stderr
    assert "Traceback" not in out.stderr
    bad = _cli(
        "check-crashes", str(EXAMPLES / "expense.yaml"), "--signal", "3:approval={}",
        cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and "'3' is not an --input number (1 to 1)" in bad.stderr


@pytest.mark.redis
@pytest.mark.slow
def test_an_approval_saga_with_its_signal_on_rq_with_real_redis(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rq_url = "rq://" + redis_url.split("://", 1)[1]
    expense = Scenario(
        "expense",
        str(EXAMPLES / "expense.yaml"),
        APPROVAL,
        ("statesaga.examples.ledger_handlers",),
        signals={"approval": {"by": "alice"}},
    )
    results = check_crashes([expense], queue=rq_url, workdir=tmp_path, parallel=2)
    table = format_table(results)
    with capsys.disabled():
        print("\n" + table)
    assert all(r.ok for r in results), table
    assert {r.status for r in results} == {"COMPLETED"}
    assert any(r.event and r.event.label == "approval#1" for r in results), table


def test_expected_ends_are_stated_per_input_and_a_wrong_one_is_one_line(tmp_path: Path) -> None:
    trip = trip_scenarios()[0]
    either = Scenario("either", trip.definition, TRIP, expect="COMPENSATED, FAILED")
    assert either.expected == {"COMPENSATED", "FAILED"}
    assert Scenario("set", trip.definition, expect={"COMPLETED"}).expected == {"COMPLETED"}
    out = _cli(
        "check-crashes", str(EXAMPLES / "trip.yaml"), "--input", json.dumps(TRIP),
        "--input", json.dumps(TRIP), "--expect", "COMPLETED", "--expect", "COMPLETED,RUNNING",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2 and out.stdout == "", out.stdout
    [error] = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert error.startswith("Error: scenario 'trip-2': cannot expect RUNNING; expect one or")
    assert "Traceback" not in out.stderr
