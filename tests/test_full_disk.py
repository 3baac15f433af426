"""A full disk under an SQLite store, with real processes on a real (small) tmpfs: commands
that only read open the store read-only and still show every workflow; every write fails with
one line and no traceback (the heartbeat thread's included); once space is freed, recovery
moves the cut-off workflow on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from disk_handlers import fill

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent
EXAMPLES = TESTS.parent / "examples"
TRIP = {"origin": "TPE", "destination": "NRT", "nights": 3, "amount": 1250, "email": "a@b.c"}

FILLING_SAGA = """\
workflow: fills_the_disk
version: 1
handlers: [disk_handlers]
steps:
  - name: fill
    action: fill_disk
"""


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of this test alone (root only: skipped elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statesaga.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )


def run_trip(store: str) -> str:
    done = cli("run", str(EXAMPLES / "trip.yaml"), "--store", store, "--json", "--input",
               json.dumps(TRIP))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["id"])


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("writer_open", [True, False], ids=["wal-in-use", "closed-cleanly"])
def test_reads_work_and_writes_fail_in_one_line_on_a_full_disk(
    disk: Path, writer_open: bool
) -> None:
    import sqlite3

    db = disk / "s.db"
    store = f"sqlite:///{db}"
    ids = [run_trip(store), run_trip(store)]
    writer = None
    if writer_open:  # a worker still has the store open: its WAL and index stay
        writer = sqlite3.connect(db)
        writer.execute("SELECT count(*) FROM workflows").fetchall()
    fill(disk / "fill")

    listed = cli("list", "--store", store)
    assert listed.returncode == 0, listed.stderr
    # newest first (statesaga list)
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ids[::-1]
    for wf_id in ids:
        shown = cli("status", wf_id, "--store", store, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["status"] == "COMPLETED"
    drawn = cli("diagram", "--instance", ids[0], "--store", store)
    assert drawn.returncode == 0 and ids[0] in drawn.stdout, drawn.stderr

    refused = cli("run", str(EXAMPLES / "trip.yaml"), "--store", store, "--input",
                  json.dumps(TRIP))  # fmt: skip
    assert "disk is full" in one_line_error(refused)
    if writer is not None:
        writer.close()


def test_a_step_cut_off_by_a_full_disk_logs_one_line_and_recovery_finishes_it(
    disk: Path, tmp_path: Path
) -> None:
    db = disk / "s.db"
    store = f"sqlite:///{db}"
    run_trip(store)  # the store is there, with a workflow saved before the disk filled
    saga = tmp_path / "fills.yaml"
    saga.write_text(FILLING_SAGA)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        DISK_TEST_FILL=str(disk / "fill"),
        DISK_TEST_WAIT="6",  # past one heartbeat (every 5 s): its write fails too
    )
    cut = cli("run", str(saga), "--store", store, "--handlers", "disk_handlers", env=env)
    assert "disk is full" in one_line_error(cut)
    assert "heartbeat for " in cut.stderr  # the failed beat: one warning line
    cut_off = cli("list", "--store", store, "--status", "running")
    assert cut_off.returncode == 0 and len(cut_off.stdout.splitlines()) == 1, cut_off.stderr
    wf_id = cut_off.stdout.split()[0]

    # Recovery cannot move it on yet: `--once` says so in one line and fails (it exited 0,
    # having done nothing); `--every` waits as for an outage, one line for the whole wait
    # (it printed a "skipped" line per workflow on every pass).
    refused = cli("recover", "--once", "--timeout", "0", "--store", store,
                  "--handlers", "disk_handlers", env=env)  # fmt: skip
    assert "disk is full" in one_line_error(refused)
    looping = subprocess.Popen(
        [sys.executable, "-m", "statesaga.cli", "recover", "--every", "0.2", "--timeout", "0",
         "--store", store, "--handlers", "disk_handlers"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        out, _ = looping.communicate(timeout=6)
    except subprocess.TimeoutExpired:
        looping.terminate()
        out, _ = looping.communicate()
    assert [ln for ln in out.splitlines() if "disk is full" in ln] == out.splitlines()[:1], out
    assert "Traceback" not in out
    assert wf_id not in out.replace(f"skipped {wf_id}", ""), out

    (disk / "fill").unlink()  # space again: the step is taken for lost and runs again
    recovered = cli("recover", "--once", "--timeout", "0", "--store", store,
                    "--handlers", "disk_handlers", env=env)  # fmt: skip
    assert recovered.returncode == 0, recovered.stderr
    shown = cli("status", wf_id, "--store", store, "--json")
    assert json.loads(shown.stdout)["status"] == "COMPLETED", shown.stdout
