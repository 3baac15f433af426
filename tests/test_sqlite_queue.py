"""`sqlq://`: the durable SQLite queue. The Queue contract, claims decided by the revision
check between real processes, a killed worker's jobs freed for the others, and sagas run by
`statesaga worker` processes sharing one SQLite file with no Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from statesaga.adapters.queues.sqlite.queue import SQLiteQueue
from statesaga.errors import AdapterError
from statesaga.plugins import open_queue
from statesaga.ports import Job, Queue, ServeOptions
from statesaga.testing import QueueConformance, Recorder
from statesaga.testing.queue_suite import step_job


@pytest.fixture
def sqlq_url(tmp_path: Path) -> str:
    return f"sqlq:///{tmp_path / 'statesaga.db'}"


class TestSQLiteQueueConformance(QueueConformance):
    """The Queue contract, with the jobs served here by a burst worker."""

    # The suite measures delays on the monotonic clock; the queue on the wall clock.
    timing_tolerance = 0.01

    @pytest.fixture
    def queue(self, sqlq_url: str) -> Iterator[Queue]:
        queue = SQLiteQueue.from_url(sqlq_url)
        yield queue
        queue.close()

    @pytest.fixture
    def recorder(self, queue: Queue) -> Iterator[Recorder]:
        rec = Recorder()
        queue.bind(rec)  # a no-op: jobs reach `rec` through the worker below
        self._runner = rec
        yield rec

    def run_jobs(self, queue: Queue, until: Callable[[], bool], timeout: float) -> None:
        assert isinstance(queue, SQLiteQueue)
        deadline = time.monotonic() + timeout
        options = ServeOptions(name="conformance", burst=True)
        while not until() and time.monotonic() < deadline:
            queue.serve(self._runner, options)
            time.sleep(0.005)


def test_the_url_is_checked() -> None:
    for url, says in [
        ("sqlq://host/x.db", "not a sqlite queue URL"),
        ("sqlq:///", "names no file"),
        ("sqlq:///x.db?queue=", "empty queue"),
        ("sqlq:///x.db?lease=0.5", "lease must be at least 1 second"),
        ("sqlq:///x.db?timeout=nan", "timeout must be seconds"),
        ("sqlq:///x.db?bogus=1", "unknown sqlq URL option"),
        ("sqlq:///x.db?threads=0", "threads must be a whole number"),
        ("sqlq:///x.db?threads=two", "threads must be a whole number"),
    ]:
        with pytest.raises(AdapterError, match=says):
            SQLiteQueue.from_url(url)


def test_a_file_that_cannot_be_opened_is_named_as_the_queue_before_anything_is_stored(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    queue = SQLiteQueue.from_url(f"sqlq:///{blocked / 'q.db'}")
    with pytest.raises(AdapterError, match=r"^sqlite queue .*q\.db cannot be opened"):
        queue.check()  # what `statesaga run` calls before it stores the workflow


def test_it_is_found_through_its_entry_point(sqlq_url: str) -> None:
    queue = open_queue(sqlq_url + "?queue=orders&lease=5")
    assert isinstance(queue, SQLiteQueue)
    assert (queue.name, queue.lease) == ("orders", 5.0)
    queue.close()


def test_queues_in_one_file_keep_their_own_jobs(sqlq_url: str) -> None:
    a, b = SQLiteQueue.from_url(sqlq_url + "?queue=a"), SQLiteQueue.from_url(sqlq_url + "?queue=b")
    a.enqueue(step_job(1))
    assert (len(a), len(b)) == (1, 0)
    assert b.claim("w") is None
    claimed = a.claim("w")
    assert claimed is not None and claimed[1] == step_job(1)
    a.close()
    b.close()


def test_an_unreadable_payload_is_dropped_and_the_next_job_runs(sqlq_url: str) -> None:
    queue = SQLiteQueue.from_url(sqlq_url)
    queue.enqueue(step_job(1))
    queue.enqueue(step_job(2))
    conn = queue._conn()
    conn.execute("UPDATE queue_jobs SET payload = ? WHERE id = 1", ('{"kind": "pickle"}',))
    ran: list[Job] = []
    assert queue.serve(ran.append, ServeOptions(name="w", burst=True))
    assert ran == [step_job(2)]
    assert len(queue) == 0
    queue.close()


def test_a_dead_workers_jobs_are_freed_once_its_lease_runs_out(sqlq_url: str) -> None:
    queue = SQLiteQueue.from_url(sqlq_url + "?lease=1")
    queue.enqueue(step_job(1))
    queue.beat("dead")
    assert queue.claim("dead") is not None
    assert queue.claim("alive") is None, "a live worker's job was taken"
    assert queue.beat("alive") == 0
    time.sleep(1.1)
    assert queue.beat("alive") == 1
    claimed = queue.claim("alive")
    assert claimed is not None and claimed[1] == step_job(1)
    assert queue.worker_count() == 1
    queue.close()


def test_a_worker_with_threads_runs_jobs_at_once_each_once(sqlq_url: str) -> None:
    queue = SQLiteQueue.from_url(sqlq_url + "?threads=4")
    for n in range(40):
        queue.enqueue(step_job(n))
    ran: list[tuple[str, str]] = []

    def runner(job: Job) -> None:
        time.sleep(0.02)  # long enough that every thread finds a job
        ran.append((job.step, threading.current_thread().name))

    assert queue.serve(runner, ServeOptions(name="w", burst=True))
    assert sorted(step for step, _ in ran) == sorted(f"s{n}" for n in range(40))
    assert len({thread for _, thread in ran}) == 4
    assert len(queue) == 0
    queue.close()


# Each process claims jobs as fast as it can and prints the ids it got; every job must be
# claimed by exactly one of them (the revision check decides the races).
CLAIMER = """
import json, sys
from statesaga.adapters.queues.sqlite.queue import SQLiteQueue
queue = SQLiteQueue.from_url(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
got, done = [], []
while True:
    claimed = queue.claim(sys.argv[2], done)
    if claimed is None:
        break
    got.append(claimed[1].step)
    done = [claimed[0]]
queue.claim(sys.argv[2], done)
print(json.dumps(got), flush=True)
"""


def test_processes_racing_for_jobs_each_claim_different_ones(sqlq_url: str) -> None:
    queue = SQLiteQueue.from_url(sqlq_url)
    for n in range(300):
        queue.enqueue(step_job(n))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, sqlq_url, f"w{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    claimed = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    every = [step for got in claimed for step in got]
    assert sorted(every) == sorted(f"s{n}" for n in range(300))
    assert len(queue) == 0
    queue.close()


TESTS = Path(__file__).parent


def _cli(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "statesaga.cli", *args], env=env, stdout=out, stderr=out
        )


@pytest.mark.slow
def test_two_worker_processes_on_one_file_survive_a_sigkill(tmp_path: Path) -> None:
    """Two `statesaga worker` processes of two threads each and `statesaga recover --every`
    share one SQLite file (store and queue); one worker is SIGKILLed mid-run and replaced.
    Every saga converges, each effect is applied at most once net, and nothing is left for
    recovery or in the queue."""
    from ops_handlers import chaos_saga
    from statesaga.definitions.load import load_definition
    from statesaga.engine import Engine
    from statesaga.models import WorkflowStatus
    from statesaga.plugins import open_store
    from statesaga.runtime.recovery import get_recoverable_workflows
    from statesaga.security.allowlist import AllowList
    from statesaga.verify.crashcheck import LEDGER_ENV, Ledger, check_ledger

    db = tmp_path / "app.db"
    store_url, queue_url = f"sqlite:///{db}", f"sqlq:///{db}?lease=2&threads=2"
    ledger = tmp_path / "ledger.jsonl"
    log = tmp_path / "processes.log"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        OPS_TEST_WORK="0.05",
        STATESAGA_STORE=store_url,
        STATESAGA_QUEUE=queue_url,
        **{LEDGER_ENV: str(ledger)},
    )
    worker_args = ("worker", "--handlers", "ops_handlers", "--heartbeat", "1")
    worker_args += ("--log-level", "WARNING")
    workers = [_cli(env, log, *worker_args) for _ in range(2)]
    recovery = _cli(env, log, "recover", "--every", "1", "--timeout", "4")
    store = open_store(store_url)
    starter = Engine(
        store, open_queue(queue_url), heartbeat_interval=0, allowed=AllowList.of(["ops_handlers"])
    )
    definition = load_definition(chaos_saga(retry_interval=0.2))
    ended = {WorkflowStatus.COMPLETED, WorkflowStatus.COMPENSATED, WorkflowStatus.FAILED}
    try:
        # A third retry two steps after a failed first attempt (delayed jobs), a third
        # unwind from the fourth step (compensations), a third go straight through.
        inputs = [{"flaky": ["reserve_budget", "notify"]}, {"fail_at": "book_supplier"}, {}]
        expect = [WorkflowStatus.COMPLETED, WorkflowStatus.COMPENSATED, WorkflowStatus.COMPLETED]
        ids = [starter.start(definition, inputs[n % 3]).id for n in range(30)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(store.get(i).status in ended for i in ids):
            time.sleep(0.05)
        workers[0].kill()  # SIGKILL, mid-run
        workers[0].wait()
        workers.append(_cli(env, log, *worker_args))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            docs = [store.get(i) for i in ids]
            if all(d.status in ended for d in docs):
                break
            time.sleep(0.25)
        assert all(d.status in ended for d in docs), (
            [d.status.value for d in docs],
            log.read_text()[-3000:],
        )
        assert [d.status for d in docs] == [expect[n % 3] for n in range(30)], [
            (d.status.value, d.reason) for d in docs
        ]
        assert check_ledger(Ledger(ledger).records(), docs) == []
        assert get_recoverable_workflows(store, 0.0) == []
        assert recovery.poll() is None, "the recovery loop exited"
    finally:
        for proc in [*workers, recovery]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*workers, recovery]:
            proc.wait(30)
    assert [w.returncode for w in workers[1:]] == [0, 0], log.read_text()[-3000:]
    assert len(starter.queue) == 0  # type: ignore[arg-type]
    starter.queue.close()
    store.close()
