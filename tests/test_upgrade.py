"""Upgrading from the release before the tree's split (d7f3d36): what a user's code, command
lines and deployments named then still works, or fails with one line saying where it went."""

from __future__ import annotations

import importlib
import runpy
import subprocess
import sys

import pytest
from statesaga._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_python_dash_m_finds_a_moved_module(old: str) -> None:
    """`python -m statesaga.crashcheck` (a command line of the previous release) runs what
    `python -m` of the new name runs; runpy needs the module's code, not only the module."""
    runpy.run_module(old, run_name="not_main")


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
    assert old is importlib.import_module("statesaga.adapters.rq_jobguard")
    assert {"GuardedWorker", "StatesagaJob", "refusal"} <= set(vars(old))


@pytest.mark.parametrize(
    ("module", "name", "now"),
    [
        ("statesaga.worker", "make_rq_worker", "statesaga.adapters.rq_worker"),
        ("statesaga.models", "ACTIVE_WORKFLOW", "statesaga.vocabulary.WORKFLOW_IN_FLIGHT"),
        ("statesaga.models", "IN_FLIGHT_STEP", "statesaga.vocabulary.STEP_IN_FLIGHT"),
    ],
)
def test_a_public_name_that_moved_says_where_it_is(module: str, name: str, now: str) -> None:
    with pytest.raises(ImportError, match=now.replace(".", r"\.")):
        exec(f"from {module} import {name}", {})
