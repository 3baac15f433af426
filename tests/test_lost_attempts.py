"""Regression tests on the normal engine (SQLite store, inline queue) for the defects of
issue 15 that the simulation found: an attempt whose worker is lost may have applied, so it is
undone by its idempotency key, or (past the pivot) the workflow halts FAILED naming it; a step
without a compensation no longer leaves the saga stuck in COMPENSATING; compensations follow
reverse dependency order even when a forced cancel races a running step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from statesaga import Registry, StepStatus, WorkflowStatus
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.context import StepContext
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.ports import Job
from statesaga.runtime.recovery import Recovery, RecoveryAction


class Died(BaseException):
    """The worker process vanished at a boundary (nothing after it runs)."""


class World:
    """Handlers that apply and undo effects by idempotency key, like a real service, and a
    probe that kills the worker at the nth time a boundary is reached for a step."""

    def __init__(self, tmp_path: Path, steps: list[dict[str, Any]]) -> None:
        self.applied: dict[str, str] = {}
        self.undone: list[str] = []
        self.kill: tuple[str, str] | None = None
        reg = Registry()
        for s in steps:
            reg.register_handler(s["action"], self._apply)
            if "compensation" in s:
                reg.register_handler(s["compensation"], self._undo)
        self.engine = Engine(
            SQLiteStore(tmp_path / "lost.db"),
            InlineQueue(),
            reg,
            heartbeat_interval=0,
            probe=self._probe,
        )
        self.definition = load_definition(
            {
                "workflow": "lost",
                "defaults": {"retry": {"max_attempts": 1}},
                "steps": steps,
            }
        )

    def _apply(self, ctx: StepContext) -> dict[str, str]:
        self.applied.setdefault(ctx.idempotency_key, f"{ctx.step}-ref")
        return {"ref": self.applied[ctx.idempotency_key]}

    def _undo(self, ctx: StepContext) -> dict[str, Any]:
        key = ctx.idempotency_key.removesuffix(":undo")  # found by key: the result may be None
        ref = self.applied.pop(key, None)
        if ref is not None:
            self.undone.append(ctx.step)
        return {"undone": ref}

    def _probe(self, boundary: str, job: Job) -> None:
        if self.kill == (boundary, job.step):
            self.kill = None
            raise Died(f"{job.step} at {boundary}")

    def run(self) -> None:
        try:
            self.engine.queue.drain()
        except Died:
            self.engine.queue.close()  # the dead worker's in-process queue dies with it

    def recover(self, action: RecoveryAction = RecoveryAction.RESUME) -> None:
        Recovery(self.engine, timeout=0.0, action=action).run_once()
        self.engine.queue.drain()

    def live(self) -> list[str]:
        return sorted(k.split(":", 1)[1] for k in self.applied)


def steps(*specs: dict[str, Any]) -> list[dict[str, Any]]:
    return list(specs)


def pivot_saga(tmp_path: Path) -> World:
    """reserve (undoable), then charge (the pivot), then ship."""
    return World(
        tmp_path,
        steps(
            {"name": "reserve", "action": "do_reserve", "compensation": "undo_reserve"},
            {"name": "charge", "action": "do_charge", "pivot": True},
            {"name": "ship", "action": "do_ship"},
        ),
    )


def test_lost_last_attempt_after_its_effect_is_undone_by_key(tmp_path: Path) -> None:
    """Defect 2: before, the step went FAILED, the unwind skipped it and the workflow said
    COMPENSATED with its effect in force."""
    w = World(
        tmp_path,
        steps(
            {"name": "a", "action": "do_a", "compensation": "undo_a"},
            {"name": "b", "action": "do_b", "compensation": "undo_b"},
        ),
    )
    wf = w.engine.start(w.definition)
    w.kill = ("after_action", "b")
    w.run()
    assert w.live() == ["a", "b"]  # b applied, its worker died before saving that
    w.recover()
    wf = w.engine.get(wf.id)
    assert wf.status is WorkflowStatus.COMPENSATED
    assert w.live() == []
    assert w.undone == ["b", "a"]
    b = wf.step("b")
    assert b.status is StepStatus.COMPENSATED
    assert b.error is not None and b.error.type == "WorkerLost"
    assert "worker running attempt 1 was lost" in b.error.message
    assert [h.dest for h in wf.history if h.step == "b"][-3:] == [
        "IN_DOUBT",
        "COMPENSATING",
        "COMPENSATED",
    ]


def test_lost_pivot_halts_failed_naming_the_effect_and_restart_learns_the_outcome(
    tmp_path: Path,
) -> None:
    """Defect 2 on a pivot: before, the saga compensated and said COMPENSATED while the
    charge stood."""
    w = pivot_saga(tmp_path)
    wf = w.engine.start(w.definition)
    w.kill = ("after_action", "charge")
    w.run()
    w.recover()
    wf = w.engine.get(wf.id)
    assert wf.status is WorkflowStatus.FAILED
    assert wf.step("charge").status is StepStatus.IN_DOUBT
    assert w.undone == []  # nothing undone once the pivot may have applied
    assert wf.reason is not None and "pivot charge may have applied" in wf.reason
    assert "reserve, charge" in wf.reason  # the effects that may remain
    # A scan changes nothing more: FAILED is halted, not recoverable.
    before = len(wf.history)
    w.recover()
    assert len(w.engine.get(wf.id).history) == before
    # The operator restarts from the pivot: the same idempotency key learns it had applied.
    w.engine.restart(wf.id, "charge", reason="checked the charge", by="ops")
    w.engine.queue.drain()
    wf = w.engine.get(wf.id)
    assert wf.status is WorkflowStatus.COMPLETED
    assert w.live() == ["charge", "reserve", "ship"]


def test_step_without_compensation_lost_while_unwinding_does_not_stick(tmp_path: Path) -> None:
    """Defect 1: before, recovery moved the step to COMPENSATING with nothing enqueued and the
    workflow sat COMPENSATING forever, two history entries per scan. Defect 8 too: `a` waits
    for `b`, which depends on it, to be settled."""
    w = World(
        tmp_path,
        steps(
            {"name": "a", "action": "do_a", "compensation": "undo_a"},
            {"name": "b", "action": "do_b"},
            {"name": "c", "action": "do_c", "compensation": "undo_c"},
        ),
    )
    wf = w.engine.start(w.definition)
    w.kill = ("after_action", "b")
    w.run()
    during = w.engine.cancel(wf.id, force=True)
    assert during.status is WorkflowStatus.COMPENSATING
    assert during.step("a").status is StepStatus.COMPLETED  # b (running) depends on it
    w.recover()
    wf = w.engine.get(wf.id)
    assert wf.status is WorkflowStatus.COMPENSATED
    assert wf.step("b").status is StepStatus.COMPENSATED  # nothing to undo: no compensation
    assert w.undone == ["a"]
    before = len(wf.history)
    w.recover()
    assert len(w.engine.get(wf.id).history) == before


def test_a_failure_after_a_lost_attempt_does_not_prove_nothing_applied(tmp_path: Path) -> None:
    calls: list[int] = []
    w = World(
        tmp_path,
        steps(
            {"name": "a", "action": "do_a", "compensation": "undo_a"},
            {
                "name": "b",
                "action": "do_b",
                "compensation": "undo_b",
                "retry": {"max_attempts": 2, "initial_interval": 0},
            },
        ),
    )

    def flaky(ctx: StepContext) -> dict[str, str]:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            return w._apply(ctx)
        raise ConnectionError("the service did not answer")

    w.engine.registry.register_handler("do_b", flaky, replace=True)
    wf = w.engine.start(w.definition)
    w.kill = ("after_action", "b")
    w.run()
    w.recover()
    wf = w.engine.get(wf.id)
    assert calls == [1, 2]
    assert wf.status is WorkflowStatus.COMPENSATED
    assert wf.step("b").status is StepStatus.COMPENSATED
    assert w.live() == []


@pytest.mark.parametrize("force", [False, True])
def test_cancel_past_the_pivot_halts_instead_of_undoing(tmp_path: Path, force: bool) -> None:
    w = pivot_saga(tmp_path)
    wf = w.engine.start(w.definition)
    w.kill = ("before_action", "ship")
    w.run()
    wf = w.engine.cancel(wf.id, force=force, by="ops")
    if not force:  # graceful: it waits for ship, in flight; recovery finds ship's worker lost
        assert wf.status is WorkflowStatus.CANCELLING
        w.recover()
        wf = w.engine.get(wf.id)
    assert wf.status is WorkflowStatus.FAILED
    assert wf.reason is not None and "once the pivot charge may have applied" in wf.reason
    assert w.undone == []
    assert w.live() == ["charge", "reserve"]


def test_recover_cancel_past_the_pivot_halts_and_reports_no_error(tmp_path: Path) -> None:
    w = pivot_saga(tmp_path)
    wf = w.engine.start(w.definition)
    w.kill = ("before_action", "ship")
    w.run()
    report = Recovery(w.engine, timeout=0.0, action=RecoveryAction.CANCEL).run_once()
    assert report.cancelled == [wf.id] and not report.errors
    assert w.engine.get(wf.id).status is WorkflowStatus.FAILED
    assert w.undone == []


@pytest.mark.parametrize("fails", [False, True])
def test_a_step_that_settles_while_suspended_is_taken_on_resume(
    tmp_path: Path, fails: bool
) -> None:
    """Found by the simulation: a step finishing (or failing for good) while the workflow was
    SUSPENDED was ignored, and once resumed it sat RUNNING forever."""
    w = World(
        tmp_path,
        steps(
            {"name": "a", "action": "do_a", "compensation": "undo_a"},
            {"name": "b", "action": "do_b", "compensation": "undo_b"},
        ),
    )
    wf = w.engine.start(w.definition)
    suspended: list[str] = []

    def suspend_then_settle(ctx: StepContext) -> dict[str, str]:
        w.engine.suspend(ctx.workflow_id, by="ops", reason="maintenance")
        suspended.append(ctx.step)
        if fails:
            raise ValueError("b refused")
        return w._apply(ctx)

    w.engine.registry.register_handler("do_b", suspend_then_settle, replace=True)
    w.run()
    assert suspended == ["b"]
    assert w.engine.get(wf.id).status is WorkflowStatus.SUSPENDED
    w.engine.resume(wf.id, by="ops")
    w.engine.queue.drain()
    wf = w.engine.get(wf.id)
    if fails:
        assert wf.status is WorkflowStatus.COMPENSATED and w.live() == []
    else:
        assert wf.status is WorkflowStatus.COMPLETED and w.live() == ["a", "b"]


@pytest.mark.parametrize("action", [RecoveryAction.RESUME, RecoveryAction.CANCEL])
def test_a_pivot_held_by_a_worker_that_died_before_its_call_is_run_again_or_compensated(
    tmp_path: Path, action: RecoveryAction
) -> None:
    """Claimed is not started (issue 28): the settle of `reserve` holds the pivot for its own
    claim, saved right before the call. A worker dying in between leaves the pivot QUEUED with
    no attempt spent: resumed, it runs (attempt 1) and the saga completes; cancelled, the saga
    compensates. Before, the settle claimed it, it looked maybe applied, and a failure or a
    cancel halted the saga FAILED with the reservation left for an operator."""
    w = pivot_saga(tmp_path)
    wf = w.engine.start(w.definition)
    w.kill = ("after_save", "reserve")
    w.run()
    lost = w.engine.get(wf.id)
    charge = lost.step("charge")
    assert (charge.status, charge.attempts, charge.in_doubt) == (StepStatus.QUEUED, 0, False)
    w.recover(action)
    wf = w.engine.get(wf.id)
    if action is RecoveryAction.RESUME:
        assert wf.status is WorkflowStatus.COMPLETED
        assert [s.attempts for s in wf.steps] == [1, 1, 1]
        assert not wf.step("charge").in_doubt
        assert w.live() == ["charge", "reserve", "ship"]
    else:
        assert wf.status is WorkflowStatus.COMPENSATED, wf.reason
        assert wf.step("charge").status is StepStatus.SKIPPED
        assert w.undone == ["reserve"] and w.live() == []


def test_a_step_without_compensation_held_by_a_lost_worker_costs_no_attempt(
    tmp_path: Path,
) -> None:
    """`ship` (after the pivot, no compensation, one attempt) was held when the worker died:
    it runs again with its one attempt, instead of being in doubt and halting the saga."""
    w = pivot_saga(tmp_path)
    wf = w.engine.start(w.definition)
    w.kill = ("after_save", "charge")
    w.run()
    assert w.engine.get(wf.id).step("ship").status is StepStatus.QUEUED
    w.recover()
    wf = w.engine.get(wf.id)
    assert wf.status is WorkflowStatus.COMPLETED, wf.reason
    assert wf.step("ship").attempts == 1 and w.live() == ["charge", "reserve", "ship"]


def test_a_lost_claimed_step_with_a_compensation_is_still_in_doubt(tmp_path: Path) -> None:
    """A step with a compensation is claimed in the save that settled the step before it (no
    write of its own): a worker dying there costs that attempt, undone by its key."""
    w = World(
        tmp_path,
        steps(
            {"name": "a", "action": "do_a", "compensation": "undo_a"},
            {"name": "b", "action": "do_b", "compensation": "undo_b"},
        ),
    )
    wf = w.engine.start(w.definition)
    w.kill = ("after_save", "a")
    w.run()
    b = w.engine.get(wf.id).step("b")
    assert (b.status, b.attempts) == (StepStatus.EXECUTING, 1)
    w.recover()
    wf = w.engine.get(wf.id)
    assert wf.status is WorkflowStatus.COMPENSATED  # one attempt in all: the lost one was it
    assert wf.step("b").in_doubt and w.live() == []
