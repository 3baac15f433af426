"""A step's `retry:` is laid over the saga's defaults field by field (issue 17): a step that
only raises max_attempts keeps the saga's non_retryable errors, and the effective policy is
what `status` and `diagram --detail` show."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner
from statesaga import Engine
from statesaga.cli import main
from statesaga.definitions.load import load_definition
from statesaga.diagram import from_definition
from statesaga.models import StepStatus, WorkflowStatus
from statesaga.plugins import open_queue, open_store
from statesaga.registry import Registry


class Refused(Exception):
    """A refusal that will not change on retry."""


SAGA: dict[str, Any] = {
    "workflow": "refusals",
    "defaults": {
        "retry": {"max_attempts": 3, "initial_interval": 0, "non_retryable": ["Refused"]},
        "compensation_retry": {"max_attempts": 2, "initial_interval": 0},
    },
    "steps": [
        {
            "name": "first",
            "action": "ok",
            "compensation": {"action": "undo", "retry": {"max_attempts": 4}},
        },
        {"name": "second", "action": "refuse", "retry": {"max_attempts": 5}},
    ],
}


def test_a_step_retry_keeps_the_saga_defaults_it_does_not_name() -> None:
    d = load_definition(SAGA)
    second = d.retry(d.steps[1])
    assert second.max_attempts == 5 and second.non_retryable == ["Refused"]
    assert second.initial_interval == 0
    undo = d.compensation_retry(d.steps[0])
    assert undo is not None and undo.max_attempts == 4 and undo.initial_interval == 0
    wf = d.instantiate({})
    assert wf.step("second").retry == second
    assert wf.step("first").compensation is not None
    assert wf.step("first").compensation.retry == undo


def test_a_non_retryable_error_is_not_retried_under_a_step_retry() -> None:
    calls: list[int] = []

    def refuse(ctx: Any) -> None:
        calls.append(ctx.attempt)
        raise Refused("no")

    registry = Registry()
    registry.register_handler("ok", lambda ctx: {})
    registry.register_handler("undo", lambda ctx: {})
    registry.register_handler("refuse", refuse)
    engine = Engine(open_store("memory://"), open_queue("inline://"), registry)
    wf = engine.run(load_definition(SAGA), {})
    assert calls == [1]  # once: the saga's non_retryable still holds
    assert wf.step("second").status is StepStatus.FAILED
    assert wf.status is WorkflowStatus.COMPENSATED


def test_status_and_detail_diagram_show_the_effective_policy(tmp_path: Any) -> None:
    store = f"sqlite:///{tmp_path / 'r.db'}"
    d = load_definition(SAGA)
    wf = d.instantiate({})
    s = open_store(store)
    s.initialize()
    s.create(wf)
    out = CliRunner().invoke(main, ["status", wf.id, "--store", store]).output
    assert "retry 5 attempts, 0s x2 up to 60s, not retried: Refused: second" in out
    assert "undo retry 4 attempts, 0s x2 up to 60s: first" in out
    notes = {n.target: n.text for n in from_definition(d, detail=True).notes}
    assert notes["second"] == "retry: 5 attempts, 0s x2 up to 60s, not retried: Refused"
    assert "undo retry: 4 attempts" in notes["first"]
    assert not from_definition(d).notes  # only with --detail
