"""The command line explains itself (issue 17): every hint is a command that works as
printed, a long wait is never silent, a workflow left running is named with the commands
to follow it, and refusals are said in an operator's words. Real processes, real stores."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from statesaga.cli import main
from statesaga.definitions.load import load_definition
from statesaga.examples import path as example_path
from statesaga.models import WorkflowStatus
from statesaga.plugins import open_store

ROOT = Path(__file__).resolve().parents[1]
TRIP = str(ROOT / "examples" / "trip.yaml")
TRIP_INPUT = {"origin": "TPE", "destination": "NRT", "nights": 2, "amount": 10, "email": "a@b.c"}


def cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESAGA_")}
    return subprocess.run(
        [sys.executable, "-m", "statesaga.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**env, "COLUMNS": "80"},  # piped: lines must not be cut at 80 columns anyway
    )


def _sleeper(tmp_path: Path, seconds: float, name: str = "nap") -> Path:
    path = tmp_path / "sleepy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "workflow": "sleepy",
                "steps": [
                    {"name": name, "duration": seconds},
                ],
            }
        ),
        encoding="utf-8",
    )
    return path


@pytest.mark.slow
def test_demo_prints_the_real_status_command_and_it_works(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    demo = cli("demo", "--store", store, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "--store ..." not in demo.stdout
    hint = next(line for line in demo.stdout.splitlines() if "statesaga status" in line)
    command = shlex.split(hint.strip())
    assert command[:2] == ["statesaga", "status"] and store in command
    shown = cli(*command[1:], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "COMPENSATED" in shown.stdout and "cancel_flight" not in shown.stderr


def test_a_missing_workflow_names_the_store_looked_in(tmp_path: Path) -> None:
    res = cli("status", "WF-20260101-00000000", cwd=tmp_path)
    assert res.returncode == 1
    (line,) = res.stderr.splitlines()
    assert "WF-20260101-00000000 not found in sqlite:///statesaga.db" in line
    assert "--store sqlite:///statesaga-demo.db" in line  # where the demo's went


@pytest.mark.slow
def test_run_on_a_queue_no_worker_serves_says_so_and_what_to_do(
    tmp_path: Path, redis_url: str
) -> None:
    queue = f"{redis_url.replace('redis://', 'rq://')}?queue=nobody-{uuid.uuid4().hex[:8]}"
    store = f"sqlite:///{tmp_path / 'q.db'}"
    res = cli(
        "run",
        TRIP,
        "--input",
        json.dumps(TRIP_INPUT),
        "--store",
        store,
        "--queue",
        queue,
        "--timeout",
        "7",
    )
    assert res.returncode == 1
    out = res.stdout + res.stderr
    name = queue.rsplit("=", 1)[1]
    assert f"no worker listens on queue {name!r}" in out
    assert "step reserve_flight is queued (attempt 1), waiting for a worker" in out
    wf_id = out.split("--timeout 7s reached: ", 1)[1].split()[0]
    assert f"{wf_id} is RUNNING and still runs on the workers" in res.stderr
    cancel = next(line for line in res.stderr.splitlines() if "statesaga cancel" in line)
    assert shlex.split(cancel.split(":", 1)[1])[2:] == [wf_id, "--store", store, "--queue", queue]
    assert open_store(store).get(wf_id).status is WorkflowStatus.RUNNING


@pytest.mark.slow
def test_a_long_sleep_shows_progress_and_lines_are_not_cut(tmp_path: Path) -> None:
    long_name = "a_step_whose_name_is_much_longer_than_eighty_columns_of_a_terminal_" + "x" * 20
    res = cli("run", str(_sleeper(tmp_path, 7, long_name)), "--store", "memory://")
    assert res.returncode == 0, res.stderr
    assert f"step {long_name} sleeps until" in res.stdout  # said while it sleeps
    assert any(line.count(long_name) for line in res.stdout.splitlines() if "schedule" in line)
    assert "…" not in res.stdout


def test_ctrl_c_names_the_workflow_left_running(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'c.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESAGA_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "statesaga.cli",
            "run",
            str(_sleeper(tmp_path, 60)),
            "--store",
            store,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    wf_id = first.split()[-1]
    assert wf_id.startswith("WF-"), first
    deadline = time.monotonic() + 30
    while open_store(store).get(wf_id).status is not WorkflowStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"interrupted: {wf_id} is RUNNING and stopped here" in err
    assert "step nap sleeps until" in err
    assert f"statesaga cancel {wf_id} --store {store}" in err
    assert "Traceback" not in err


def test_plugins_strict_passes_when_only_an_optional_extra_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "arango", None)  # as if python-arango were not installed
    monkeypatch.delitem(sys.modules, "statesaga.adapters.stores.arango", raising=False)
    r = CliRunner().invoke(main, ["plugins", "--strict"])
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if " arango " in line)
    assert row.endswith("not installed: pip install 'statesaga[arango]'")
    assert "failed to load" not in r.output


def _stored(tmp_path: Path, status: WorkflowStatus) -> tuple[str, str]:
    store_url = f"sqlite:///{tmp_path / 'w.db'}"
    wf = load_definition(example_path("trip")).instantiate(TRIP_INPUT)
    wf.status = status
    store = open_store(store_url)
    store.initialize()
    store.create(wf)
    return store_url, wf.id


@pytest.mark.slow
def test_a_refused_cancel_is_said_plainly(tmp_path: Path) -> None:
    store, wf_id = _stored(tmp_path, WorkflowStatus.COMPENSATING)
    res = cli("cancel", wf_id, "--store", store)
    assert res.returncode == 1
    (line,) = res.stderr.splitlines()
    assert f"{wf_id} is already being compensated (COMPENSATING)" in line
    assert "nothing left to cancel" in line and f"statesaga status {wf_id}" in line
    assert "trigger" not in line and "can't" not in line
    assert open_store(store).get(wf_id).status is WorkflowStatus.COMPENSATING


@pytest.mark.slow
def test_a_halted_workflow_says_why_and_how_to_restart(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'h.db'}"
    data = {**TRIP_INPUT, "fail_at": "send_confirmation"}
    run = cli("run", TRIP, "--input", json.dumps(data), "--store", store)
    assert run.returncode == 1
    wf_id = run.stdout.split()[2]
    status = cli("status", wf_id, "--store", store)
    assert status.returncode == 0
    text = " ".join(status.stdout.split())
    assert "a step failed once the pivot charge_payment may have applied" in text
    hint = next(line for line in status.stdout.splitlines() if "statesaga restart" in line)
    assert f"statesaga restart {wf_id} --from send_confirmation" in hint
    assert f"--store {store}" in hint
    cancel = cli("cancel", wf_id, "--store", store)
    assert cancel.returncode == 1 and "halted FAILED" in cancel.stderr


def test_options_declare_choices_and_environment_variables() -> None:
    runner = CliRunner()
    for command, var in (("status", "STORE"), ("run", "QUEUE"), ("worker", "STORE")):
        text = " ".join(runner.invoke(main, [command, "--help"]).output.split())
        assert f"[env var: STATESAGA_{var}]" in text, command
    bad = runner.invoke(main, ["list", "--status", "RUNING"])
    assert bad.exit_code == 2 and "is not one of" in bad.output
    ok = runner.invoke(main, ["list", "--status", "running", "--store", "memory://"])
    assert ok.exit_code == 0, ok.output
    env = {
        "_STATESAGA_COMPLETE": "bash_complete",
        "COMP_WORDS": "statesaga diagram x --format ",
        "COMP_CWORD": "4",
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("statesaga"))],  # the script the README installs
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert "plain,mermaid" in done.stdout and "plain,all" in done.stdout
