"""Upgrading from the release before the tree's split (d7f3d36): what a user's code, command
lines and deployments named then still works, or fails with one line saying where it went."""

from __future__ import annotations

import importlib
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from statesaga._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_python_dash_m_finds_a_moved_module(old: str) -> None:
    """`python -m statesaga.crashcheck` (a command line of the previous release) runs what
    `python -m` of the new name runs; runpy needs the module's code, not only the module.
    A `python -m` process has not imported the old name yet; nor has this test."""
    sys.modules.pop(old, None)
    runpy.run_module(old, run_name="not_main")


@pytest.mark.parametrize("old", sorted(MOVED))
def test_importing_an_old_name_leaves_the_module_its_own_spec(old: str) -> None:
    """The import system stamps the spec it imported by onto the module: the old name's alias
    spec would replace the module's own, and runpy, reload and pickling by name follow it.
    (Not reloaded here: a reload would leave the other modules' classes behind.)"""
    importlib.import_module(old)
    new = importlib.import_module(MOVED[old])
    assert new.__spec__ is not None and new.__spec__.name == MOVED[old]


def test_python_dash_m_crashcheck_runs_the_crash_worker() -> None:
    old = subprocess.run(
        [sys.executable, "-P", "-m", "statesaga.crashcheck", "not json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert old.returncode == 1
    assert "JSONDecodeError" in old.stderr.splitlines()[-1]


def test_the_job_guard_keeps_its_old_module_path() -> None:
    """The previous README named `statesaga.jobguard`; a deployment may name its classes."""
    old = importlib.import_module("statesaga.jobguard")
    assert old is importlib.import_module("statesaga.adapters.queues.rq.jobguard")
    assert {"GuardedWorker", "StatesagaJob", "refusal"} <= set(vars(old))


@pytest.mark.parametrize(
    ("module", "name", "now"),
    [
        ("statesaga.worker", "make_rq_worker", "statesaga.adapters.queues.rq.worker"),
        ("statesaga.models", "ACTIVE_WORKFLOW", "statesaga.vocabulary.WORKFLOW_IN_FLIGHT"),
        ("statesaga.models", "IN_FLIGHT_STEP", "statesaga.vocabulary.STEP_IN_FLIGHT"),
    ],
)
def test_a_public_name_that_moved_says_where_it_is(module: str, name: str, now: str) -> None:
    with pytest.raises(ImportError, match=now.replace(".", r"\.")):
        exec(f"from {module} import {name}", {})


UPGRADE = Path(__file__).parent / "upgrade"


@pytest.mark.slow
def test_a_document_and_a_queued_job_of_the_previous_release_run_to_the_end(
    redis_url: str, tmp_path: Path
) -> None:
    """Saved by d7f3d36's `statesaga run examples/trip.yaml --queue rq://...` before any worker
    took its first step: the document (RUNNING, reserve_flight QUEUED) and the RQ job's
    serialized call, as Redis held them. Both go back where they were (a SQLite store, an RQ
    queue on a real Redis) and today's `statesaga worker` runs the saga to the end."""
    from redis import Redis
    from rq import Queue
    from rq.serializers import JSONSerializer
    from statesaga.adapters.stores.sqlite import SQLiteStore
    from statesaga.models import WorkflowState, WorkflowStatus
    from statesaga.worker import JOB_FUNCTION

    doc = WorkflowState.model_validate_json((UPGRADE / "d7f3d36_trip_running.json").read_text())
    function, _, args, kwargs = json.loads((UPGRADE / "d7f3d36_rq_job.json").read_text())
    assert function == JOB_FUNCTION and not kwargs
    db = tmp_path / "old.db"
    store = SQLiteStore(db)
    store.create(doc)
    name = f"upgrade-{doc.id}"
    connection = Redis.from_url(redis_url)
    Queue(name, connection=connection, serializer=JSONSerializer).enqueue_call(function, args=args)
    queue_url = redis_url.replace("redis://", "rq://", 1) + f"?queue={name}"
    res = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", "worker", "--burst", "--queue", queue_url,
         "--store", f"sqlite:///{db}", "--handlers", "statesaga.examples.trip_handlers"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    done = store.get(doc.id)
    assert done.status is WorkflowStatus.COMPLETED, done.status
    assert set(done.results) == {s.name for s in done.steps}
    connection.close()
    store.close()


@pytest.mark.slow
def test_a_step_lifecycle_copied_from_the_previous_release_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    """A copy of d7f3d36's step.yaml lacks the tags the engine reads since. `validate` and `run`
    refuse it alike, one line per missing tag naming the chart's file, and `run` stores
    nothing (README, "Statecharts": what an upgrade adds to such a copy)."""
    chart = tmp_path / "my_step.yaml"
    chart.write_text((UPGRADE / "d7f3d36_step_copy.yaml").read_text())
    trip = (Path(__file__).parent.parent / "examples" / "trip.yaml").read_text()
    saga = tmp_path / "trip.yaml"
    saga.write_text(trip.replace("\nstrategy:", "\nstep_lifecycle: my_step.yaml\nstrategy:", 1))
    db = tmp_path / "db.sqlite"
    trip_input = {"origin": "A", "destination": "B", "nights": 1, "amount": 1, "email": "a@b.c"}
    for args in (
        ["validate", str(saga)],
        ["run", str(saga), "--input", json.dumps(trip_input), "--store", f"sqlite:///{db}"],
    ):
        res = subprocess.run(
            [sys.executable, "-P", "-m", "statesaga.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 1, args
        out = res.stdout + res.stderr
        lines = out.splitlines()
        assert len(lines) == 3, lines
        assert all(line.startswith(f"{chart}: ") for line in lines), lines
        assert [t for t in ("'in_flight'", "'undoing'", "'gave_up'") if t in out] == [
            "'in_flight'",
            "'undoing'",
            "'gave_up'",
        ]
    assert not db.exists()


def test_log_lines_keep_their_logger_names() -> None:
    """Operators filter and alert on logger names (`statesaga.recovery: resumed ...`, a level
    set on `statesaga.outage`): a module that moved keeps the name it logged under."""
    import re

    root = Path(__file__).parent.parent
    names = {
        m.group(1)
        for folder in ("framework", "adapters")
        for path in (root / folder).rglob("*.py")
        for m in re.finditer(r'getLogger\("([^"]+)"\)', path.read_text("utf-8"))
    }
    before = {
        "statesaga",
        "statesaga.redis_store",
        "statesaga.steps",
        "statesaga.store",
        "statesaga.web",
        "statesaga.engine",
        "statesaga.events",
        "statesaga.heartbeat",
        "statesaga.managers",
        "statesaga.otel",
        "statesaga.outage",
        "statesaga.recovery",
        "statesaga.supervisor",
        "statesaga.telemetry",
        "statesaga.worker",
    }
    assert before <= names, sorted(before - names)
