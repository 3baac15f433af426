"""Signals and approvals: a wait step completes with the payload of its signal, whether the
signal comes after the step waits or before (kept in the inbox); a wait's timeout either unwinds
the saga or continues with a default; a signal nobody can take is an error that changes nothing.
Also the README's flow on real processes: `statesaga run` parks at the approval, `statesaga
signal` finishes it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from statesaga import StepStatus, WorkflowStatus
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.definitions.load import WorkflowDefinition, load_definition
from statesaga.engine import Engine, waiting_for_signal
from statesaga.errors import DefinitionError, StateError

EXAMPLES = Path(__file__).parent.parent / "examples"
CLAIM = {"employee": "bob", "amount": 120}


def expense(**approval: Any) -> WorkflowDefinition:
    """examples/expense.yaml with the approval step's wait options replaced."""
    import yaml

    data = yaml.safe_load((EXAMPLES / "expense.yaml").read_text(encoding="utf-8"))
    step = next(s for s in data["steps"] if s["name"] == "approval")
    step.pop("timeout")
    step.update(approval)
    return load_definition(data)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(SQLiteStore(tmp_path / "signals.db"), InlineQueue(), heartbeat_interval=0)


def test_an_approval_after_the_wait_completes_the_step_and_the_saga(engine: Engine) -> None:
    d = load_definition(EXAMPLES / "expense.yaml")
    parked = engine.run(d, CLAIM)
    assert parked.status is WorkflowStatus.RUNNING
    assert parked.step("approval").status is StepStatus.WAITING
    assert parked.step("pay").status is StepStatus.PENDING
    assert waiting_for_signal(parked)
    # The three-day timeout is persisted on the step: a durable timer.
    assert parked.step("approval").next_attempt_at is not None

    engine.signal(parked.id, "approve", {"by": "alice"}, by="alice")
    done = engine.wait(parked.id)
    assert done.status is WorkflowStatus.COMPLETED
    assert done.results["approval"] == {"by": "alice"}
    assert done.results["pay"]["approved_by"] == "alice"
    assert done.signals == {}
    sent = [h for h in done.history if h.trigger == "signal" and h.step is None]
    assert len(sent) == 1 and sent[0].by == "alice"
    assert sent[0].detail == 'approve {"by": "alice"}'
    taken = [h for h in done.history if h.trigger == "signal" and h.step == "approval"]
    assert [(h.source, h.dest) for h in taken] == [("WAITING", "COMPLETED")]


def test_an_approval_before_the_wait_is_kept_and_taken_when_the_step_waits(
    engine: Engine,
) -> None:
    d = load_definition(EXAMPLES / "expense.yaml")
    started = engine.start(d, CLAIM)  # inline: `submit` is queued, not run yet
    assert started.step("approval").status is StepStatus.PENDING
    kept = engine.signal(started.id, "approve", {"by": "carol"}, by="carol")
    assert kept.signals == {"approve": [{"by": "carol"}]}
    assert kept.step("approval").status is StepStatus.PENDING

    done = engine.wait(started.id)
    assert done.status is WorkflowStatus.COMPLETED
    assert done.results["approval"] == {"by": "carol"}
    assert done.signals == {}
    path = [(h.trigger, h.dest) for h in done.history if h.step == "approval"]
    assert path == [("schedule", "WAITING"), ("signal", "COMPLETED")]


def test_a_wait_timeout_fails_the_step_and_compensates(engine: Engine) -> None:
    d = expense(timeout=0.05, on_timeout="fail")
    wf = engine.start(d, CLAIM)
    done = engine.wait(wf.id, until_signal=False)  # inline runs the timer in-process
    assert done.status is WorkflowStatus.COMPENSATED
    approval = done.step("approval")
    assert approval.status is StepStatus.FAILED
    assert approval.error is not None and approval.error.type == "WaitTimeout"
    submit = done.step("submit")
    assert submit.status is StepStatus.COMPENSATED
    assert submit.compensation is not None
    assert submit.compensation.result == {"withdrawn": submit.result["claim"]}
    assert done.step("pay").status is StepStatus.SKIPPED
    assert done.step("pay").attempts == 0


def test_a_wait_timeout_can_continue_with_a_default(engine: Engine) -> None:
    d = expense(timeout=0.05, on_timeout="continue", default={"by": "auto-approval"})
    wf = engine.start(d, CLAIM)
    done = engine.wait(wf.id, until_signal=False)
    assert done.status is WorkflowStatus.COMPLETED
    assert done.results["approval"] == {"by": "auto-approval"}
    assert done.results["pay"]["approved_by"] == "auto-approval"
    timed_out = [h for h in done.history if h.step == "approval" and h.trigger == "wait_timeout"]
    assert [h.dest for h in timed_out] == ["COMPLETED"]


def test_a_signal_nobody_can_take_is_an_error_and_changes_nothing(engine: Engine) -> None:
    d = load_definition(EXAMPLES / "expense.yaml")
    parked = engine.run(d, CLAIM)
    with pytest.raises(StateError, match="no step waits for the signal 'reject'.*approve"):
        engine.signal(parked.id, "reject", {"by": "mallory"})
    assert engine.get(parked.id).revision == parked.revision

    engine.signal(parked.id, "approve", {"by": "alice"})
    done = engine.wait(parked.id)
    assert done.status is WorkflowStatus.COMPLETED
    with pytest.raises(StateError, match="already COMPLETED; it takes no signals"):
        engine.signal(done.id, "approve", {"by": "alice"})
    after = engine.get(done.id)
    assert after.revision == done.revision and after.signals == {}


def test_a_second_signal_for_a_single_wait_is_refused(engine: Engine) -> None:
    d = load_definition(EXAMPLES / "expense.yaml")
    started = engine.start(d, CLAIM)
    engine.signal(started.id, "approve", {"by": "a"})
    with pytest.raises(StateError, match="no step is left to take the signal 'approve'"):
        engine.signal(started.id, "approve", {"by": "b"})
    assert engine.get(started.id).signals == {"approve": [{"by": "a"}]}


def test_a_wait_step_is_checked_when_the_definition_is_loaded() -> None:
    base = {"workflow": "w", "handlers": [], "steps": []}
    with pytest.raises(DefinitionError, match="needs a `timeout`"):
        load_definition(
            {**base, "steps": [{"name": "a", "signal": "go", "on_timeout": "continue"}]}
        )
    with pytest.raises(DefinitionError, match="nothing to undo"):
        load_definition({**base, "steps": [{"name": "a", "signal": "go", "compensation": "x"}]})
    with pytest.raises(DefinitionError, match="one of `duration` or `until`"):
        load_definition({**base, "steps": [{"name": "a", "kind": "sleep"}]})
    d = load_definition({**base, "steps": [{"name": "a", "await_signal": "go"}]})
    assert d.steps[0].kind == "wait" and d.steps[0].signal == "go"


def _statesaga(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("statesaga")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "statesaga.cli"]
    return subprocess.run(
        [*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_readme_flow_run_then_signal_on_a_sqlite_file(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'expense.db'}"
    run = _statesaga(
        "run",
        str(EXAMPLES / "expense.yaml"),
        "--input",
        json.dumps(CLAIM),
        "--store",
        store,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "waits for the signal 'approve'" in run.stdout
    wf_id = next(w for w in run.stdout.split() if w.startswith("WF-"))
    assert f"statesaga signal {wf_id} approve --payload" in run.stdout

    # The example's handlers are allowed by statesaga's own statesaga.handlers entry point;
    # tests/test_security.py checks a module not on the allow-list is refused.
    signal = _statesaga(
        "signal",
        wf_id,
        "approve",
        "--payload",
        '{"by": "alice"}',
        "--store",
        store,
        "--handlers",
        "statesaga.examples.expense_handlers",
        cwd=tmp_path,
    )
    assert signal.returncode == 0, signal.stderr
    assert f"{wf_id} COMPLETED" in signal.stdout
    done = SQLiteStore(tmp_path / "expense.db").get(wf_id)
    assert done.status is WorkflowStatus.COMPLETED
    assert done.results["pay"]["approved_by"] == "alice"
    assert any(h.trigger == "signal" and h.by == "alice" for h in done.history)

    again = _statesaga("signal", wf_id, "approve", "--store", store, cwd=tmp_path)
    assert again.returncode == 1
    assert "already COMPLETED" in again.stderr


APPROVED_TRIP = """\
workflow: approved_trip
handlers: statesaga.examples.trip_handlers
defaults: {retry: {max_attempts: 1}}
steps:
  - name: reserve_flight
    action: reserve_flight
    params: {origin: "${input.origin}", destination: "${input.destination}"}
    compensation: {action: cancel_flight, params: {booking: "${result.booking}"}}
  - {name: approval, await_signal: approve}
  - name: charge_payment
    action: charge_payment
    pivot: true
    params: {amount: 10}
  - name: send_confirmation
    action: send_confirmation
    params: {email: a@b.c}
"""


@pytest.mark.parametrize(("fail_at", "code"), [(None, 0), ("send_confirmation", 1)])
def test_signal_exits_1_when_the_workflow_it_set_going_halts(
    tmp_path: Path, fail_at: str | None, code: int
) -> None:
    """Issue 28: `signal` ran the rest of the saga, which failed after the pivot and halted
    FAILED, and exited 0; it now exits as `run` and `restart` do, saying why it halted."""
    saga = tmp_path / "approved_trip.yaml"
    saga.write_text(APPROVED_TRIP)
    store = f"sqlite:///{tmp_path / 'trip.db'}"
    data = {"origin": "TPE", "destination": "NRT"} | ({"fail_at": fail_at} if fail_at else {})
    run = _statesaga("run", str(saga), "--input", json.dumps(data), "--store", store, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    wf_id = next(w for w in run.stdout.split() if w.startswith("WF-"))
    sent = _statesaga(
        "signal", wf_id, "approve", "--store", store,
        "--handlers", "statesaga.examples.trip_handlers", cwd=tmp_path,
    )  # fmt: skip
    assert sent.returncode == code, sent.stdout + sent.stderr
    status = SQLiteStore(tmp_path / "trip.db").get(wf_id).status
    if fail_at:
        assert status is WorkflowStatus.FAILED and f"{wf_id} FAILED" in sent.stdout
        assert f"{wf_id} halted: " in sent.stderr
        # Not the wait: it has no effect that could remain.
        assert "effects that may remain: reserve_flight, charge_payment." in sent.stderr
    else:
        assert status is WorkflowStatus.COMPLETED
