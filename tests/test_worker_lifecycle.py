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
from statesaga.definitions.load import load_definition
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
    common = ["--store", store, "--handlers", "ops_handlers", "--log-level", "info"]
    workers = {
        name: statesaga(
            "worker",
            "--queue",
            url,
            *common,
            *(["--with-scheduler"] if name == "sched" else []),
            env=env,
            log=logs[name],
        )
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


def step_states(engine: Engine, wf_id: str) -> dict[str, StepStatus]:
    return {s.name: s.status for s in engine.get(wf_id).steps}


def executing(engine: Engine, wf_id: str) -> str | None:
    names = [n for n, s in step_states(engine, wf_id).items() if s is StepStatus.EXECUTING]
    return names[0] if names else None


def test_sigterm_finishes_the_job_in_hand_takes_no_other_and_exits_soon_after(
    server: RedisServer, tmp_path: Path
) -> None:
    env = env_for(tmp_path, work=1.5)
    queue, store = f"rq://127.0.0.1:{server.port}/0?queue=term", f"{server.url}?durability=none"
    log = tmp_path / "worker.log"
    proc = statesaga(
        "worker", "--queue", queue, "--store", store, "--handlers", "ops_handlers",
        "--with-scheduler", env=env, log=log,
    )  # fmt: skip
    try:
        engine = engine_on(queue, store)
        # Two steps are queued at once (fetch_rates, hold_inventory): the worker takes one.
        wf_id = engine.start(load_definition(chaos_saga()), {}).id
        in_hand = eventually(lambda: executing(engine, wf_id), "a step to run")
        proc.send_signal(signal.SIGTERM)
        eventually(
            lambda: step_states(engine, wf_id)[in_hand] is StepStatus.COMPLETED,
            "the step in hand to complete",
        )
        done = time.monotonic()
        proc.wait(WAIT)
        assert time.monotonic() - done < 2.0
    finally:
        stop(proc)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "Traceback" not in text, text
    states = step_states(engine, wf_id)
    started = [n for n, s in states.items() if s not in (StepStatus.PENDING, StepStatus.QUEUED)]
    assert started == [in_hand], states  # nothing claimed after the signal


def test_a_second_signal_stops_at_once_and_leaves_the_step_to_recovery(
    server: RedisServer, tmp_path: Path
) -> None:
    env = env_for(tmp_path, work=20)
    queue, store = f"rq://127.0.0.1:{server.port}/0?queue=cold", f"{server.url}?durability=none"
    log = tmp_path / "worker.log"
    proc = statesaga(
        "worker", "--queue", queue, "--store", store, "--handlers", "ops_handlers",
        env=env, log=log,
    )  # fmt: skip
    try:
        engine = engine_on(queue, store)
        wf_id = engine.start(load_definition(chaos_saga()), {}).id
        in_hand = eventually(lambda: executing(engine, wf_id), "a step to run")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # the first signal waits for the step
        proc.send_signal(signal.SIGINT)  # Ctrl+C as the second
        second = time.monotonic()
        proc.wait(WAIT)
        assert time.monotonic() - second < 2.0, log.read_text()
    finally:
        stop(proc)
    text = log.read_text()
    assert "Traceback" not in text, text
    assert proc.returncode == -signal.SIGINT  # ended as a killed worker, by the signal
    assert step_states(engine, wf_id)[in_hand] is StepStatus.EXECUTING  # recovery's now


def test_a_pool_that_ran_jobs_stops_within_seconds_of_sigterm(
    server: RedisServer, tmp_path: Path
) -> None:
    env = env_for(tmp_path)
    queue, store = f"rq://127.0.0.1:{server.port}/0?queue=pool", f"{server.url}?durability=none"
    log = tmp_path / "pool.log"
    pool = statesaga(
        "worker", "--queue", queue, "--store", store, "--handlers", "ops_handlers",
        "--with-scheduler", "--processes", "2", env=env, log=log,
    )  # fmt: skip
    try:
        engine = engine_on(queue, store)
        ids = [engine.start(load_definition(chaos_saga(0.2)), {"flaky": ["charge"]}).id]
        ids += [engine.start(load_definition(chaos_saga(0.2)), {}).id for _ in range(3)]
        finals = [engine.wait(wf_id, WAIT) for wf_id in ids]
        assert {wf.status for wf in finals} == {WorkflowStatus.COMPLETED}
        pool.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        pool.wait(WAIT)
        # Idle workers stop at once; 5 s is the bar, for a loaded machine.
        assert time.monotonic() - asked < 5.0, log.read_text()
    finally:
        stop(pool)
    text = log.read_text()
    assert pool.returncode == 0, text
    assert "Traceback" not in text and "cold shut down" not in text, text


SUPERVISE = """
import logging, sys
from statesaga.cli.supervisor import Child, Supervisor
logging.basicConfig(level=logging.INFO, format="%(created).3f %(message)s")
py = sys.executable
slots = {
    "sleeper": [py, "-c", "import time; time.sleep(600)"],
    "quitter": [py, "-c", "import sys; sys.exit(3)"],
    "quitter2": [py, "-c", "import sys; sys.exit(4)"],
}
Supervisor([Child(n, slots[n]) for n in sys.argv[1:]], {}, poll=0.05, stop_timeout=5).run()
"""


def supervise(tmp_path: Path, *slots: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "supervisor.log"
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISE, *slots], stdout=out, stderr=out, env=dict(os.environ)
    )
    return proc, log


def pids_of(log: Path, label: str) -> list[int]:
    return [int(p) for p in re.findall(rf"{label} started \(pid (\d+)\)", log.read_text())]


def test_a_child_killed_from_outside_is_restarted_at_once_however_often(tmp_path: Path) -> None:
    proc, log = supervise(tmp_path, "sleeper", "quitter")
    try:
        for kill in range(1, 4):
            pid = eventually(lambda k=kill: len(pids_of(log, "sleeper")) == k, "a start")
            os.kill(pids_of(log, "sleeper")[-1], signal.SIGKILL)
            killed = time.monotonic()
            eventually(lambda k=kill: len(pids_of(log, "sleeper")) == k + 1, "the restart")
            assert time.monotonic() - killed < 1.0, pid
        eventually(lambda: log.read_text().count("quitter exited with code 3") >= 3, "3 exits")
    finally:
        stop(proc)
    text = log.read_text()
    assert text.count("sleeper was killed by SIGKILL") == 3, text
    assert "restarting it in" not in "".join(
        line for line in text.splitlines() if "sleeper" in line
    )
    # The slot that keeps exiting by itself waits longer each time, one line a time.
    pauses = [float(p) for p in re.findall(r"quitter exited .* restarting it in ([\d.]+) s", text)]
    assert pauses[:3] == [1.0, 2.0, 4.0], text
    assert proc.returncode == 0 and "Traceback" not in text


def test_never_are_all_worker_slots_paused_at_once(tmp_path: Path) -> None:
    proc, log = supervise(tmp_path, "quitter", "quitter2")
    try:
        time.sleep(8)
    finally:
        stop(proc)
    text = log.read_text()
    starts = sorted(
        float(line.split()[0]) for line in text.splitlines() if " started (pid " in line
    )
    # One slot or the other starts again LAST_SLOT_PAUSE (1 s) after it exited (the child
    # lives ~0.3 s); with both backing off, the gaps would grow to 4 and 8 s.
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) >= 5 and max(gaps) < 2.5, (gaps, text)
    assert "every other worker slot is paused" in text


def test_ctrl_c_during_run_returns_at_once_with_the_resume_hint_while_a_handler_runs(
    tmp_path: Path,
) -> None:
    import yaml

    definition = tmp_path / "chaos.yaml"
    definition.write_text(yaml.safe_dump(chaos_saga()))  # each step has `timeout: 20`
    store = f"sqlite:///{tmp_path / 'run.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "statesaga.cli", "run", str(definition), "--store", store,
         "--handlers", "ops_handlers"],
        env=env_for(tmp_path, work=30), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # a terminal of its own: Ctrl+C goes to its process group
    )  # fmt: skip
    try:
        engine = Engine(open_store(store), open_queue("inline://"))
        wf_id = eventually(lambda: [w.id for w in engine.store.list()], "the workflow")[0]
        eventually(lambda: executing(engine, wf_id), "its first step to run")
        os.killpg(proc.pid, signal.SIGINT)
        pressed = time.monotonic()
        out, _ = proc.communicate(timeout=WAIT)
        assert time.monotonic() - pressed < 1.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = out.decode()
    assert proc.returncode == 130, text
    assert f"interrupted: {wf_id} is RUNNING" in text and "statesaga recover" in text, text
    assert "Traceback" not in text and "Exception ignored" not in text, text
