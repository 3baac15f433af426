"""Cancel: graceful (the step in flight finishes, nothing new starts, completed steps are undone
in reverse), forced (compensate at once; the in-flight step's late result is undone too, and
starts nothing), and the clear refusal to cancel a finished workflow (API and CLI)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from statesaga import Registry, StepStatus, WorkflowStatus
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.context import StepContext
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.errors import StateError

WAIT = 30  # seconds a blocked handler waits at most: a safety net, not a measurement


class Saga:
    """Steps a..d; step `c` blocks inside its handler until released, so a test can act
    while it is in flight. Every call is recorded in order."""

    def __init__(self, tmp_path: Path) -> None:
        self.calls: list[tuple[str, str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        reg = Registry()
        for name in "abcd":
            reg.register_handler(f"do_{name}", self._do(name))
            reg.register_handler(f"undo_{name}", self._undo(name))
        self.engine = Engine(
            SQLiteStore(tmp_path / "cancel.db"), InlineQueue(), reg, heartbeat_interval=0
        )
        self.definition = load_definition(
            {
                "workflow": "cancel_me",
                "defaults": {"retry": {"max_attempts": 2, "initial_interval": 0.01}},
                "steps": [
                    {
                        "name": n,
                        "action": f"do_{n}",
                        "compensation": {"action": f"undo_{n}", "params": {"ref": "${result.ref}"}},
                    }
                    for n in "abcd"
                ],
            }
        )
        self.worker: threading.Thread | None = None

    def _do(self, name: str) -> Any:
        def handler(ctx: StepContext) -> dict[str, str]:
            self.calls.append(("do", name))
            if name == "c":
                self.entered.set()
                assert self.release.wait(WAIT), "the test never released step c"
            return {"ref": f"{name}-{ctx.attempt}"}

        return handler

    def _undo(self, name: str) -> Any:
        def handler(ctx: StepContext) -> dict[str, str]:
            self.calls.append(("undo", name))
            return {"undone": str(ctx.params["ref"])}

        return handler

    def start_until_c_runs(self) -> str:
        """Start the saga; a worker thread runs it and is stopped inside step c."""
        wf = self.engine.start(self.definition)
        self.worker = threading.Thread(target=self.engine.queue.drain, daemon=True)
        self.worker.start()
        assert self.entered.wait(WAIT), "step c never started"
        return wf.id

    def finish(self) -> None:
        self.release.set()
        assert self.worker is not None
        self.worker.join(WAIT)
        assert not self.worker.is_alive()
        # Jobs enqueued by the cancel itself (from this thread) are run here.
        self.engine.queue.drain()

    def undone(self) -> list[str]:
        return [name for kind, name in self.calls if kind == "undo"]


@pytest.fixture
def saga(tmp_path: Path) -> Saga:
    return Saga(tmp_path)


def test_graceful_cancel_lets_the_step_finish_then_undoes_in_reverse(saga: Saga) -> None:
    wf_id = saga.start_until_c_runs()

    during = saga.engine.cancel(wf_id)
    assert during.status is WorkflowStatus.CANCELLING
    assert during.step("c").status is StepStatus.EXECUTING
    assert saga.undone() == []  # nothing is undone while c may still change the world

    saga.finish()
    wf = saga.engine.get(wf_id)
    assert wf.status is WorkflowStatus.COMPENSATED
    assert ("do", "d") not in saga.calls  # nothing new started
    assert saga.undone() == ["c", "b", "a"]  # c finished, so it is undone too, first
    assert {s.name: s.status for s in wf.steps} == {
        "a": StepStatus.COMPENSATED,
        "b": StepStatus.COMPENSATED,
        "c": StepStatus.COMPENSATED,
        "d": StepStatus.SKIPPED,
    }
    assert wf.step("c").compensation is not None
    assert wf.step("c").compensation.result == {"undone": "c-1"}
    triggers = [(h.trigger, h.dest) for h in wf.history if h.chart == "workflow"]
    assert ("cancel", "CANCELLING") in triggers
    assert ("advance", "COMPENSATING") in triggers


def test_forced_cancel_compensates_at_once_and_undoes_the_late_result(saga: Saga) -> None:
    wf_id = saga.start_until_c_runs()

    during = saga.engine.cancel(wf_id, force=True)
    assert during.status is WorkflowStatus.COMPENSATING
    # c depends on b: b is not undone while c, in flight, may still apply (issue 15, defect 8;
    # before it, b was undone at once, before the later step that depends on it).
    assert during.step("b").status is StepStatus.COMPLETED
    assert during.step("d").status is StepStatus.SKIPPED

    saga.finish()  # c's late result arrives now
    wf = saga.engine.get(wf_id)
    assert wf.status is WorkflowStatus.COMPENSATED
    assert ("do", "d") not in saga.calls  # the late result started nothing
    assert saga.undone() == ["c", "b", "a"]  # reverse dependency order
    assert wf.step("c").status is StepStatus.COMPENSATED
    assert wf.step("c").result == {"ref": "c-1"}
    assert wf.step("c").compensation is not None
    assert wf.step("c").compensation.result == {"undone": "c-1"}


def test_cancel_of_a_queued_step_starts_nothing(saga: Saga) -> None:
    wf = saga.engine.start(saga.definition)  # step a is queued, nobody runs it yet
    cancelled = saga.engine.cancel(wf.id)
    assert cancelled.status is WorkflowStatus.COMPENSATED
    saga.engine.queue.drain()  # the queued job of a is stale now
    assert saga.calls == []


def test_cancelling_a_finished_workflow_is_an_error_and_changes_nothing(saga: Saga) -> None:
    saga.release.set()
    wf = saga.engine.run(saga.definition)
    assert wf.status is WorkflowStatus.COMPLETED
    with pytest.raises(StateError, match="already COMPLETED"):
        saga.engine.cancel(wf.id)
    with pytest.raises(StateError, match="already COMPLETED"):
        saga.engine.cancel(wf.id, force=True)
    after = saga.engine.get(wf.id)
    assert after.revision == wf.revision
    assert after.model_dump() == wf.model_dump()


def test_cli_cancel_of_a_finished_workflow_exits_1_with_a_clear_message(
    saga: Saga, tmp_path: Path
) -> None:
    saga.release.set()
    wf = saga.engine.run(saga.definition)
    url = f"sqlite:///{tmp_path / 'cancel.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", "cancel", wf.id, "--store", url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert f"{wf.id} is already COMPLETED; nothing to cancel" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert saga.engine.get(wf.id).revision == wf.revision
