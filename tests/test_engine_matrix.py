"""The engine's behaviour on every store and in both dispatch modes, through its public API only.

As dramatiq runs its test suite over every broker, each test here runs once per store (memory,
an SQLite file, a real Redis, ArangoDB when STATESAGA_ARANGO_URL is set) and per dispatch mode
(eager: a step's settle claims the next step and this process runs it; queued: every step goes
through the queue), on the inline queue; the last tests run a subset on RQ too. What a saga does
must not depend on where it is stored or how its steps are dispatched.

Moved here from tests/test_engine.py (they ran on SQLite with eager dispatch only): completion
and history, retry with backoff, exhaustion and reverse compensation, both pivot cases,
duplicate and stale jobs, cancelling a finished workflow, eager dispatch's saves per step.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from statesaga import Job, Registry, StepStatus, WorkflowStatus
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.memory import MemoryStore
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.context import StepContext
from statesaga.definitions.load import WorkflowDefinition, load_definition
from statesaga.engine import Engine, waiting_for_signal
from statesaga.errors import StateError, TransitionError
from statesaga.models import WorkflowState, halt_reason
from statesaga.ports import Queue, Store

EXAMPLES = Path(__file__).parent.parent / "examples"
TRIP = {"origin": "TPE", "destination": "NRT", "nights": 2, "amount": 120, "email": "a@b.c"}
CLAIM = {"employee": "bob", "amount": 120}
WAIT = 30  # seconds a blocked handler waits at most: a safety net, not a measurement


# -- the matrix ---------------------------------------------------------------------------------


def _memory(request: pytest.FixtureRequest) -> Store:
    return MemoryStore()


def _sqlite(request: pytest.FixtureRequest) -> Store:
    return SQLiteStore.from_url(request.getfixturevalue("sqlite_url"))


def _redis(request: pytest.FixtureRequest) -> Store:
    from statesaga.adapters.stores.redis import RedisStore

    request.getfixturevalue("redis_client")  # flushes the test database before and after
    url: str = request.getfixturevalue("redis_url")
    return RedisStore.from_url(f"{url}?prefix=matrix-{uuid.uuid4().hex[:8]}:")


def _arango(request: pytest.FixtureRequest) -> Store:
    from statesaga.adapters.stores.arango import ArangoStore

    store = ArangoStore.from_url(
        os.environ["STATESAGA_ARANGO_URL"],
        collection_prefix=f"matrix_{uuid.uuid4().hex[:12]}_",
        initialize=True,
    )
    request.addfinalizer(store.drop)
    return store


_NO_ARANGO = pytest.mark.skipif(
    not os.environ.get("STATESAGA_ARANGO_URL"), reason="STATESAGA_ARANGO_URL not set"
)
STORES: dict[str, tuple[Callable[[pytest.FixtureRequest], Store], tuple[Any, ...]]] = {
    "memory": (_memory, ()),
    "sqlite": (_sqlite, ()),
    "redis": (_redis, (pytest.mark.redis,)),
    "arango": (_arango, (pytest.mark.arango, _NO_ARANGO)),
}


@pytest.fixture(params=[pytest.param(name, marks=marks) for name, (_, marks) in STORES.items()])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    opened = STORES[request.param][0](request)
    opened.initialize()
    yield opened
    opened.close()


@pytest.fixture(params=[True, False], ids=["eager", "queued"])
def eager(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def make_engine(store: Store, eager: bool) -> Callable[..., Engine]:
    """An engine on this test's store and dispatch mode (inline queue unless given one)."""

    def make(registry: Registry | None = None, queue: Queue | None = None) -> Engine:
        return Engine(
            store,
            queue if queue is not None else InlineQueue(),
            registry,
            heartbeat_interval=0,
            eager=eager,
        )

    return make


# -- handlers that record what they did ---------------------------------------------------------


class Ledger:
    """Steps a..e (`do_<x>`, `undo_<x>`) that record every call in order; a step named in
    `fail` raises on its first `fail[x]` attempts, `block` makes step c wait inside its
    handler until released, so a test can act while it is in flight."""

    def __init__(self, fail: dict[str, int] | None = None, block: bool = False) -> None:
        self.fail = fail or {}
        self.calls: list[tuple[str, str, int]] = []
        self.times: dict[str, list[float]] = {}
        self.block = block
        self.entered = threading.Event()
        self.release = threading.Event()
        self.registry = Registry()
        for n in "abcde":
            self.registry.register_handler(f"do_{n}", self._do)
            self.registry.register_handler(f"undo_{n}", self._undo)

    def _do(self, ctx: StepContext) -> dict[str, Any]:
        self.calls.append(("do", ctx.step, ctx.attempt))
        self.times.setdefault(ctx.step, []).append(time.monotonic())
        if self.block and ctx.step == "c":
            self.entered.set()
            assert self.release.wait(WAIT), "the test never released step c"
        if ctx.attempt <= self.fail.get(ctx.step, 0):
            raise RuntimeError(f"{ctx.step} failed on attempt {ctx.attempt}")
        return {"id": f"{ctx.step}-{ctx.attempt}"}

    def _undo(self, ctx: StepContext) -> dict[str, Any]:
        self.calls.append(("undo", ctx.step, ctx.attempt))
        return {"undone": ctx.params.get("id")}

    def done(self, kind: str) -> list[str]:
        return [step for k, step, _ in self.calls if k == kind]


FAST = {"max_attempts": 3, "initial_interval": 0.01, "backoff_rate": 2.0, "max_interval": 0.1}


def saga(*steps: dict[str, Any]) -> WorkflowDefinition:
    return load_definition(
        {"workflow": "matrix", "version": 1, "defaults": {"retry": FAST}, "steps": list(steps)}
    )


def step(name: str, comp: bool = True, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "action": f"do_{name}", **extra}
    if comp:
        d["compensation"] = {"action": f"undo_{name}", "params": {"id": "${result.id}"}}
    return d


def statuses(wf: WorkflowState) -> dict[str, str]:
    return {s.name: s.status.value for s in wf.steps}


def completed_order(wf: WorkflowState) -> list[str]:
    return [h.step or "" for h in wf.history if h.chart == "step" and h.dest == "COMPLETED"]


# -- completion -----------------------------------------------------------------------------------


def test_a_saga_completes_with_its_results_in_order_and_its_history(
    make_engine: Callable[..., Engine], eager: bool
) -> None:
    engine = make_engine()
    wf = engine.run(load_definition(EXAMPLES / "trip.yaml"), TRIP)
    assert wf.status is WorkflowStatus.COMPLETED and wf.finished_at is not None
    assert engine.get(wf.id) == wf
    names = ["reserve_flight", "reserve_hotel", "reserve_car", "charge_payment"]
    assert completed_order(wf) == [*names, "send_confirmation"]
    assert wf.results["reserve_flight"]["route"] == "TPE->NRT"
    assert wf.results["reserve_hotel"]["nights"] == 2
    assert wf.results["send_confirmation"] == {"sent_to": "a@b.c"}
    assert all(s.attempts == 1 for s in wf.steps)
    triggers = [(h.step, h.trigger) for h in wf.history]
    assert triggers[0] == (None, "start") and triggers[-1] == (None, "advance")
    assert wf.history[-1].dest == "COMPLETED"
    # Revisions count saves: create, then a claim and a settle per step when queued; eager
    # dispatch claims the next step in the settle of the one before (one save per step),
    # except the pivot and the step past it: held, each claimed by its own save right before
    # its call (claimed is not started).
    assert wf.revision == (1 + 1 + 5 + 2 if eager else 1 + 2 * 5)
    claimed = [h.step for h in wf.history if h.trigger == "dispatch" and h.detail]
    assert claimed == (names[1:] + ["send_confirmation"] if eager else [])
    held = [h.step for h in wf.history if h.detail and h.detail.startswith("held by")]
    assert held == (["charge_payment", "send_confirmation"] if eager else [])


# -- retries and compensation ---------------------------------------------------------------------


def test_a_flaky_step_is_retried_with_backoff_then_the_saga_completes(
    make_engine: Callable[..., Engine],
) -> None:
    ledger = Ledger(fail={"b": 2})
    engine = make_engine(ledger.registry)
    retry = {**FAST, "initial_interval": 0.02, "backoff_rate": 3.0, "max_interval": 1}
    wf = engine.run(saga(step("a"), step("b", retry=retry)))
    assert wf.status is WorkflowStatus.COMPLETED
    assert wf.step("b").attempts == 3
    assert [h.dest for h in wf.history if h.step == "b"] == [
        "QUEUED",
        "EXECUTING",
        "RETRYING",
        "EXECUTING",
        "RETRYING",
        "EXECUTING",
        "COMPLETED",
    ]
    t = ledger.times["b"]
    assert t[1] - t[0] >= 0.02 and t[2] - t[1] >= 0.06  # 0.02, then 0.02 * 3
    assert ledger.done("undo") == []


def test_an_exhausted_step_compensates_the_completed_steps_in_reverse_each_once(
    make_engine: Callable[..., Engine],
) -> None:
    ledger = Ledger(fail={"d": 99})
    engine = make_engine(ledger.registry)
    wf = engine.run(saga(step("a"), step("b"), step("c"), step("d"), step("e")))
    assert wf.status is WorkflowStatus.COMPENSATED
    assert wf.step("d").attempts == 3 and wf.step("d").status is StepStatus.FAILED
    assert wf.step("e").status is StepStatus.SKIPPED
    assert ledger.done("do") == ["a", "b", "c", "d", "d", "d"]
    assert ledger.done("undo") == ["c", "b", "a"]  # reverse order, each exactly once
    for name in "abc":
        comp = wf.step(name).compensation
        assert wf.step(name).status is StepStatus.COMPENSATED
        # Compensations see the result of the action they undo.
        assert comp is not None and comp.attempts == 1 and comp.result == {"undone": f"{name}-1"}
    assert wf.error is not None and wf.error.type == "RuntimeError"
    assert engine.get(wf.id) == wf


def test_a_failure_after_the_pivot_halts_failed_with_a_reason_and_undoes_nothing(
    make_engine: Callable[..., Engine],
) -> None:
    ledger = Ledger(fail={"c": 99})
    engine = make_engine(ledger.registry)
    wf = engine.run(saga(step("a"), step("b", comp=False, pivot=True), step("c", comp=False)))
    assert wf.status is WorkflowStatus.FAILED
    assert wf.step("c").attempts == 3  # retried forward first
    assert ledger.done("undo") == []
    assert statuses(wf) == {"a": "COMPLETED", "b": "COMPLETED", "c": "FAILED"}
    # The reason says what an operator can act on: the pivot, what may remain, the way on.
    assert wf.reason is not None and halt_reason(wf) == wf.reason
    assert "once the pivot b may have applied" in wf.reason
    assert "effects that may remain: a, b" in wf.reason and "restart" in wf.reason
    # FAILED is halted: waiting returns, and a cancel is refused.
    assert engine.wait(wf.id).status is WorkflowStatus.FAILED
    with pytest.raises(StateError, match="already FAILED"):
        engine.cancel(wf.id)


def test_a_failure_before_the_pivot_compensates(make_engine: Callable[..., Engine]) -> None:
    ledger = Ledger(fail={"b": 99})
    engine = make_engine(ledger.registry)
    wf = engine.run(saga(step("a"), step("b", comp=False, pivot=True), step("c", comp=False)))
    assert wf.status is WorkflowStatus.COMPENSATED
    assert ledger.done("undo") == ["a"]


# -- cancel ---------------------------------------------------------------------------------------


def _start_until_c_runs(engine: Engine, ledger: Ledger) -> tuple[str, threading.Thread]:
    """Start a..d; a worker thread runs the queue and is stopped inside step c."""
    wf = engine.start(saga(*(step(n) for n in "abcd")))
    worker = threading.Thread(target=engine.queue.drain, daemon=True)
    worker.start()
    assert ledger.entered.wait(WAIT), "step c never started"
    return wf.id, worker


def _finish(engine: Engine, ledger: Ledger, worker: threading.Thread, wf_id: str) -> WorkflowState:
    ledger.release.set()
    worker.join(WAIT)
    assert not worker.is_alive()
    # Jobs enqueued by the cancel itself (from this thread) are run here.
    engine.queue.drain(lambda: False)
    return engine.get(wf_id)


def test_graceful_cancel_lets_the_step_finish_then_compensates_in_reverse(
    make_engine: Callable[..., Engine],
) -> None:
    ledger = Ledger(block=True)
    engine = make_engine(ledger.registry)
    wf_id, worker = _start_until_c_runs(engine, ledger)

    during = engine.cancel(wf_id, by="operator")
    assert during.status is WorkflowStatus.CANCELLING
    assert during.step("c").status is StepStatus.EXECUTING
    assert ledger.done("undo") == []  # nothing is undone while c may still change the world

    wf = _finish(engine, ledger, worker, wf_id)
    assert wf.status is WorkflowStatus.COMPENSATED
    assert "d" not in ledger.done("do")  # nothing new started
    assert ledger.done("undo") == ["c", "b", "a"]  # c finished, so it is undone too, first
    assert statuses(wf) == {
        "a": "COMPENSATED",
        "b": "COMPENSATED",
        "c": "COMPENSATED",
        "d": "SKIPPED",
    }
    cancel = next(h for h in wf.history if h.trigger == "cancel")
    assert (cancel.dest, cancel.by) == ("CANCELLING", "operator")


def test_forced_cancel_compensates_at_once_and_undoes_the_late_result(
    make_engine: Callable[..., Engine],
) -> None:
    ledger = Ledger(block=True)
    engine = make_engine(ledger.registry)
    wf_id, worker = _start_until_c_runs(engine, ledger)

    during = engine.cancel(wf_id, force=True)
    assert during.status is WorkflowStatus.COMPENSATING
    # c depends on b: b is not undone while c, in flight, may still apply.
    assert during.step("b").status is StepStatus.COMPLETED
    assert during.step("d").status is StepStatus.SKIPPED

    wf = _finish(engine, ledger, worker, wf_id)  # c's late result arrives now
    assert wf.status is WorkflowStatus.COMPENSATED
    assert "d" not in ledger.done("do")  # the late result started nothing
    assert ledger.done("undo") == ["c", "b", "a"]
    assert wf.step("c").result == {"id": "c-1"}
    assert wf.step("c").compensation is not None
    assert wf.step("c").compensation.result == {"undone": "c-1"}


# -- signals and timers ---------------------------------------------------------------------------


def expense(**approval: Any) -> WorkflowDefinition:
    """examples/expense.yaml, with the approval step's wait options replaced when given."""
    data = yaml.safe_load((EXAMPLES / "expense.yaml").read_text(encoding="utf-8"))
    if approval:
        wait = next(s for s in data["steps"] if s["name"] == "approval")
        wait.pop("timeout")
        wait.update(approval)
    return load_definition(data)


def test_a_signal_completes_the_waiting_step_and_the_saga(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine()
    parked = engine.run(expense(), CLAIM)
    assert parked.status is WorkflowStatus.RUNNING and waiting_for_signal(parked)
    assert parked.step("approval").status is StepStatus.WAITING
    assert parked.step("approval").next_attempt_at is not None  # its timeout: a durable timer
    assert parked.step("pay").status is StepStatus.PENDING

    engine.signal(parked.id, "approve", {"by": "alice"}, by="alice")
    done = engine.wait(parked.id)
    assert done.status is WorkflowStatus.COMPLETED
    assert done.results["approval"] == {"by": "alice"}
    assert done.results["pay"]["approved_by"] == "alice"
    assert done.signals == {}
    taken = [(h.source, h.dest) for h in done.history if h.step == "approval"]
    assert taken == [("PENDING", "WAITING"), ("WAITING", "COMPLETED")]


def test_a_wait_timeout_fires_its_timer_and_compensates(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine()
    wf = engine.start(expense(timeout=0.05, on_timeout="fail"), CLAIM)
    done = engine.wait(wf.id, until_signal=False)  # inline runs the timer in-process
    assert done.status is WorkflowStatus.COMPENSATED
    approval = done.step("approval")
    assert approval.status is StepStatus.FAILED
    assert approval.error is not None and approval.error.type == "WaitTimeout"
    submit = done.step("submit")
    assert submit.status is StepStatus.COMPENSATED and submit.compensation is not None
    assert submit.compensation.result == {"withdrawn": submit.result["claim"]}
    assert done.step("pay").attempts == 0


def test_a_sleep_step_wakes_and_the_saga_goes_on(make_engine: Callable[..., Engine]) -> None:
    data = yaml.safe_load((EXAMPLES / "expense.yaml").read_text(encoding="utf-8"))
    data["steps"][1] = {"name": "approval", "duration": 0.05}  # a sleep instead of the wait
    data["steps"][2]["params"]["approved_by"] = "nobody"
    engine = make_engine()
    done = engine.run(load_definition(data), CLAIM)
    assert done.status is WorkflowStatus.COMPLETED
    nap = done.step("approval")
    assert nap.result["slept_until"] is not None and nap.next_attempt_at is None
    assert [h.trigger for h in done.history if h.step == "approval"] == ["schedule", "wake"]


# -- restart --------------------------------------------------------------------------------------


def test_restart_of_a_failed_saga_from_a_step_keeps_the_earlier_results(
    make_engine: Callable[..., Engine],
) -> None:
    ledger = Ledger(fail={"c": 99})  # c fails every attempt until it is fixed
    engine = make_engine(ledger.registry)
    failed = engine.run(
        saga(step("a"), step("b", comp=False, pivot=True), step("c", comp=False), step("d", False))
    )
    assert failed.status is WorkflowStatus.FAILED and failed.step("c").attempts == 3

    with pytest.raises(StateError, match="has no step 'nope'"):
        engine.restart(failed.id, "nope", reason="x")
    assert engine.get(failed.id).revision == failed.revision

    ledger.fail.clear()  # the fix is deployed
    restarted = engine.restart(failed.id, "c", reason="fixed the config", by="oncall")
    assert restarted.status is WorkflowStatus.RUNNING
    assert restarted.step("c").status is StepStatus.QUEUED and restarted.step("c").attempts == 0
    done = engine.wait(failed.id)
    assert done.status is WorkflowStatus.COMPLETED
    assert ledger.done("do") == ["a", "b", "c", "c", "c", "c", "d"]
    assert done.step("a").model_dump() == failed.step("a").model_dump()  # not run again
    assert done.results["c"] == {"id": "c-1"}  # attempts count afresh after a restart
    entry = next(h for h in done.history if h.trigger == "restart")
    assert (entry.source, entry.dest, entry.by) == ("FAILED", "RUNNING", "oncall")
    assert entry.detail == "from c: fixed the config"


# -- duplicate and stale deliveries ---------------------------------------------------------------


def test_a_duplicate_or_stale_job_delivery_does_not_double_apply(
    make_engine: Callable[..., Engine],
) -> None:
    ledger = Ledger()
    engine = make_engine(ledger.registry)
    wf = engine.start(saga(step("a"), step("b")))
    assert wf.step("a").status is StepStatus.QUEUED  # its job waits in the queue
    job = Job(kind="step", workflow_id=wf.id, step="a", attempt=1)
    engine.run_job(job)  # delivered once here ...
    after_first = engine.get(wf.id)
    engine.run_job(job)  # ... and again: a duplicate
    assert engine.get(wf.id).revision == after_first.revision
    final = engine.wait(wf.id)  # ... and a third time: the queue's own copy
    assert final.status is WorkflowStatus.COMPLETED
    assert ledger.done("do") == ["a", "b"]

    revision = final.revision
    engine.run_job(job)  # replayed after the end
    engine.run_job(Job(kind="step", workflow_id=wf.id, step="b", attempt=7))  # wrong token
    engine.run_job(Job(kind="compensation", workflow_id=wf.id, step="a", attempt=1))
    engine.run_job(Job(kind="timer", workflow_id=wf.id, step="a", attempt=1))
    assert engine.get(wf.id).revision == revision
    assert ledger.done("do") == ["a", "b"] and ledger.done("undo") == []


# -- illegal commands -----------------------------------------------------------------------------


def test_an_illegal_command_changes_nothing_and_names_the_allowed_triggers(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine()
    parked = engine.run(expense(), CLAIM)
    with pytest.raises(TransitionError) as caught:
        engine.start_stored(parked.id)  # it runs already
    assert caught.value.state == "RUNNING" and caught.value.trigger == "start"
    assert {"cancel", "signal", "suspend"} <= set(caught.value.allowed)
    assert "allowed triggers: " in str(caught.value)
    with pytest.raises(StateError, match="no step waits for the signal 'reject'.*approve"):
        engine.signal(parked.id, "reject")
    assert engine.get(parked.id).model_dump() == parked.model_dump()

    engine.signal(parked.id, "approve", {"by": "alice"})
    done = engine.wait(parked.id)
    for command in (engine.resume, engine.suspend):
        with pytest.raises(TransitionError, match="allowed triggers: none \\(final state\\)"):
            command(done.id)
    for force in (False, True):
        with pytest.raises(StateError, match="already COMPLETED; nothing to cancel"):
            engine.cancel(done.id, force=force)
    assert engine.get(done.id).model_dump() == done.model_dump()


# -- a subset on RQ (real Redis, an in-process RQ worker) -----------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("fail_at", [None, "reserve_car"])
def test_on_rq_a_saga_completes_or_compensates(
    make_engine: Callable[..., Engine], redis_url: str, fail_at: str | None
) -> None:
    from statesaga.adapters.queues.rq.queue import RQQueue
    from statesaga.adapters.queues.rq.worker import make_rq_worker
    from statesaga.worker import serving

    url = redis_url.replace("redis://", "rq://", 1) + f"?queue=matrix-{uuid.uuid4().hex[:8]}"
    queue = RQQueue.from_url(url)
    engine = make_engine(queue=queue)
    # A refused booking is not retried (non_retryable), so no job waits for a delay.
    wf = engine.start(
        load_definition(EXAMPLES / "trip.yaml"),
        {**TRIP, **({"fail_at": fail_at} if fail_at else {})},
    )
    with serving(engine.run_job):
        make_rq_worker(queue.rq_queue).work(burst=True, logging_level="WARNING")
    done = engine.get(wf.id)
    if fail_at is None:
        assert done.status is WorkflowStatus.COMPLETED
        assert done.results["send_confirmation"] == {"sent_to": "a@b.c"}
    else:
        assert done.status is WorkflowStatus.COMPENSATED
        assert statuses(done) == {
            "reserve_flight": "COMPENSATED",
            "reserve_hotel": "COMPENSATED",
            "reserve_car": "FAILED",
            "charge_payment": "SKIPPED",
            "send_confirmation": "SKIPPED",
        }
        undone = [h.step for h in done.history if h.chart == "step" and h.trigger == "compensated"]
        assert undone == ["reserve_hotel", "reserve_flight"]
    queue.close()
