"""The engine's vocabulary comes from the tables, and a lifecycle that drifts from it is
refused when an engine loads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from statesaga import DefinitionError, Registry, StepStatus, WorkflowStatus
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.memory import MemoryStore
from statesaga.charts.lifecycles import lifecycle
from statesaga.engine import Engine
from statesaga.models import CompensationAction, RetryPolicy, SagaStep, StepError, WorkflowState
from statesaga.resources import statecharts_dir
from statesaga.runtime.guards import GUARDS
from statesaga.runtime.transaction import TransitionContext, Txn
from statesaga.vocabulary import (
    STEP_BUSY,
    STEP_CURRENT,
    STEP_GAVE_UP,
    STEP_IN_FLIGHT,
    STEP_MAY_REMAIN,
    STEP_NOT_STARTED,
    STEP_REQUEUEABLE,
    STEP_ROLLED_BACK,
    STEP_SETTLED,
    STEP_SIGNALLABLE,
    STEP_TO_UNDO,
    STEP_UNDOING,
    STEP_UNWOUND,
    STEP_WAITING,
    TRIGGERS,
    WORKFLOW_ENDED,
    WORKFLOW_IN_FLIGHT,
    WORKFLOW_OPEN,
    WORKFLOW_RECOVERABLE,
    WORKFLOW_ROLLED_BACK,
    WORKFLOW_UNWINDING,
    StepTrigger,
    WorkflowTrigger,
)

W, S = WorkflowStatus, StepStatus


def test_the_groups_are_read_from_the_shipped_tables() -> None:
    assert WORKFLOW_ENDED == {W.COMPLETED, W.COMPENSATED, W.CANCELLED, W.FAILED}
    assert WORKFLOW_OPEN == set(W) - WORKFLOW_ENDED
    assert WORKFLOW_IN_FLIGHT == {W.RUNNING, W.CANCELLING, W.COMPENSATING}
    assert WORKFLOW_RECOVERABLE == WORKFLOW_IN_FLIGHT | {W.SUSPENDED}
    assert STEP_IN_FLIGHT == {S.QUEUED, S.EXECUTING, S.RETRYING}
    assert STEP_BUSY == STEP_IN_FLIGHT | {S.COMPENSATING}
    assert STEP_GAVE_UP == {S.FAILED, S.IN_DOUBT}
    assert STEP_NOT_STARTED == {S.PENDING, S.QUEUED, S.RETRYING, S.WAITING}
    assert STEP_TO_UNDO == {S.COMPLETED, S.IN_DOUBT}
    assert WORKFLOW_ROLLED_BACK == {W.COMPENSATED, W.CANCELLED}
    assert STEP_MAY_REMAIN == {S.COMPLETED, S.IN_DOUBT, S.EXECUTING}
    assert STEP_SETTLED == set(S) - {S.PENDING, S.QUEUED, S.WAITING, S.EXECUTING, S.RETRYING}
    assert STEP_WAITING == {S.WAITING}
    assert STEP_UNDOING == {S.COMPENSATING}
    assert STEP_ROLLED_BACK == {S.COMPENSATED}
    assert STEP_SIGNALLABLE == {S.PENDING, S.WAITING}
    assert STEP_REQUEUEABLE == {S.WAITING, S.QUEUED, S.RETRYING, S.COMPENSATING}
    assert WORKFLOW_UNWINDING == {W.CANCELLING, W.COMPENSATING}
    assert STEP_CURRENT == {S.QUEUED, S.WAITING, S.EXECUTING, S.RETRYING, S.COMPENSATING}
    assert STEP_UNWOUND == {S.COMPENSATING, S.COMPENSATED, S.COMPENSATION_FAILED}


def test_every_trigger_the_engine_fires_is_in_its_table() -> None:
    for name, triggers in TRIGGERS.items():
        assert triggers <= set(lifecycle(name).triggers), name


def _step_table(edit: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((statecharts_dir() / "step.yaml").read_text())
    for state in data["states"]:
        edit(state)
    return data


def _engine(**charts: Any) -> Engine:
    return Engine(MemoryStore(), InlineQueue(), heartbeat_interval=0, **charts)


def test_a_user_lifecycle_without_a_tag_the_engine_reads_is_refused_in_one_line() -> None:
    def untag(state: dict[str, Any]) -> None:
        if state["name"] == "COMPENSATING":
            state.pop("tags", None)

    with pytest.raises(DefinitionError) as caught:
        _engine(step_chart=_step_table(untag))
    text = str(caught.value)
    assert len(text.splitlines()) == 1, text
    assert "must tag COMPENSATING (and no other state) 'undoing'" in text


def test_a_user_lifecycle_tagging_another_state_is_refused() -> None:
    def overtag(state: dict[str, Any]) -> None:
        if state["name"] == "WAITING":
            state["tags"] = ["in_flight"]

    with pytest.raises(DefinitionError, match="it tags EXECUTING, QUEUED, RETRYING, WAITING"):
        _engine(step_chart=_step_table(overtag))


def test_a_user_workflow_lifecycle_that_does_not_say_what_rolled_back_is_refused() -> None:
    data: dict[str, Any] = yaml.safe_load((statecharts_dir() / "workflow.yaml").read_text())
    for state in data["states"]:
        if state["name"] == "CANCELLED":
            state.pop("tags", None)
    with pytest.raises(DefinitionError, match="must tag CANCELLED, COMPENSATED .* 'rolled_back'"):
        _engine(workflow_chart=data)


def _undoing() -> tuple[Txn, SagaStep]:
    """A working copy whose one step is being undone after a failed compensation attempt."""
    step = SagaStep(
        id="STEP-1",
        name="book",
        action_type="book",
        status=S.COMPENSATING,
        attempts=1,
        compensation=CompensationAction(
            step_id="STEP-1",
            action_type="unbook",
            retry=RetryPolicy(max_attempts=5, initial_interval=30, jitter=0),
            attempts=1,
            error=StepError(type="Boom", message="boom", attempt=1),
        ),
    )
    wf = WorkflowState(name="trip", status=W.COMPENSATING, steps=[step])
    return Txn(wf), wf.steps[0]


def test_the_table_says_when_a_compensation_is_put_back_at_once() -> None:
    engine = _engine()
    txn, step = _undoing()
    engine.kernel.fire(txn, step, StepTrigger.COMPENSATION_FAILED)
    assert [delay for _, delay in txn.jobs] == [30.0]  # a retry waits out its backoff
    txn, step = _undoing()
    engine.kernel.fire(txn, step, StepTrigger.REQUEUE)
    assert [delay for _, delay in txn.jobs] == [0.0]  # lost: its backoff was spent meanwhile
    (requeue,) = lifecycle("step").transitions_from("COMPENSATING", StepTrigger.REQUEUE)
    assert {"name": "enqueue_compensation", "args": {"at_once": True}} in [
        e.model_dump() for e in requeue.effects
    ]


def test_an_extension_keeps_the_shipped_tags(tmp_path: Path) -> None:
    extended = tmp_path / "careful_step.yaml"
    extended.write_text(
        "chart: careful_step\nextends: step\nstates:\n"
        "  - name: EXECUTING\n    initial: WORKING\n    states:\n      - name: WORKING\n"
    )
    engine = _engine(step_chart=extended)
    assert engine.step_chart.name == "careful_step"


def test_the_engine_leaves_the_callers_registry_as_it_was() -> None:
    registry = Registry()
    registry.register_handler("noop", lambda ctx: None)
    engine = Engine(MemoryStore(), InlineQueue(), registry, heartbeat_interval=0)
    assert engine.registry.has_effect("persist") and engine.registry.has_handler("noop")
    assert not registry.has_effect("persist") and not registry.has_guard("can_retry")


def test_validate_refuses_a_saga_whose_step_lifecycle_drops_a_tag(tmp_path: Path) -> None:
    """`statesaga validate` (load_definition) says what `run` would refuse: a saga's own step
    lifecycle without a tag the engine reads fails at load, naming the tag and the chart."""
    import subprocess
    import sys

    from statesaga.definitions.load import load_definition

    text = (statecharts_dir() / "step.yaml").read_text()
    assert "tags: [undoing]" in text
    (tmp_path / "mystep.yaml").write_text(text.replace("tags: [undoing]", "tags: []"))
    saga = {
        "workflow": "tagless",
        "step_lifecycle": "mystep.yaml",
        "steps": [{"name": "a", "action": "a"}],
    }
    (tmp_path / "saga.yaml").write_text(yaml.safe_dump(saga))
    with pytest.raises(DefinitionError, match="must tag COMPENSATING .* 'undoing'"):
        load_definition(tmp_path / "saga.yaml")
    res = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", "validate", str(tmp_path / "saga.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1
    assert "mystep.yaml" in res.stderr + res.stdout and "undoing" in res.stderr + res.stdout


def test_a_user_workflow_lifecycle_that_does_not_say_what_unwinds_is_refused() -> None:
    data: dict[str, Any] = yaml.safe_load((statecharts_dir() / "workflow.yaml").read_text())
    for state in data["states"]:
        if state["name"] == "CANCELLING":
            state["tags"] = ["in_flight"]
    with pytest.raises(DefinitionError, match="must tag CANCELLING, COMPENSATING .* 'unwinding'"):
        _engine(workflow_chart=data)


def test_the_guard_saga_unwinding_reads_the_tag() -> None:
    engine = _engine()
    guard = GUARDS["saga_unwinding"]
    for status in W:
        txn = Txn(WorkflowState(name="trip", status=status, steps=[]))
        ctx = TransitionContext(engine.kernel, txn, None)
        assert guard(ctx) is (status in WORKFLOW_UNWINDING), status


def _past_the_pivot(status: WorkflowStatus) -> Txn:
    """A working copy whose pivot completed; its next step failed for good."""
    steps = [
        SagaStep(id="S-1", name="charge", action_type="charge", status=S.COMPLETED, pivot=True),
        SagaStep(id="S-2", name="ship", action_type="ship", status=S.FAILED),
    ]
    return Txn(WorkflowState(name="trip", status=status, steps=steps))


def test_the_table_says_which_halts_a_cancel_caused() -> None:
    """explain_halt's wording follows its argument on the transition, not the trigger's name:
    the transitions a cancel takes to FAILED say `cancelled: true`, the others say nothing."""
    halts = [
        (t.trigger, e.args)
        for t in lifecycle("workflow").transitions
        for e in t.effects
        if e.name == "explain_halt"
    ]
    assert {trigger for trigger, _ in halts} == {"advance", "step_failed", "cancel", "force_cancel"}
    for trigger, args in halts:
        # `advance` halts only from CANCELLING (the step in flight when the cancel came was
        # the pivot): a cancel caused it too.
        cancel = trigger in (
            WorkflowTrigger.CANCEL,
            WorkflowTrigger.FORCE_CANCEL,
            WorkflowTrigger.ADVANCE,
        )
        assert args == ({"cancelled": True} if cancel else {}), trigger
    engine = _engine()
    for trigger, source, words in (
        (WorkflowTrigger.CANCEL, W.RUNNING, "cancelled once the pivot charge may have applied"),
        (WorkflowTrigger.FORCE_CANCEL, W.RUNNING, "cancelled once the pivot charge may have"),
        (WorkflowTrigger.ADVANCE, W.CANCELLING, "cancelled once the pivot charge may have"),
        (WorkflowTrigger.STEP_FAILED, W.RUNNING, "a step failed once the pivot charge may have"),
    ):
        txn = _past_the_pivot(source)
        engine.kernel.fire(txn, None, trigger)
        assert txn.wf.status is W.FAILED, trigger
        assert txn.wf.reason is not None and txn.wf.reason.startswith(words), txn.wf.reason
        assert "effects that may remain: charge" in txn.wf.reason
