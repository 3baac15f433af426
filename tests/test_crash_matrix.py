"""The crash matrix on the example trip saga: a real worker process SIGKILLed at every job
boundary in turn, then recovery and a fresh worker; every run must converge with each side
effect applied at most once net of its compensation. On RQ + real Redis (the production
shape) and on the embedded default (inline queue + a shared SQLite file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from statesaga.definition import load_definition
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
    with pytest.raises(ValueError, match="cannot expect 'RUNNING'"):
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
