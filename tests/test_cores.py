"""Using a machine's cores without Redis (issue 33): processes sharing one SQLite file wait for
each other's write lock in short steps (not SQLite's 1, 2, 5, 10... ms sleeps) and give up
after the store's timeout; `statesaga worker --cpu` runs each worker process on a CPU of its
own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.definitions.load import load_definition
from statesaga.models import WorkflowStatus
from statesaga.runtime.cpu import cpu_for, usable_cpus

DEFINITION = load_definition({"workflow": "c", "steps": [{"name": "a", "action": "a"}]})
TESTS = Path(__file__).parent
RUNNING = {WorkflowStatus.PENDING, WorkflowStatus.RUNNING}

# Another process takes the file's write lock, says so, and keeps it for argv[2] seconds.
HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("CREATE TABLE IF NOT EXISTS held (x)")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def _hold(db: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_save_waits_for_another_process_and_follows_it_at_once(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    store = SQLiteStore(db, timeout=10)
    wf = DEFINITION.instantiate({})
    store.create(wf)
    holder = _hold(db, 0.5)
    t0 = time.monotonic()
    wf.status = WorkflowStatus.RUNNING
    store.save(wf)
    waited = time.monotonic() - t0
    assert holder.wait(10) == 0
    assert store.get(wf.id).status is WorkflowStatus.RUNNING
    # Held for 0.5 s from before the save began; SQLite's own handler would have slept on in
    # steps of up to 100 ms after the lock was free.
    assert 0.3 < waited < 0.5 + 0.2, waited


def test_a_save_gives_up_after_the_store_timeout_and_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    store = SQLiteStore(db, timeout=0.3)
    wf = DEFINITION.instantiate({})
    store.create(wf)
    holder = _hold(db, 3)
    try:
        t0 = time.monotonic()
        wf.status = WorkflowStatus.RUNNING
        with pytest.raises(Exception, match="locked"):
            store.save(wf)
        assert 0.3 <= time.monotonic() - t0 < 2.0
    finally:
        holder.kill()
        holder.wait()
    assert store.get(wf.id).status is WorkflowStatus.PENDING
    assert store.get(wf.id).revision == 1


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statesaga.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_a_bad_cpu_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    queue = f"sqlq:///{tmp_path / 'q.db'}"
    for args, says in [
        (["--cpu", "99"], "is not a usable CPU"),
        (["--cpu", "zero"], "is not a usable CPU"),
        (["--cpu", str(usable_cpus()[0]), "--processes", "2"], "use --cpu each"),
    ]:
        done = _cli("worker", "--queue", queue, "--burst", *args)
        assert done.returncode == 2, done
        assert says in done.stderr and "--cpu" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "q.db").exists()


def _allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_worker_processes_each_run_on_a_cpu_of_their_own_and_run_sagas(tmp_path: Path) -> None:
    from statesaga.engine import Engine
    from statesaga.plugins import open_queue, open_store
    from statesaga.security.allowlist import AllowList
    from statesaga.verify.crashcheck import LEDGER_ENV

    db = tmp_path / "app.db"
    store_url, queue_url = f"sqlite:///{db}", f"sqlq:///{db}"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        STATESAGA_STORE=store_url,
        STATESAGA_QUEUE=queue_url,
        OPS_TEST_WORK="0.01",
        **{LEDGER_ENV: str(tmp_path / "ledger.jsonl")},
    )
    log = (tmp_path / "workers.log").open("wb")
    pool = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "statesaga.cli",
            "worker",
            "--handlers",
            "ops_handlers",
            "--processes",
            "2",
            "--cpu",
            "each",
            "--log-level",
            "WARNING",
        ],  # fmt: skip
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while len(_children(pool.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        children = _children(pool.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pinned = sorted(_allowed(c) for c in children)
            if pinned == sorted(str(cpu_for(i)) for i in range(2)):
                break
            time.sleep(0.05)
        assert pinned == sorted(str(cpu_for(i)) for i in range(2)), pinned
        assert _allowed(pool.pid) == _allowed(os.getpid())  # the supervisor is not pinned
        from ops_handlers import chaos_saga

        store = open_store(store_url)
        starter = Engine(
            store, open_queue(queue_url), heartbeat_interval=0,
            allowed=AllowList.of(["ops_handlers"]),
        )  # fmt: skip
        definition = load_definition(chaos_saga(retry_interval=0.2))
        ids = [starter.start(definition, {}).id for _ in range(6)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not any(store.get(i).status in RUNNING for i in ids):
                break
            time.sleep(0.1)
        docs = [store.get(i) for i in ids]
        assert [d.status for d in docs] == [WorkflowStatus.COMPLETED] * 6, [d.reason for d in docs]
        starter.queue.close()
        store.close()
    finally:
        pool.send_signal(signal.SIGTERM)
        pool.wait(30)
        log.close()
