"""Throughput of statesaga on RQ against raw RQ, in steps (jobs) per second, 1 and 2 workers.

    python benchmarks/rq_throughput.py [--workflows 100] [--redis redis://127.0.0.1:6379/0]

statesaga: N workflows of a 5-step no-op saga, run by `statesaga worker` processes with the
Redis store (the shareable store; `--store sqlite` for a shared SQLite file instead). Raw RQ:
N chains of 5 no-op jobs (each job enqueues the next, as each step enqueues the next one), run
by `rq worker` processes: the same number of jobs, the same serializer (JSON), in-process jobs
(SimpleWorker) like statesaga's; the forking rq.Worker is measured too (on a tenth of the jobs),
which is what a fork per step would cost. Workers are registered before the clock starts.
Without --redis a private redis-server is started (AOF on, as the Redis store requires).
Prints steps/s and the ratio statesaga / raw RQ.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer
from statesaga.adapters.queues.rq.queue import RQQueue
from statesaga.context import StepContext
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.models import WorkflowStatus
from statesaga.plugins import open_store
from statesaga.registry import handler
from statesaga.security.allowlist import AllowList

HERE = Path(__file__).resolve().parent
STEPS = 5
SAGA = {
    "workflow": "noop_saga",
    "handlers": "rq_throughput",
    "steps": [{"name": f"s{i}", "action": "noop"} for i in range(STEPS)],
}


@handler()
def noop(ctx: StepContext) -> None:
    return None


def chain(counter: str, left: int) -> None:
    """A raw RQ no-op job that counts itself and enqueues the next link."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    job.connection.incr(counter)
    if left > 1:
        Queue(job.origin, connection=job.connection, serializer=JSONSerializer).enqueue(
            "rq_throughput.chain", counter, left - 1
        )


def timed_chain(key: str, left: int, t0: float) -> None:
    """A raw RQ no-op chain whose last link pushes the seconds since `t0` (its start) to `key`."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    if left > 1:
        Queue(job.origin, connection=job.connection, serializer=JSONSerializer).enqueue(
            "rq_throughput.timed_chain", key, left - 1, t0
        )
    else:
        job.connection.rpush(key, time.time() - t0)


@contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found: install it or pass --redis URL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--appendonly", "yes", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait()


def bin_of(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else name


@contextmanager
def processes(cmds: list[list[str]]) -> Iterator[None]:
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    procs = [
        subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for c in cmds
    ]
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def wait_for_workers(conn: redis.Redis, queue: Queue, n: int) -> None:
    while Worker.count(queue=queue) < n:
        time.sleep(0.05)


def run_statesaga(url: str, workers: int, n: int, store_kind: str, tmp: Path) -> float:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    queue_url = url.replace("redis://", "rq://", 1) + f"?queue={name}"
    if store_kind == "redis":
        store_url = f"{url}?prefix={name}:"
    else:
        store_url = f"sqlite:///{tmp / (name + '.db')}"
    store = open_store(store_url)
    store.initialize()
    queue = RQQueue.from_url(queue_url)
    # SAGA names its handler module: a hint the allow-list must match.
    engine = Engine(store, queue, allowed=AllowList.of(["rq_throughput"]))
    definition = load_definition(SAGA)
    cmd = [
        bin_of("statesaga"),
        "worker",
        "--queue",
        queue_url,
        "--store",
        store_url,
        "--handlers",
        "rq_throughput",
        "--log-level",
        "WARNING",
    ]
    with processes([cmd] * workers):
        wait_for_workers(queue.connection, queue.rq_queue, workers)
        started = time.perf_counter()
        ids = [engine.start(definition, {}).id for _ in range(n)]
        # One read per poll (the oldest unfinished workflow), so polling does not compete
        # with the workers for the CPU and the server.
        while ids:
            if store.get(ids[0]).status is WorkflowStatus.COMPLETED:
                ids.pop(0)
            else:
                time.sleep(0.01)
        elapsed = time.perf_counter() - started
    queue.close()
    store.close()
    return n * STEPS / elapsed


LATENCY_STEPS = 3


def latency_statesaga(url: str, n: int, tmp: Path) -> list[float]:
    """Start -> COMPLETED of one 3-step saga at a time on one worker (Redis store), in
    seconds: the worker's finished_at minus the document's created_at (set before `start`
    saves it), so the submitter's polling does not round the figure."""
    name = f"lat-{uuid.uuid4().hex[:8]}"
    queue_url = url.replace("redis://", "rq://", 1) + f"?queue={name}"
    store_url = f"{url}?prefix={name}:"
    store = open_store(store_url)
    store.initialize()
    queue = RQQueue.from_url(queue_url)
    engine = Engine(store, queue, allowed=AllowList.of(["rq_throughput"]))
    definition = load_definition({**SAGA, "steps": SAGA["steps"][:LATENCY_STEPS]})
    cmd = [bin_of("statesaga"), "worker", "--queue", queue_url, "--store", store_url,
           "--handlers", "rq_throughput", "--log-level", "WARNING"]  # fmt: skip
    samples = []
    with processes([cmd]):
        wait_for_workers(queue.connection, queue.rq_queue, 1)
        for _ in range(n):
            wf_id = engine.start(definition, {}).id
            while (wf := store.get(wf_id)).status is not WorkflowStatus.COMPLETED:
                time.sleep(0.002)
            assert wf.finished_at is not None
            samples.append((wf.finished_at - wf.created_at).total_seconds())
    queue.close()
    store.close()
    return samples


def latency_raw(url: str, n: int) -> list[float]:
    """Enqueue -> last link done of one raw RQ chain of 3 no-op jobs at a time, in seconds."""
    name = f"rawlat-{uuid.uuid4().hex[:8]}"
    conn = redis.Redis.from_url(url)
    queue = Queue(name, connection=conn, serializer=JSONSerializer)
    key = f"{name}:done"
    cmd = [bin_of("rq"), "worker", "-u", url, "-w", "rq.worker.SimpleWorker", "-S", "json",
           "-q", "--disable-job-desc-logging", "-n", f"{name}-w", name]  # fmt: skip
    samples = []
    with processes([cmd]):
        wait_for_workers(conn, queue, 1)
        for _ in range(n):
            queue.enqueue("rq_throughput.timed_chain", key, LATENCY_STEPS, time.time())
            popped = conn.blpop([key], timeout=60)
            assert popped is not None, "the raw chain did not finish in 60 s"
            samples.append(float(popped[1]))
    conn.close()
    return samples


def run_raw(url: str, workers: int, n: int, worker_class: str) -> float:
    name = f"raw-{uuid.uuid4().hex[:8]}"
    conn = redis.Redis.from_url(url)
    queue = Queue(name, connection=conn, serializer=JSONSerializer)
    counter = f"{name}:count"
    cmd = [
        bin_of("rq"),
        "worker",
        "-u",
        url,
        "-w",
        worker_class,
        "-S",
        "json",
        "-q",
        "--disable-job-desc-logging",
        "-n",
        "",
        name,
    ]

    cmds = []
    for _ in range(workers):
        c = list(cmd)
        c[c.index("-n") + 1] = f"{name}-{uuid.uuid4().hex[:6]}"
        cmds.append(c)
    with processes(cmds):
        wait_for_workers(conn, queue, workers)
        started = time.perf_counter()
        for _ in range(n):
            queue.enqueue("rq_throughput.chain", counter, STEPS)
        while int(conn.get(counter) or 0) < n * STEPS:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    conn.close()
    return n * STEPS / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=100)
    parser.add_argument("--redis", default=None, help="redis URL (default: start one)")
    parser.add_argument("--store", choices=["redis", "sqlite"], default="redis")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))  # the submitting engine imports this module's handler too
    n = args.workflows
    results: dict[str, Any] = {}
    with redis_server(args.redis) as url, tempfile.TemporaryDirectory() as tmp:
        for w in (1, 2):
            s = run_statesaga(url, w, n, args.store, Path(tmp))
            raw = run_raw(url, w, n, "rq.worker.SimpleWorker")
            # A fork per job is slow enough that a tenth of the jobs gives a steady figure.
            fork = run_raw(url, w, max(n // 10, 4), "rq.worker.Worker")
            results[w] = (s, raw, fork)
            print(
                f"{w} worker(s), {n * STEPS} steps: statesaga ({args.store} store) {s:7.1f} steps/s"
                f" | raw RQ SimpleWorker {raw:7.1f} jobs/s | raw RQ forking Worker {fork:7.1f}"
                f" jobs/s | ratio statesaga/raw RQ = {s / raw:.2f}"
            )
    s1, s2 = results[1][0], results[2][0]
    raw1, raw2 = results[1][1], results[2][1]
    print(f"scaling 1 -> 2 workers: statesaga x{s2 / s1:.2f}, raw RQ x{raw2 / raw1:.2f}")


if __name__ == "__main__":
    main()
