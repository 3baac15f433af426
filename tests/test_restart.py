"""Restart from a chosen step: a workflow that ended FAILED (a step after the pivot kept
failing) is run again after the fix, keeping the results of the steps before the chosen one;
the history says who restarted it, from where and why. FAILED stays a halted state: waiting
returns there and cancelling it is still refused."""

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
from statesaga.errors import StateError

DEFINITION = {
    "workflow": "shipping",
    "defaults": {"retry": {"max_attempts": 2, "initial_interval": 0.01}},
    "steps": [
        {"name": "reserve", "action": "reserve", "compensation": "release"},
        {"name": "charge", "action": "charge", "pivot": True},
        {"name": "ship", "action": "ship", "params": {"ref": "${steps.reserve.ref}"}},
        {"name": "notify", "action": "notify"},
    ],
}


class Shop:
    """`ship` fails until the flag file exists (the "fix" an operator deploys)."""

    def __init__(self, tmp_path: Path) -> None:
        self.flag = tmp_path / "fixed"
        self.calls: list[str] = []
        reg = Registry()
        reg.register_handler("reserve", self._ok("reserve", {"ref": "R-1"}))
        reg.register_handler("release", self._ok("release", {}))
        reg.register_handler("charge", self._ok("charge", {"receipt": "C-1"}))
        reg.register_handler("ship", self._ship)
        reg.register_handler("notify", self._ok("notify", {"sent": True}))
        self.store = SQLiteStore(tmp_path / "shop.db")
        self.engine = Engine(self.store, InlineQueue(), reg, heartbeat_interval=0)

    def _ok(self, name: str, result: dict[str, Any]) -> Any:
        def handler(ctx: StepContext) -> dict[str, Any]:
            self.calls.append(name)
            return result

        return handler

    def _ship(self, ctx: StepContext) -> dict[str, Any]:
        self.calls.append("ship")
        if not self.flag.exists():
            raise RuntimeError("label printer misconfigured")
        return {"tracking": f"T-{ctx.params['ref']}"}


def failed_run(shop: Shop) -> Any:
    wf = shop.engine.run(load_definition(DEFINITION))
    assert wf.status is WorkflowStatus.FAILED  # past the pivot: nothing is undone
    assert wf.step("ship").status is StepStatus.FAILED and wf.finished_at is not None
    return wf


def test_restart_from_a_step_after_the_fix_keeps_earlier_results(tmp_path: Path) -> None:
    shop = Shop(tmp_path)
    failed = failed_run(shop)
    assert shop.calls == ["reserve", "charge", "ship", "ship"]
    reserve, charge = failed.step("reserve"), failed.step("charge")
    old_comp_id = reserve.compensation.id if reserve.compensation else None

    shop.flag.touch()
    restarted = shop.engine.restart(
        failed.id, "ship", reason="fixed the printer config", by="oncall"
    )
    assert restarted.status is WorkflowStatus.RUNNING
    assert restarted.step("ship").status is StepStatus.QUEUED
    assert restarted.step("ship").attempts == 0 and restarted.step("ship").error is None
    assert restarted.error is None and restarted.finished_at is None

    done = shop.engine.wait(failed.id)
    assert done.status is WorkflowStatus.COMPLETED
    assert shop.calls == ["reserve", "charge", "ship", "ship", "ship", "notify"]
    assert done.results["ship"] == {"tracking": "T-R-1"}
    # The steps before `ship` were not run again: same results, same attempts, same undo.
    assert done.step("reserve").model_dump() == reserve.model_dump()
    assert done.step("charge").model_dump() == charge.model_dump()
    assert done.step("reserve").compensation is not None
    assert done.step("reserve").compensation.id == old_comp_id
    entry = next(h for h in done.history if h.trigger == "restart")
    assert (entry.source, entry.dest, entry.by) == ("FAILED", "RUNNING", "oncall")
    assert entry.detail == "from ship: fixed the printer config"


def test_a_reset_step_gets_a_new_compensation_id(tmp_path: Path) -> None:
    shop = Shop(tmp_path)
    failed = failed_run(shop)
    # Restarting from the first step re-runs everything (the pivot too: the operator's call).
    shop.flag.touch()
    old = failed.step("reserve").compensation
    restarted = shop.engine.restart(failed.id, "reserve", reason="redo it all", by="oncall")
    new = restarted.step("reserve").compensation
    assert old is not None and new is not None
    assert new.id != old.id and new.action_type == old.action_type and new.attempts == 0
    assert restarted.results == {}
    assert shop.engine.wait(failed.id).status is WorkflowStatus.COMPLETED


def test_failed_is_halted_restart_is_refused_where_it_makes_no_sense(tmp_path: Path) -> None:
    shop = Shop(tmp_path)
    failed = failed_run(shop)
    with pytest.raises(StateError, match="already FAILED; nothing to cancel"):
        shop.engine.cancel(failed.id)
    with pytest.raises(StateError, match="has no step 'nope'"):
        shop.engine.restart(failed.id, "nope", reason="x", by="me")
    with pytest.raises(StateError, match="needs a reason"):
        shop.engine.restart(failed.id, "ship", reason=" ", by="me")
    assert shop.store.get(failed.id).revision == failed.revision

    shop.flag.touch()
    shop.engine.restart(failed.id, "ship", reason="fixed", by="me")
    done = shop.engine.wait(failed.id)
    with pytest.raises(StateError, match="is COMPLETED; only a FAILED workflow can be restarted"):
        shop.engine.restart(done.id, "ship", reason="again", by="me")


def test_restart_needs_the_steps_before_it_completed(tmp_path: Path) -> None:
    """A workflow FAILED because a compensation failed has undone steps: their results are
    gone, so a restart must start at or before the first of them."""
    reg = Registry()
    reg.register_handler("a", lambda ctx: {"a": 1})
    reg.register_handler("undo_a", lambda ctx: (_ for _ in ()).throw(RuntimeError("stuck")))
    reg.register_handler("b", lambda ctx: (_ for _ in ()).throw(ValueError("bad")))
    engine = Engine(SQLiteStore(tmp_path / "x.db"), InlineQueue(), reg, heartbeat_interval=0)
    d = load_definition(
        {
            "workflow": "x",
            "defaults": {
                "retry": {"max_attempts": 1},
                "compensation_retry": {"max_attempts": 1},
            },
            "steps": [
                {"name": "a", "action": "a", "compensation": "undo_a"},
                {"name": "b", "action": "b"},
            ],
        }
    )
    wf = engine.run(d)
    assert wf.status is WorkflowStatus.FAILED
    assert wf.step("a").status is StepStatus.COMPENSATION_FAILED
    with pytest.raises(StateError, match="step 'a' before 'b' is COMPENSATION_FAILED"):
        engine.restart(wf.id, "b", reason="x", by="me")


@pytest.mark.slow
def test_restart_from_the_command_line_after_a_fix(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "fixme_handlers.py").write_text(
        "from pathlib import Path\n"
        "from statesaga.registry import handler\n\n"
        "@handler()\ndef pay(ctx):\n    return {'paid': True}\n\n"
        "@handler()\ndef ship(ctx):\n"
        "    if not Path('fixed').exists():\n        raise RuntimeError('label printer bug')\n"
        "    return {'shipped': True}\n",
        encoding="utf-8",
    )
    (tmp_path / "order.yaml").write_text(
        "workflow: order\nhandlers: fixme_handlers\n"
        "defaults: {retry: {max_attempts: 1}}\n"
        "steps:\n  - {name: pay, action: pay, pivot: true}\n  - {name: ship, action: ship}\n",
        encoding="utf-8",
    )
    store = f"sqlite:///{tmp_path / 'o.db'}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(tmp_path)}
        return subprocess.run(
            [sys.executable, "-m", "statesaga.cli", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
        )

    # The definition's `handlers:` is only a hint: the operator allows the module.
    run = cli("run", "order.yaml", "--store", store, "--json", "--handlers", "fixme_handlers")
    assert run.returncode == 1
    doc = json.loads(run.stdout)
    assert doc["status"] == "FAILED"
    (tmp_path / "fixed").write_text("yes", encoding="utf-8")
    res = cli(
        "restart",
        doc["id"],
        "--from",
        "ship",
        "--reason",
        "fixed the printer",
        "--by",
        "ops",
        "--store",
        store,
        "--handlers",
        "fixme_handlers",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    from statesaga.adapters.stores.sqlite import SQLiteStore

    final = SQLiteStore(tmp_path / "o.db").get(doc["id"])
    assert final.status.value == "COMPLETED"
    assert final.step("pay").attempts == 1  # kept, not re-run
    entry = next(h for h in final.history if h.trigger == "restart")
    assert entry.by == "ops" and "fixed the printer" in (entry.detail or "")
