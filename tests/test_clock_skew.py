"""Clocks that disagree, with real processes on a real Redis: workers and recovery loops
whose clocks run two minutes ahead or behind (`faketime`) share the store's clock, so no
healthy attempt is taken for lost and no retry runs early or minutes late.

A host's wall clock is what is skewed (`time.time()`, `datetime.now()`); its monotonic clock
counts from its own boot and is left alone (FAKETIME_DONT_FAKE_MONOTONIC=1). libfaketime 0.9.10
then breaks Python's `time.sleep` (its clock_nanosleep wrapper answers EINVAL), so the skewed
processes get a `sitecustomize` whose `time.sleep` waits in select() instead; with the
monotonic clock faked as well, every `threading.Event.wait(timeout)` hangs instead."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from ops_redis import RedisServer
from skew_handlers import skew_saga
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.models import HistoryEntry, WorkflowState, WorkflowStatus
from statesaga.plugins import open_queue, open_store
from statesaga.security.allowlist import AllowList
from statesaga.verify.crashcheck import LEDGER_ENV, Ledger, check_ledger

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TESTS = Path(__file__).parent
WAIT = 40.0  # a safety net for slow machines; a retry two minutes late still exceeds it
SKEW = 120  # seconds
RETRY = 3.0  # the flaky step's backoff (seconds)
LATE = 3.0  # how late a retry may run: RQ's whole-second scores and its one-second poll
TIMEOUT = 8  # the recovery loops' heartbeat timeout; workers beat every second
WORK = 10  # seconds the long step runs: past the timeout, alive on its heartbeat

SLEEP_SHIM = """\
import select
import time


def _sleep(seconds):
    select.select([], [], [], seconds)


time.sleep = _sleep
"""


def _faketime() -> str:
    """The faketime binary, when it is installed and really moves a child's clock."""
    binary = shutil.which("faketime")
    if binary is None:
        pytest.skip("faketime is not installed (apt-get install -y faketime)")
    probe = "import threading, time; threading.Event().wait(0.1); print(time.time())"
    out = subprocess.run(
        [binary, "-f", f"+{SKEW}s", sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env=dict(os.environ, FAKETIME_DONT_FAKE_MONOTONIC="1"),
    )
    try:
        ahead = float(out.stdout) - time.time()
    except ValueError:
        ahead = 0.0
    if not SKEW - 10 < ahead < SKEW + 10:
        pytest.skip(f"faketime does not move this interpreter's clock here ({out.stderr.strip()})")
    return binary


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path, "--save", "", "--appendonly", "yes")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


class Processes:
    def __init__(self, tmp: Path, faketime: str) -> None:
        self.tmp = tmp
        self.faketime = faketime
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        shim = tmp / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(SLEEP_SHIM)
        path = [str(TESTS), os.environ.get("PYTHONPATH")]
        self.env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, path)),
            SKEW_TEST_WORK=str(WORK),
            **{LEDGER_ENV: str(tmp / "ledger.jsonl")},
        )
        self.skewed_env = dict(
            self.env,
            PYTHONPATH=os.pathsep.join(filter(None, [str(shim), *path])),
            FAKETIME_DONT_FAKE_MONOTONIC="1",
        )

    def start(self, name: str, skew: int, *args: str) -> None:
        clock = [self.faketime, "-f", f"{skew:+d}s"] if skew else []
        env = self.skewed_env if skew else self.env
        out = (self.tmp / f"{name}.log").open("ab")
        cmd = [*clock, sys.executable, "-m", "statesaga.cli", *args]
        self.procs.append((name, subprocess.Popen(cmd, env=env, stdout=out, stderr=out)))

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def alive(self) -> list[str]:
        return [name for name, p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                p.terminate()
        for _, p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _entries(wf: WorkflowState, step: str, trigger: str) -> list[HistoryEntry]:
    return [e for e in wf.history if e.step == step and e.trigger == trigger]


def _at(entry: HistoryEntry) -> datetime:
    return entry.at


def test_workers_and_recovery_loops_two_minutes_apart_share_the_stores_clock(
    server: RedisServer, tmp_path: Path
) -> None:
    faketime = _faketime()
    queue, store = f"rq://127.0.0.1:{server.port}/0?queue=skew", server.url
    both = ["--queue", queue, "--store", store]
    worker = ["worker", *both, "--handlers", "skew_handlers", "--heartbeat", "1"]
    recover = ["recover", "--every", "1", "--timeout", str(TIMEOUT), *both]
    procs = Processes(tmp_path, faketime)
    # Jobs go to any of three workers: on the true clock, two minutes ahead, two minutes
    # behind; the one behind alone promotes delayed retries, whoever scheduled them.
    procs.start("worker-true", 0, *worker)
    procs.start("worker-ahead", SKEW, *worker)
    procs.start("worker-behind", -SKEW, *worker, "--with-scheduler")
    procs.start("recover-ahead", SKEW, *recover)
    procs.start("recover-behind", -SKEW, *recover)
    try:
        engine = Engine(
            open_store(store),
            open_queue(queue),
            heartbeat_interval=0,
            allowed=AllowList.of(["skew_handlers"]),
        )
        # Every worker listens before the first job goes out: a step left queued past the
        # timeout is for recovery to re-enqueue, which is not what this test is about.
        deadline = time.monotonic() + WAIT
        listening: Any = engine.queue
        while listening.worker_count() < 3:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        definition = load_definition(skew_saga(RETRY))
        began = time.monotonic()
        ids = [engine.start(definition, {}).id for _ in range(3)]
        finals = [engine.wait(wf_id, WAIT) for wf_id in ids]
        took = time.monotonic() - began
        assert procs.alive() == [name for name, _ in procs.procs], "a process exited"
    finally:
        procs.stop()

    assert [wf.status for wf in finals] == [WorkflowStatus.COMPLETED] * 3, [
        wf.status for wf in finals
    ]
    for wf in finals:
        long, flaky = wf.step("long"), wf.step("flaky")
        # The long step outlived the recovery timeout five times over on a live heartbeat:
        # nobody took it for lost, so it ran once.
        assert long.attempts == 1, [str(e) for e in wf.history]
        assert not [e for e in wf.history if e.by == "recovery"], [str(e) for e in wf.history]
        # The retry ran no earlier than its backoff and not minutes late, by the one clock
        # every process wrote the history with.
        assert flaky.attempts == 2
        failed = _at(_entries(wf, "flaky", "fail")[-1])
        retried = _at(_entries(wf, "flaky", "dispatch")[-1])
        waited = (retried - failed).total_seconds()
        assert RETRY <= waited <= RETRY + LATE, f"{wf.id}: the retry ran {waited:.1f}s after"
    # Three sagas of one 10 s step and a 3 s retry each, on three workers: a retry two
    # minutes late (or a stolen attempt run again) would take minutes.
    assert took < 60, f"the three workflows took {took:.0f}s"
    assert check_ledger(Ledger(tmp_path / "ledger.jsonl").records(), finals) == []
    for name in ("recover-ahead", "recover-behind"):
        assert "resume" not in procs.log(name), procs.log(name)


@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["ahead", "behind"])
def test_run_timeout_is_seconds_of_real_time_on_a_skewed_host(
    server: RedisServer, tmp_path: Path, skew: int
) -> None:
    """`run --timeout` waits on the monotonic clock: with no worker, it gives up after its
    seconds of real time, however far the host's wall clock is off."""
    faketime = _faketime()
    trip = TESTS.parent / "examples" / "trip.yaml"
    given = {"origin": "TPE", "destination": "NRT", "nights": 1, "amount": 1, "email": "a@b.c"}
    began = time.monotonic()
    done = subprocess.run(
        [faketime, "-f", f"{skew:+d}s", sys.executable, "-m", "statesaga.cli", "run", str(trip),
         "--store", server.url, "--queue", f"rq://127.0.0.1:{server.port}/0?queue=nobody",
         "--timeout", "4", "--input", json.dumps(given)],
        capture_output=True, text=True, check=False, timeout=WAIT,
    )  # fmt: skip
    took = time.monotonic() - began
    assert done.returncode == 1 and "--timeout 4s reached" in done.stderr, done.stderr
    assert 4 <= took < 30, f"gave up after {took:.1f}s"
