"""Definition versions: instances keep running on the version they started with, and
`check-upgrade` reports, for each in-flight instance of an older version, whether it could
continue under a new one (its current step exists, its completed steps keep their
compensations), on a real SQLite store holding instances of two versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from statesaga import StepStatus, WorkflowStatus
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.cli import main
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.versions import check_upgrade

EXAMPLE = Path(__file__).parent.parent / "examples" / "expense.yaml"
CLAIM = {"employee": "bob", "amount": 120}


def version(n: int, change: Any = None) -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["version"] = n
    if change is not None:
        change(data)
    return data


def step(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in data["steps"] if s["name"] == name)


def populate(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """v1: one parked at the approval, one finished; v2: one parked at the approval."""
    db = tmp_path / "versions.db"
    engine = Engine(SQLiteStore(db), InlineQueue(), heartbeat_interval=0)
    v1 = load_definition(version(1))
    v2 = load_definition(version(2))
    ids = {
        "v1_waiting": engine.run(v1, CLAIM).id,
        "v1_done": engine.run(v1, CLAIM).id,
        "v2_waiting": engine.run(v2, CLAIM).id,
    }
    engine.signal(ids["v1_done"], "approve", {"by": "alice"})
    assert engine.wait(ids["v1_done"]).status is WorkflowStatus.COMPLETED
    # Instances keep the version they started with, and their own step specs.
    assert engine.get(ids["v1_waiting"]).version == "1"
    assert engine.get(ids["v2_waiting"]).version == "2"
    return db, ids


def test_compatible_new_version_lets_every_older_instance_continue(tmp_path: Path) -> None:
    db, ids = populate(tmp_path)
    v3 = load_definition(version(3, lambda d: step(d, "notify")["params"].update(cc="hr")))
    checks = check_upgrade(SQLiteStore(db), v3)
    # Every in-flight instance on another version, the finished one left out.
    assert [c.workflow_id for c in checks] == [ids["v1_waiting"], ids["v2_waiting"]]
    assert all(c.ok for c in checks)
    assert checks[0].current == ("approval",) and checks[0].status == "RUNNING"


def test_instances_that_cannot_continue_are_listed_with_the_reason(tmp_path: Path) -> None:
    db, ids = populate(tmp_path)

    def incompatible(d: dict[str, Any]) -> None:
        step(d, "approval")["name"] = "manager_approval"  # the current step disappears
        step(d, "submit")["compensation"]["params"] = {"claim": "${result.claim}", "why": "x"}
        step(d, "pay")["params"]["approved_by"] = "${steps.manager_approval.by}"

    new = load_definition(version(2, incompatible))
    (check,) = check_upgrade(SQLiteStore(db), new)  # the v2 instance runs v2 already
    assert check.workflow_id == ids["v1_waiting"] and not check.ok
    assert check.problems == (
        "its current step 'approval' is not in version 2",
        "completed step 'submit': the params of compensation 'withdraw_claim' changed",
    )


def test_check_upgrade_command_exits_1_when_an_instance_cannot_continue(tmp_path: Path) -> None:
    db, ids = populate(tmp_path)
    store = f"sqlite:///{db}"
    new = tmp_path / "expense-v3.yaml"

    def removed(d: dict[str, Any]) -> None:
        step(d, "submit")["compensation"]["action"] = "archive_claim"

    new.write_text(yaml.safe_dump(version(3, removed)), encoding="utf-8")
    result = CliRunner().invoke(main, ["check-upgrade", str(new), "--store", store])
    assert result.exit_code == 1, result.output
    assert f"{ids['v1_waiting']} v1 RUNNING at approval: CANNOT continue" in result.output
    assert "compensation 'withdraw_claim' became 'archive_claim'" in result.output
    assert "2 in-flight instances of expense_claim on other versions; 2 cannot" in result.output

    same = tmp_path / "expense-v3-ok.yaml"
    same.write_text(yaml.safe_dump(version(3)), encoding="utf-8")
    ok = CliRunner().invoke(main, ["check-upgrade", str(same), "--store", store, "--json"])
    assert ok.exit_code == 0, ok.output
    rows = [json.loads(line) for line in ok.output.splitlines()]
    assert [r["workflow_id"] for r in rows] == [ids["v1_waiting"], ids["v2_waiting"]]
    assert all(r["ok"] and r["current"] == ["approval"] for r in rows)
    assert SQLiteStore(db).get(ids["v1_waiting"]).step("approval").status is StepStatus.WAITING


def test_an_in_doubt_step_s_changed_compensation_is_reported(tmp_path: Path) -> None:
    """A step whose last attempt's outcome is unknown is undone like a completed one, so a new
    version that changes its compensation is reported for it too."""
    from statesaga.versions import check_instance

    db, ids = populate(tmp_path)
    wf = SQLiteStore(db).get(ids["v1_waiting"])
    submit = wf.step("submit")
    assert submit.status is StepStatus.COMPLETED and submit.compensation is not None
    submit.status = StepStatus.IN_DOUBT
    new = load_definition(
        version(
            2,
            lambda d: step(d, "submit")["compensation"].update(
                params={"claim": "${result.claim}", "why": "x"}
            ),
        )
    )
    check = check_instance(wf, new)
    assert check.problems == (
        "in-doubt step 'submit': the params of compensation 'withdraw_claim' changed",
    )
