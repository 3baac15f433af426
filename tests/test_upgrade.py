"""Upgrading from the release before the tree's split (d7f3d36): what stored data and running
deployments name still works (stored documents, queued RQ jobs, the command lines, logger
names), and what moved is listed in CHANGELOG.md, old path gone and new path there.

(rewrite-imports: keep: this file names old module paths on purpose.)"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def load_yaml(path: Path) -> object:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def moved_table() -> list[tuple[str, str]]:
    """Every `| `old` | `new` |` row of CHANGELOG.md's moved tables."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return re.findall(r"^\| `(statesaga[\w.]*)` \| `(statesaga[\w.]*)` \|$", text, re.M)


def resolve(path: str) -> object:
    """The module, or the module's attribute, a dotted path names (AttributeError /
    ModuleNotFoundError when it names nothing)."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name != path:
            raise
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)


def test_the_changelog_lists_the_moves_of_the_last_releases() -> None:
    """The 23 module paths of 0.1.0 that an import hook kept alive, the names that left their
    module, definition.py's split and the adapters' grouping: all in the table."""
    table = dict(moved_table())
    assert len(table) == len(moved_table())  # an old path is listed once
    assert {"statesaga.managers", "statesaga.crashcheck", "statesaga.jobguard"} <= set(table)
    assert {"statesaga.definition", "statesaga.adapters.redis_store"} <= set(table)
    assert table["statesaga.adapters._store"] == "statesaga.adapters.stores.document"
    assert len(table) >= 23 + 3 + 15


@pytest.mark.parametrize(("old", "new"), moved_table())
def test_a_moved_path_is_gone_and_its_new_path_is_there(old: str, new: str) -> None:
    """Nothing keeps an old path alive (no alias that would make two names of one module):
    it fails as any unknown module does, and the table's new path is what the old one was."""
    assert resolve(new) is not None
    with pytest.raises((ModuleNotFoundError, AttributeError, ImportError)):
        resolve(old)


def test_the_rq_job_function_keeps_its_name() -> None:
    """Every RQ job ever enqueued calls `statesaga.worker.run_job` by name, and the job guard
    accepts no other function: that name never moves."""
    from statesaga import worker
    from statesaga.worker import JOB_FUNCTION

    assert JOB_FUNCTION == "statesaga.worker.run_job"
    module, _, name = JOB_FUNCTION.rpartition(".")
    assert importlib.import_module(module) is worker and callable(getattr(worker, name))
    stored = json.loads((UPGRADE / "d7f3d36_rq_job.json").read_text())
    assert stored[0] == JOB_FUNCTION


def test_what_deployments_run_is_where_they_name_it() -> None:
    """The shipped unit file and compose file run the `statesaga` command; the supervisor
    starts `python -m statesaga.cli`; the example definitions name handler modules that are
    still there. None of those paths moved."""
    from statesaga import examples_dir
    from statesaga.cli.supervisor import worker_children
    from statesaga.definitions.load import is_definition, load_definition

    children = worker_children(1, ["--queue", "inline://"], recover_every=5)
    for child in children:
        assert child.argv[1:3] == ["-m", "statesaga.cli"], child.argv
    sagas = [p for p in sorted(examples_dir().glob("*.yaml")) if is_definition(load_yaml(p))]
    assert len(sagas) >= 2
    for saga in sagas:
        for module in load_definition(saga).spec.handlers:
            assert importlib.util.find_spec(module) is not None, (saga.name, module)
    deploy = ROOT / "examples" / "deploy"
    assert "/bin/statesaga worker" in (deploy / "statesaga-worker.service").read_text()
    assert '["statesaga", "worker"' in (deploy / "compose.yaml").read_text()


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
