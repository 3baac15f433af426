"""Long-running processes on real Redis: workers and `recover --every` ride out a Redis
restart; `worker --processes N` keeps N workers (and the recovery loop) alive and takes them
down with it; a SIGKILLed scheduler worker leaves no process behind, and another worker
promotes delayed retries within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from ops_handlers import chaos_saga
from ops_redis import RedisServer
from statesaga.adapters.queues.rq.worker import SchedulerThread
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.models import WorkflowStatus
from statesaga.plugins import open_queue, open_store
from statesaga.security.allowlist import AllowList
from statesaga.verify.crashcheck import LEDGER_ENV, Ledger, check_ledger

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WAIT = 60.0  # a safety net for slow CI machines, not a measurement
TESTS = Path(__file__).parent


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path, "--save", "", "--appendonly", "yes")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def env_for(tmp_path: Path, work: float = 0.2) -> dict[str, str]:
    """Workers import `ops_handlers` from tests/; each effect takes `work` seconds."""
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        OPS_TEST_WORK=str(work),
        **{LEDGER_ENV: str(tmp_path / "ledger.jsonl")},
    )


def urls(server: RedisServer) -> tuple[str, str]:
    return f"rq://127.0.0.1:{server.port}/0?queue=ops", server.url


def statesaga(
    *args: str, env: dict[str, str], log: Path, session: bool = False
) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "statesaga.cli", *args],
        env=env,
        stdout=out,
        stderr=out,
        start_new_session=session,  # a terminal of its own, for Ctrl+C to its process group
    )


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def eventually(check: Callable[[], Any], what: str, wait: float = WAIT) -> Any:
    deadline = time.monotonic() + wait
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_workflows(server: RedisServer, inputs: list[dict[str, Any]]) -> tuple[Engine, list[str]]:
    queue, store = urls(server)
    definition = load_definition(chaos_saga(retry_interval=0.5))
    engine = Engine(
        open_store(store),
        open_queue(queue),
        heartbeat_interval=0,
        allowed=AllowList.of(["ops_handlers"]),
    )
    return engine, [engine.start(definition, i).id for i in inputs]


def test_a_worker_and_the_recovery_loop_ride_out_a_redis_restart(
    server: RedisServer, tmp_path: Path
) -> None:
    queue, store = urls(server)
    env = env_for(tmp_path)
    worker_log, recover_log = tmp_path / "worker.log", tmp_path / "recover.log"
    common = ["--queue", queue, "--store", store]
    worker = statesaga(
        "worker", *common, "--handlers", "ops_handlers", "--with-scheduler", "--heartbeat", "1",
        env=env, log=worker_log,
    )  # fmt: skip
    recovery = statesaga(
        "recover", "--every", "1", "--timeout", "5", *common, env=env, log=recover_log
    )
    try:
        engine, first = start_workflows(server, [{}, {"flaky": ["charge"]}] * 3)
        # Redis crashes while the worker is busy with a step (AOF keeps what was written).
        eventually(lambda: Ledger(tmp_path / "ledger.jsonl").records(), "a first effect")
        server.stop(kill=True)
        time.sleep(3)  # both processes notice while Redis is gone
        assert worker.poll() is None and recovery.poll() is None
        server.start()

        engine, second = start_workflows(server, [{}, {"flaky": ["reserve_budget"]}])
        finals = [engine.wait(wf_id, WAIT) for wf_id in first + second]
        assert [wf.status for wf in finals] == [WorkflowStatus.COMPLETED] * 8
        assert worker.poll() is None and recovery.poll() is None
        assert check_ledger(Ledger(tmp_path / "ledger.jsonl").records(), finals) == []
    finally:
        stop(worker)
        stop(recovery)
    # Each outage is logged once by each loop, not once per retry.
    assert recover_log.read_text().count("recovery loop: service unreachable") == 1
    assert worker.returncode == 0 and recovery.returncode in (0, -signal.SIGTERM)


def test_processes_keeps_n_workers_and_the_recovery_loop_and_takes_them_down(
    server: RedisServer, tmp_path: Path
) -> None:
    queue, store = urls(server)
    env = env_for(tmp_path)
    log = tmp_path / "pool.log"
    pool = statesaga(
        "worker", "--queue", queue, "--store", store, "--handlers", "ops_handlers",
        "--with-scheduler", "--processes", "3", "--recover-every", "1", env=env, log=log,
    )  # fmt: skip
    try:
        kids = eventually(lambda: len(children_of(pool.pid)) == 4 and children_of(pool.pid), "4")
        victim = kids[0]
        os.kill(victim, signal.SIGKILL)
        eventually(
            lambda: victim not in children_of(pool.pid) and len(children_of(pool.pid)) == 4,
            "the killed child to be replaced",
        )
        engine, ids = start_workflows(server, [{}, {"fail_at": "book_supplier"}, {}])
        finals = [engine.wait(wf_id, WAIT) for wf_id in ids]
        assert [wf.status for wf in finals] == [
            WorkflowStatus.COMPLETED,
            WorkflowStatus.COMPENSATED,
            WorkflowStatus.COMPLETED,
        ]
        assert check_ledger(Ledger(tmp_path / "ledger.jsonl").records(), finals) == []

        # SIGKILL of the supervisor: the kernel tells each child (PR_SET_PDEATHSIG).
        kids = children_of(pool.pid)
        pool.kill()
        pool.wait()
        eventually(lambda: not any(alive(k) for k in kids), "the children to exit")
    finally:
        stop(pool)
    assert "worker-1 was killed by SIGKILL" in log.read_text()  # and restarted at once


def test_processes_stops_on_sigterm_and_refuses_burst(server: RedisServer, tmp_path: Path) -> None:
    queue, store = urls(server)
    env = env_for(tmp_path)
    args = ["worker", "--queue", queue, "--store", store, "--handlers", "ops_handlers"]
    refused = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", *args, "--processes", "2", "--burst"],
        env=env, capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "--burst" in refused.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", *args, "--processes", "2", "--handlers", "nope_x"],
        env=env, capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "nope_x" in bad.stderr  # once, not in a restart loop

    log = tmp_path / "pool.log"
    for stop_with in (signal.SIGTERM, signal.SIGINT):
        pool = statesaga(*args, "--processes", "2", env=env, log=log, session=True)
        pid = pool.pid
        kids = eventually(lambda p=pid: len(children_of(p)) == 2 and children_of(p), "2")
        eventually(lambda: log.read_text().count("Listening on") >= 2, "the workers to listen")
        if stop_with is signal.SIGINT:
            os.killpg(pool.pid, signal.SIGINT)  # Ctrl+C in its terminal
        else:
            pool.send_signal(signal.SIGTERM)
        assert pool.wait(WAIT) == 0
        assert not any(alive(k) for k in kids)
        log.write_text(log.read_text().replace("Listening on", "(listened)"))
    # Each worker got one signal (a warm shutdown), never a second (RQ's cold shutdown).
    text = log.read_text()
    assert text.count("warm shut down requested") == 4, text
    assert "cold shut down" not in text


def test_a_killed_scheduler_worker_leaves_nothing_and_another_takes_over(
    server: RedisServer, tmp_path: Path
) -> None:
    queue, store = urls(server)
    env = env_for(tmp_path)
    client = redis.Redis.from_url(server.url)
    lock = "rq:scheduler-lock:ops"
    common = ["worker", "--queue", queue, "--store", store, "--handlers", "ops_handlers"]
    first = statesaga(*common, "--with-scheduler", env=env, log=tmp_path / "a.log")
    holder = eventually(lambda: client.get(lock), "the first worker to take the lock")
    second = statesaga(*common, "--with-scheduler", env=env, log=tmp_path / "b.log")
    try:
        time.sleep(2)
        assert client.get(lock) == holder  # one scheduler at a time
        assert children_of(first.pid) == []  # the scheduler is a thread, not a process
        first.kill()
        first.wait()
        taken = time.monotonic()
        new_holder = eventually(
            lambda: (client.get(lock) or holder) != holder and client.get(lock),
            "the second worker to take the lock",
            wait=SchedulerThread.LOCK_TTL + 15,
        )
        assert b".scheduler" in new_holder
        assert time.monotonic() - taken < SchedulerThread.LOCK_TTL + 5

        # Its retries (delayed jobs) are promoted: a flaky step completes after its backoff.
        engine, ids = start_workflows(server, [{"flaky": ["hold_inventory", "charge"]}])
        final = engine.wait(ids[0], WAIT)
        assert final.status is WorkflowStatus.COMPLETED
        assert final.step("charge").attempts == 2
        # Nothing swallowed into RQ's intermediate list by a leftover connection.
        assert not [k for k in client.keys("rq:intermediate*") if client.llen(k)]
    finally:
        stop(second)
        client.close()
