"""The command line as a user runs it: real processes, real files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statesaga.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_validate_ok_for_the_shipped_tables_and_examples() -> None:
    files = sorted(str(p) for p in (ROOT / "statecharts").glob("*.yaml")) + [
        str(ROOT / "examples" / "trip.yaml")
    ]
    res = cli("validate", *files)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines() == [f"ok {f}" for f in files]


def test_validate_lists_every_error_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "chart: bad\ninitial: A\nstates:\n  - name: A\n  - name: A\n  - name: B\ntransitions:\n"
        "  - {trigger: go, source: A, dest: C}\n",
        encoding="utf-8",
    )
    good = ROOT / "statecharts" / "todo.yaml"
    res = cli("validate", str(good), str(bad))
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert lines[0] == f"ok {good}"
    assert any(
        line.startswith(f"{bad}:5:") and "duplicate state name 'A'" in line for line in lines
    ), lines
    assert any(line.startswith(f"{bad}:8:") and "undefined state 'C'" in line for line in lines), (
        lines
    )
    assert any(line.startswith(f"{bad}:6:") and "'B'" in line for line in lines), lines


@pytest.mark.slow
def test_usage_errors_exit_2_and_help_and_version_work() -> None:
    assert cli("validate").returncode == 2
    assert cli("no-such-command").returncode == 2
    assert cli("--help").returncode == 0
    version = cli("--version")
    assert version.returncode == 0 and "statesaga" in version.stdout


def test_schema_is_json_schema_of_the_table_format() -> None:
    res = cli("schema")
    schema = json.loads(res.stdout)
    assert schema["title"] == "statesaga chart"
    assert schema["required"] == ["chart"]
    assert {"initial", "states", "transitions", "extends"} <= set(schema["properties"])


@pytest.mark.slow
def test_run_exit_codes_and_json(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'cli.db'}"
    trip = str(ROOT / "examples" / "trip.yaml")
    data = {"origin": "A", "destination": "B", "nights": 1, "amount": 5, "email": "x@y.z"}
    ok = cli("run", trip, "--input", json.dumps(data), "--store", store, "--json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["status"] == "COMPLETED" and len(doc["steps"]) == 5
    input_file = tmp_path / "in.json"
    input_file.write_text(json.dumps({**data, "fail_at": "reserve_car"}), encoding="utf-8")
    bad = cli("run", trip, "--input", f"@{input_file}", "--store", store, "--session", "s1")
    assert bad.returncode == 1
    assert "COMPENSATED" in bad.stdout
    listed = cli("list", "--store", store, "--session", "s1", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["COMPENSATED"]
    status = cli("status", rows[0]["id"], "--store", store, "--json")
    assert json.loads(status.stdout)["id"] == rows[0]["id"]
    missing = cli("status", "WF-20990101-00000000", "--store", store)
    assert missing.returncode == 1 and "not found" in missing.stderr


@pytest.mark.slow
def test_environment_variables_pick_the_store(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'env.db'}"
    res = cli("demo", "--store", store)
    assert res.returncode == 0, res.stderr
    listed = cli("list", env={"STATESAGA_STORE": store})
    assert listed.stdout.count("WF-") == 2


def test_demo_shows_one_completed_and_one_compensated_in_reverse(tmp_path: Path) -> None:
    res = cli("demo", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "compensation order: reserve_car -> reserve_hotel -> reserve_flight" in res.stdout
    assert ": COMPLETED" in res.stdout and ": COMPENSATED" in res.stdout
    assert (tmp_path / "statesaga-demo.db").exists()


@pytest.mark.slow
def test_live_diagram_of_a_stored_instance_renders_with_dot(tmp_path: Path) -> None:
    import shutil

    store = f"sqlite:///{tmp_path / 'live.db'}"
    trip = str(ROOT / "examples" / "trip.yaml")
    data = {
        "origin": "A",
        "destination": "B",
        "nights": 1,
        "amount": 5,
        "email": "x@y.z",
        "fail_at": "charge_payment",
    }
    run = cli("run", trip, "--input", json.dumps(data), "--store", store, "--json")
    wf_id = json.loads(run.stdout)["id"]
    mermaid = cli("diagram", "--instance", wf_id, "--store", store, "--format", "mermaid")
    assert mermaid.returncode == 0, mermaid.stderr
    assert "stateDiagram-v2" in mermaid.stdout and "COMPENSATED" in mermaid.stdout
    dot = cli("diagram", "--instance", wf_id, "--store", store, "--format", "dot")
    assert dot.returncode == 0 and "digraph" in dot.stdout
    if shutil.which("dot") is None:
        pytest.skip("graphviz `dot` not installed: DOT checked, SVG not rendered")
    svg = subprocess.run(["dot", "-Tsvg"], input=dot.stdout, capture_output=True, text=True)
    assert svg.returncode == 0 and "<svg" in svg.stdout


@pytest.mark.slow
def test_live_diagram_of_one_step_on_an_extended_lifecycle(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'agent.db'}"
    task = str(ROOT / "examples" / "agent_task.yaml")
    run = cli("run", task, "--input", json.dumps({"topic": "sagas"}), "--store", store, "--json")
    assert run.returncode == 0, run.stderr
    wf_id = json.loads(run.stdout)["id"]
    res = cli(
        "diagram", "--instance", wf_id, "--store", store, "--step", "research", "--definition", task
    )
    assert res.returncode == 0, res.stderr
    assert "state EXECUTING {" in res.stdout
    arrow = "EXECUTING_CALLING_MODEL --> EXECUTING_WAITING_FOR_TOOL : 3, 5. tool_called"
    assert arrow in res.stdout
