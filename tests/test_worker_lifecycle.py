"""Real `statesaga worker` processes on a real Redis, as an operator runs them: idle is not an
error, and a worker (or a pool of them) stops when asked.

- An idle worker, with and without the scheduler, logs nothing at WARNING or above while it
  idles past every timeout involved (the client's read timeout, the server's idle-client
  timeout, the command listener's poll, the scheduler lock's TTL), and starts a job within
  1 s of its enqueue afterwards. redis-py 8's 5 s default read timeout used to break this.
- SIGTERM: the job in hand finishes, no new one is taken, the process exits within 2 s of
  that job's end; a second signal stops it at once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ops_handlers import chaos_saga
from ops_redis import RedisServer
from statesaga.definition import load_definition
from statesaga.engine import Engine
from statesaga.models import StepStatus, WorkflowStatus
from statesaga.plugins import open_queue, open_store
from statesaga.security.allowlist import AllowList
from statesaga.verify.crashcheck import LEDGER_ENV

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WAIT = 60.0  # a safety net for slow CI machines, not a measurement
TESTS = Path(__file__).parent
#: Seconds the idle test idles: past the 10 s default read timeout, the 2 s one of the
#: scheduler worker's URL, the server's 2 s idle-client timeout, the 1 s listener poll and
#: the scheduler lock's 10 s TTL.
IDLE = 13.0
LOUD = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    # `--timeout 2`: the server drops clients idle for 2 s (a common production setting).
    srv = RedisServer(tmp_path, "--save", "", "--appendonly", "yes", "--timeout", "2")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def env_for(tmp_path: Path, work: float = 0.05) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        OPS_TEST_WORK=str(work),
        **{LEDGER_ENV: str(tmp_path / "ledger.jsonl")},
    )


def statesaga(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "statesaga.cli", *args], env=env, stdout=out, stderr=out
    )


def eventually(check: Callable[[], Any], what: str, wait: float = WAIT) -> Any:
    deadline = time.monotonic() + wait
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def engine_on(queue: str, store: str) -> Engine:
    return Engine(
        open_store(store),
        open_queue(queue),
        heartbeat_interval=0,
        allowed=AllowList.of(["ops_handlers"]),
    )


def started(engine: Engine, wf_id: str) -> bool:
    """True once a worker has claimed a step of the workflow."""
    steps = engine.get(wf_id).steps
    return any(s.status not in (StepStatus.PENDING, StepStatus.QUEUED) for s in steps)


def test_an_idle_worker_logs_nothing_and_starts_the_next_job_within_a_second(
    server: RedisServer, tmp_path: Path
) -> None:
    env = env_for(tmp_path)
    store = f"{server.url}?durability=none"
    # One worker with the scheduler and a 2 s read timeout, one without on the defaults.
    queues = {
        "sched": f"rq://127.0.0.1:{server.port}/0?queue=sched&socket_timeout=2",
        "plain": f"rq://127.0.0.1:{server.port}/0?queue=plain",
    }
    logs = {name: tmp_path / f"{name}.log" for name in queues}
    workers = {
        name: statesaga(
            "worker", "--queue", url, "--store", store, "--handlers", "ops_handlers",
            *(["--with-scheduler"] if name == "sched" else []), "--log-level", "info",
            env=env, log=logs[name],
        )  # fmt: skip
        for name, url in queues.items()
    }
    try:
        for name in queues:
            eventually(lambda n=name: "Listening on" in logs[n].read_text(), f"{name} to listen")
        time.sleep(IDLE)
        for name, url in queues.items():
            engine = engine_on(url, store)
            definition = load_definition(chaos_saga(retry_interval=0.2))
            # The first retry goes through the scheduler (a delayed job) on `sched`.
            flaky = {"flaky": ["fetch_rates"]} if name == "sched" else {}
            begun = time.monotonic()
            wf_id = engine.start(definition, flaky).id
            eventually(lambda e=engine, w=wf_id: started(e, w), f"{name}'s first step", wait=5)
            assert time.monotonic() - begun < 1.0, name
            assert engine.wait(wf_id, WAIT).status is WorkflowStatus.COMPLETED
        for name, proc in workers.items():
            assert proc.poll() is None, logs[name].read_text()
    finally:
        for proc in workers.values():
            stop(proc)
    for name, log in logs.items():
        text = log.read_text()
        assert not [line for line in text.splitlines() if LOUD.search(line)], text
        assert workers[name].returncode == 0, text
