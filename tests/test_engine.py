"""The saga engine on the embedded default: compensation strategies and failures, deadlines and
timeouts, results flowing between steps, late results, failed saves, definition errors.

Completion, retries, reverse compensation, pivots, duplicate and stale jobs and illegal commands
are tested on every store and both dispatch modes in tests/test_engine_matrix.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from statesaga import DefinitionError, Registry, StepStatus, WorkflowStatus
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.context import StepContext
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.ports import Job


class Ledger:
    """Records what handlers did, in order, so tests can check effects and their undoing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.times: dict[str, list[float]] = {}

    def action(
        self, name: str, fail_times: int = 0, error: type[Exception] = RuntimeError
    ) -> Callable[[StepContext], Any]:
        def handler(ctx: StepContext) -> Any:
            self.calls.append(("do", ctx.step, ctx.attempt))
            self.times.setdefault(ctx.step, []).append(time.monotonic())
            if ctx.attempt <= fail_times:
                raise error(f"{name} failed on attempt {ctx.attempt}")
            return {"id": f"{name}-1", "params": dict(ctx.params)}

        return handler

    def undo(self, name: str, fail_times: int = 0) -> Callable[[StepContext], Any]:
        def handler(ctx: StepContext) -> Any:
            self.calls.append(("undo", ctx.step, ctx.attempt))
            if ctx.attempt <= fail_times:
                raise RuntimeError(f"cannot undo {name}")
            return {"undone": ctx.params.get("id")}

        return handler

    def done(self, kind: str) -> list[str]:
        return [step for k, step, _ in self.calls if k == kind]


FAST = {"max_attempts": 3, "initial_interval": 0.01, "backoff_rate": 2.0, "max_interval": 0.1}


def saga(*steps: dict[str, Any], strategy: str = "backward") -> dict[str, Any]:
    return {
        "workflow": "test_saga",
        "version": 1,
        "strategy": strategy,
        "defaults": {"retry": FAST},
        "steps": list(steps),
    }


def step(name: str, comp: bool = True, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "action": f"do_{name}", **extra}
    if comp:
        d["compensation"] = {"action": f"undo_{name}", "params": {"id": "${result.id}"}}
    return d


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def engine_for(tmp_path: Path, ledger: Ledger) -> Callable[..., Engine]:
    def make(
        fail: dict[str, int] | None = None,
        undo_fail: dict[str, int] | None = None,
        errors: dict[str, type[Exception]] | None = None,
    ) -> Engine:
        reg = Registry()
        for n in "abcde":
            reg.register_handler(
                f"do_{n}",
                ledger.action(n, (fail or {}).get(n, 0), (errors or {}).get(n, RuntimeError)),
            )
            reg.register_handler(f"undo_{n}", ledger.undo(n, (undo_fail or {}).get(n, 0)))
        return Engine(SQLiteStore(tmp_path / "engine.db"), InlineQueue(), reg, heartbeat_interval=0)

    return make


def statuses(wf: Any) -> dict[str, str]:
    return {s.name: s.status.value for s in wf.steps}


def test_parallel_strategy_compensates_all_at_once(
    engine_for: Callable[..., Engine], ledger: Ledger
) -> None:
    engine = engine_for(fail={"d": 99})
    # Independent steps are undone at once (before issue 15 a chain was too: see the next test).
    a, b, c = (step(n, depends_on=[]) for n in "abc")
    wf = engine.run(
        load_definition(saga(a, b, c, step("d", depends_on=["a", "b", "c"]), strategy="parallel"))
    )
    assert wf.status is WorkflowStatus.COMPENSATED
    # All three compensations were scheduled by one transition, before any of them ran.
    comp = [h for h in wf.history if h.trigger == "compensate"]
    assert len(comp) == 3
    first_undo = next(i for i, h in enumerate(wf.history) if h.trigger == "compensated")
    assert all(wf.history.index(h) < first_undo for h in comp)
    assert sorted(ledger.done("undo")) == ["a", "b", "c"]


@pytest.mark.parametrize("strategy", ["backward", "parallel"])
def test_compensation_follows_reverse_dependency_order_under_every_strategy(
    engine_for: Callable[..., Engine], ledger: Ledger, strategy: str
) -> None:
    """Issue 15, defect 8: a step is undone only after every step that depends on it."""
    engine = engine_for(fail={"d": 99})
    wf = engine.run(
        load_definition(
            saga(
                step("a"),
                step("b"),
                step("e", depends_on=[]),
                step("c"),
                step("d"),
                strategy=strategy,
            )
        )
    )
    assert wf.status is WorkflowStatus.COMPENSATED
    undone = ledger.done("undo")
    assert sorted(undone) == ["a", "b", "c", "e"]
    assert undone.index("c") < undone.index("b") < undone.index("a")


def test_a_compensation_that_keeps_failing_ends_failed_with_its_reason(
    engine_for: Callable[..., Engine], ledger: Ledger
) -> None:
    engine = engine_for(fail={"c": 99}, undo_fail={"b": 99})
    definition = load_definition(
        {
            **saga(step("a"), step("b"), step("c")),
            "defaults": {"retry": FAST, "compensation_retry": {**FAST, "max_attempts": 2}},
        }
    )
    wf = engine.run(definition)
    assert wf.status is WorkflowStatus.FAILED
    assert wf.step("b").status is StepStatus.COMPENSATION_FAILED
    assert wf.step("b").compensation is not None and wf.step("b").compensation.attempts == 2
    assert (
        wf.reason is not None
        and "compensation of b failed" in wf.reason
        and "cannot undo b" in wf.reason
    )
    assert ledger.done("undo") == [
        "b",
        "b",
    ]  # a is never reached: the saga stops, not silently done


def test_non_retryable_errors_fail_at_once(
    engine_for: Callable[..., Engine], ledger: Ledger
) -> None:
    engine = engine_for(fail={"b": 99}, errors={"b": ValueError})
    definition = load_definition(
        saga(step("a"), step("b", retry={**FAST, "non_retryable": ["ValueError"]}))
    )
    wf = engine.run(definition)
    assert wf.step("b").attempts == 1 and wf.status is WorkflowStatus.COMPENSATED


def test_deadline_across_attempts_stops_retrying(engine_for: Callable[..., Engine]) -> None:
    engine = engine_for(fail={"a": 99})
    definition = load_definition(
        saga(
            step(
                "a",
                retry={
                    "max_attempts": 50,
                    "initial_interval": 0.05,
                    "backoff_rate": 1.0,
                    "deadline": 0.2,
                },
            )
        )
    )
    wf = engine.run(definition)
    assert wf.status is WorkflowStatus.COMPENSATED
    assert 2 <= wf.step("a").attempts < 10


def test_step_timeout_counts_as_a_failed_attempt(tmp_path: Path) -> None:
    reg = Registry()
    reg.register_handler("slow", lambda ctx: time.sleep(0.5 if ctx.attempt == 1 else 0))
    engine = Engine(SQLiteStore(tmp_path / "t.db"), InlineQueue(), reg, heartbeat_interval=0)
    wf = engine.run(load_definition(saga({"name": "a", "action": "slow", "timeout": 0.1})))
    assert wf.status is WorkflowStatus.COMPLETED
    entries = [h for h in wf.history if h.step == "a" and h.trigger == "time_out"]
    assert len(entries) == 1 and entries[0].dest == "RETRYING"


def test_results_flow_to_later_steps_and_input_is_referenced(tmp_path: Path) -> None:
    reg = Registry()
    reg.register_handler("first", lambda ctx: {"token": ctx.input["seed"] * 2})
    reg.register_handler("second", lambda ctx: dict(ctx.params))
    engine = Engine(SQLiteStore(tmp_path / "r.db"), InlineQueue(), reg, heartbeat_interval=0)
    definition = load_definition(
        saga(
            {"name": "a", "action": "first"},
            {
                "name": "b",
                "action": "second",
                "params": {"t": "${steps.a.token}", "msg": "seed=${input.seed}"},
            },
        )
    )
    wf = engine.run(definition, {"seed": 21})
    assert wf.results["b"] == {"t": 42, "msg": "seed=21"}


def test_async_handlers_run(tmp_path: Path) -> None:
    reg = Registry()

    async def fetch(ctx: StepContext) -> dict[str, int]:
        return {"n": ctx.attempt}

    reg.register_handler("fetch", fetch)
    engine = Engine(SQLiteStore(tmp_path / "a.db"), InlineQueue(), reg, heartbeat_interval=0)
    wf = engine.run(load_definition(saga({"name": "a", "action": "fetch"})))
    assert wf.results == {"a": {"n": 1}}


def test_dependencies_run_in_parallel_branches_and_join(
    engine_for: Callable[..., Engine], ledger: Ledger
) -> None:
    engine = engine_for()
    definition = load_definition(
        saga(step("a", depends_on=[]), step("b", depends_on=[]), step("c", depends_on=["a", "b"]))
    )
    wf = engine.start(definition)
    # Both roots were scheduled by the start transition, before anything ran.
    assert statuses(engine.store.get(wf.id)) == {"a": "QUEUED", "b": "QUEUED", "c": "PENDING"}
    final = engine.wait(wf.id)
    assert final.status is WorkflowStatus.COMPLETED
    assert ledger.done("do")[-1] == "c"


class WorkerLost(Exception):
    """The worker running a job died at a probe's boundary."""


def lose_the_worker(boundary: str, job: Job) -> None:
    if boundary == "before_action":
        raise WorkerLost(job.description)


def test_a_late_result_of_an_old_attempt_is_rejected(
    engine_for: Callable[..., Engine], ledger: Ledger
) -> None:
    engine = engine_for()
    definition = load_definition(saga(step("a")))
    wf = engine.start(definition)
    claimed = engine.store.get(wf.id)
    # Simulate recovery giving the step a new attempt while attempt 1 is still running: a
    # worker claims attempt 1 and is lost before its handler returns (the crash probe).
    engine.probe = lose_the_worker
    with pytest.raises(WorkerLost):
        engine.run_job(Job(kind="step", workflow_id=wf.id, step="a", attempt=1))
    engine.probe = None
    engine.resume(wf.id)
    after = engine.store.get(wf.id)
    assert after.step("a").status is StepStatus.RETRYING and after.step("a").attempts == 1
    assert claimed.step("a").attempts == 0
    engine.wait(wf.id)
    final = engine.store.get(wf.id)
    assert final.status is WorkflowStatus.COMPLETED and final.step("a").attempts == 2
    assert ledger.calls == [("do", "a", 2)]  # attempt 1's job is stale and never ran


def test_a_failed_save_leaves_nothing_half_applied(
    engine_for: Callable[..., Engine], ledger: Ledger
) -> None:
    engine = engine_for()
    wf = engine.start(load_definition(saga(step("a"), step("b"))))
    queue = engine.queue
    assert isinstance(queue, InlineQueue)
    before = queue.pending()

    class Boom(Exception):
        pass

    original = engine.store.save

    def failing_save(doc: Any) -> None:
        raise Boom("disk full")

    engine.store.save = failing_save  # type: ignore[method-assign]
    with pytest.raises(Boom):
        engine.cancel(wf.id)
    engine.store.save = original  # type: ignore[method-assign]
    stored = engine.store.get(wf.id)
    assert stored.status is WorkflowStatus.RUNNING and stored.revision == wf.revision
    assert queue.pending() == before  # no outward effect ran for the failed transaction


def test_definition_errors_are_located(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(
        "workflow: bad\nsteps:\n"
        "  - {name: a, action: x, depends_on: [c]}\n"
        "  - {name: b, action: y, pivot: true}\n"
        "  - {name: c, action: z, depends_on: [a], compensation: undo_z}\n"
        "  - {name: d, action: w, depends_on: [nope]}\n"
        "  - {name: d, action: w}\n",
        encoding="utf-8",
    )
    with pytest.raises(DefinitionError) as info:
        load_definition(p)
    text = str(info.value)
    assert f"{p}:6:" in text and "unknown step 'nope'" in text
    assert f"{p}:7:" in text and "duplicate step name 'd'" in text
    assert "dependency cycle" in text


def test_unknown_handler_is_reported_when_loaded(tmp_path: Path) -> None:
    engine = Engine(SQLiteStore(tmp_path / "h.db"), InlineQueue(), Registry(), heartbeat_interval=0)
    with pytest.raises(DefinitionError, match="unknown handler 'do_a'"):
        engine.start(load_definition(saga(step("a"))))


def test_compensable_step_after_pivot_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="runs after the pivot 'b'"):
        load_definition(saga(step("a"), step("b", comp=False, pivot=True), step("c")))
