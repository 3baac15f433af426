"""A Redis that pauses for seconds (`DEBUG SLEEP`, `CLIENT PAUSE`) is not an outage to give
up on: with real processes on a real redis-server, `statesaga run`'s polling, the jobs in
flight and the workers ride it out, with no ERROR line, no traceback and no exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from ops_handlers import chaos_saga
from ops_redis import RedisServer
from statesaga.models import WorkflowStatus
from statesaga.plugins import open_store
from statesaga.verify.crashcheck import LEDGER_ENV, Ledger, check_ledger

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TESTS = Path(__file__).parent
WAIT = 120.0
#: Every client of the store (and `run`'s of the queue) gives up reading after 2 s, as
#: redis-py 8's default (5 s) does before an 8 s pause: the pauses below outlast it.
TIMEOUT = "socket_timeout=2"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(
        tmp_path, "--save", "", "--appendonly", "yes", "--enable-debug-command", "yes"
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_run_the_job_in_flight_and_the_workers_ride_out_redis_pauses(
    server: RedisServer, tmp_path: Path
) -> None:
    import yaml

    saga = tmp_path / "chaos.yaml"
    saga.write_text(yaml.safe_dump(chaos_saga(retry_interval=0.5)))
    store = f"{server.url}?{TIMEOUT}"
    queue = f"rq://127.0.0.1:{server.port}/0?queue=pause"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        OPS_TEST_WORK="0.4",  # a step in flight when each pause begins
        **{LEDGER_ENV: str(tmp_path / "ledger.jsonl")},
    )
    cli = [sys.executable, "-m", "statesaga.cli"]
    worker_log = tmp_path / "worker.log"
    with worker_log.open("ab") as out:
        # The worker's queue connection blocks in its dequeue: no read timeout on it.
        worker = subprocess.Popen(
            [*cli, "worker", "--queue", queue, "--store", store, "--handlers", "ops_handlers",
             "--with-scheduler", "--heartbeat", "1"],
            env=env, stdout=out, stderr=out,
        )  # fmt: skip
    runs: list[subprocess.Popen[str]] = []
    try:
        # This test's own client waits out the DEBUG SLEEP it sends (redis-py 8 would give
        # up reading after its default 5 s).
        client = redis.Redis(port=server.port, socket_timeout=30)
        deadline = time.monotonic() + WAIT
        while not client.smembers("rq:workers:pause"):
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)

        def run(flaky: str) -> None:
            runs.append(
                subprocess.Popen(
                    [
                        *cli,
                        "run",
                        str(saga),
                        "--store",
                        store,
                        "--queue",
                        f"{queue}&{TIMEOUT}",
                        "--handlers",
                        "ops_handlers",
                        "--timeout",
                        str(WAIT),
                        "--json",
                        "--input",
                        f'{{"flaky": ["{flaky}"]}}',
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )  # fmt: skip
            )

        for step in ("hold_inventory", "charge", "notify"):
            run(step)
        time.sleep(2.5)  # the runs poll, the worker is inside a step
        client.execute_command("DEBUG", "SLEEP", "6")
        for step in ("reserve_budget", "archive"):
            run(step)
        time.sleep(2.5)
        pauser = redis.Redis(port=server.port)
        pauser.execute_command("CLIENT", "PAUSE", "6000", "ALL")
        threading.Event().wait(6.5)
        outputs = [p.communicate(timeout=WAIT) for p in runs]
        assert worker.poll() is None, "the worker exited"
    finally:
        for p in runs:
            if p.poll() is None:
                p.kill()
        worker.terminate()
        worker.wait(30)

    for p, (_, stderr) in zip(runs, outputs, strict=True):
        assert p.returncode == 0, stderr
        assert "ERROR" not in stderr and "Traceback" not in stderr, stderr
    log = worker_log.read_text()
    assert "ERROR" not in log and "Traceback" not in log, log
    store_now = open_store(server.url)
    finals = [store_now.get(json.loads(stdout)["id"]) for stdout, _ in outputs]
    assert [wf.status for wf in finals] == [WorkflowStatus.COMPLETED] * len(runs)
    assert check_ledger(Ledger(tmp_path / "ledger.jsonl").records(), finals) == []
