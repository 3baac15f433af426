"""`recover` and `cancel` through the CLI: without a queue URL they would run the jobs they
re-enqueue in this process (inline://), so they refuse unless the handlers are allowed here;
and a command whose workflow ends FAILED exits 1."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from statesaga import Registry, StepStatus, WorkflowStatus
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.cli import main
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.security.allowlist import AllowList
from statesaga.verify.crashcheck import LEDGER_ENV, Ledger, check_ledger

HANDLERS = "ops_handlers"


@pytest.fixture(autouse=True)
def _ops_handlers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No queue from the environment (conftest makes `ops_handlers` importable by name)."""
    monkeypatch.delenv("STATESAGA_QUEUE", raising=False)
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / "ledger.jsonl"))
    yield


def _saga(tmp_path: Path, broken_undo: bool = False) -> Any:
    data = sys.modules[HANDLERS].chaos_saga(retry_interval=0.01)
    if broken_undo:
        data["steps"][1]["compensation"] = {
            "action": "undo_broken",
            "retry": {"max_attempts": 2, "initial_interval": 0.01},
        }
    path = tmp_path / "chaos.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_definition(path)


def _half_run(tmp_path: Path, definition: Any, until_step: str) -> tuple[str, str]:
    """Start a workflow and run its jobs in this process until `until_step` completed; the
    rest of its jobs vanish with this engine, as with a killed worker."""
    db = tmp_path / "s.db"
    reg = Registry()
    reg.register_module(HANDLERS)
    # Step by step (no eager dispatch), so the run can stop after `until_step`.
    engine = Engine(
        SQLiteStore(db),
        InlineQueue(),
        reg,
        heartbeat_interval=0,
        allowed=AllowList.of([HANDLERS]),
        eager=False,
    )
    wf = engine.start(definition, {})
    engine.queue.drain(
        lambda: engine.get(wf.id).step(until_step).status is StepStatus.COMPLETED, 30
    )
    engine.store.close()
    return wf.id, f"sqlite:///{db}"


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_recover_without_a_queue_refuses_to_run_jobs_without_their_handlers(
    tmp_path: Path,
) -> None:
    wf_id, store = _half_run(tmp_path, _saga(tmp_path), "hold_inventory")
    before = SQLiteStore(tmp_path / "s.db").get(wf_id)

    out = _cli("recover", "--timeout", "0", "--store", store)
    assert out.exit_code == 2
    assert "inline queue" in out.output and "needs the handlers" in out.output
    assert "--handlers ops_handlers" in out.output and "--queue rq://" in out.output
    after = SQLiteStore(tmp_path / "s.db").get(wf_id)
    assert after.revision == before.revision  # nothing recovered, nothing run

    out = _cli("recover", "--timeout", "0", "--store", store, "--handlers", HANDLERS)
    assert out.exit_code == 0, out.output
    assert f"resumed {wf_id}" in out.output
    final = SQLiteStore(tmp_path / "s.db").get(wf_id)
    assert final.status is WorkflowStatus.COMPLETED
    assert check_ledger(Ledger(tmp_path / "ledger.jsonl").records(), [final]) == []


def test_recover_every_refuses_too(tmp_path: Path) -> None:
    wf_id, store = _half_run(tmp_path, _saga(tmp_path), "hold_inventory")
    out = _cli("recover", "--every", "1", "--timeout", "0", "--store", store)
    assert out.exit_code == 2
    assert "--handlers ops_handlers" in out.output
    assert SQLiteStore(tmp_path / "s.db").get(wf_id).status is WorkflowStatus.RUNNING


def test_forced_cancel_without_a_queue_refuses_and_changes_nothing(tmp_path: Path) -> None:
    wf_id, store = _half_run(tmp_path, _saga(tmp_path), "reserve_budget")
    before = SQLiteStore(tmp_path / "s.db").get(wf_id)
    out = _cli("cancel", wf_id, "--force", "--store", store)
    assert out.exit_code == 2
    assert "needs the handlers" in out.output and "release" in out.output
    assert SQLiteStore(tmp_path / "s.db").get(wf_id).revision == before.revision

    out = _cli("cancel", wf_id, "--force", "--store", store, "--handlers", HANDLERS)
    assert out.exit_code == 0, out.output
    final = SQLiteStore(tmp_path / "s.db").get(wf_id)
    assert final.status is WorkflowStatus.COMPENSATED
    records = Ledger(tmp_path / "ledger.jsonl").records()
    assert {r.step for r in records if r.op == "undo"} == {"hold_inventory", "reserve_budget"}
    assert check_ledger(records, [final]) == []


def test_a_cancel_that_ends_failed_exits_1(tmp_path: Path) -> None:
    wf_id, store = _half_run(tmp_path, _saga(tmp_path, broken_undo=True), "reserve_budget")
    out = _cli("cancel", wf_id, "--force", "--store", store, "--handlers", HANDLERS)
    final = SQLiteStore(tmp_path / "s.db").get(wf_id)
    assert final.status is WorkflowStatus.FAILED
    assert out.exit_code == 1, out.output
    assert f"{wf_id} FAILED" in out.output


def test_cancel_of_an_ended_workflow_still_says_why(tmp_path: Path) -> None:
    definition = _saga(tmp_path)
    wf_id, store = _half_run(tmp_path, definition, "archive")
    out = _cli("cancel", wf_id, "--store", store)
    assert out.exit_code == 1
    assert "already COMPLETED" in out.output


def test_a_recovery_that_ends_failed_exits_1(tmp_path: Path) -> None:
    wf_id, store = _half_run(tmp_path, _saga(tmp_path, broken_undo=True), "reserve_budget")
    out = _cli("recover", "--cancel", "--timeout", "0", "--store", store, "--handlers", HANDLERS)
    assert f"cancelled {wf_id}" in out.output
    assert SQLiteStore(tmp_path / "s.db").get(wf_id).status is WorkflowStatus.FAILED
    assert out.exit_code == 1 and f"{wf_id} FAILED" in out.output
