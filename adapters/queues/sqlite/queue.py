"""`sqlq:///relative.db`, `sqlq:////abs/path.db`: a durable job queue in a SQLite file, served by
`statesaga worker` processes on one machine, with no Redis.

Why a queue in a file: a Python process runs its steps on one core (the GIL), so however many
threads run workflows in one process, they share that core (benchmarks/scaling.py shows the
curve). Several worker processes on one file use every core of the machine. The store's file
can hold the queue too: `--store sqlite:///app.db --queue sqlq:///app.db`.

- A job is a row: its payload (`Job.to_dict()` as JSON, never pickle), when it falls due (epoch
  seconds, the clock every process of the machine shares), a revision and the worker holding it.
- A claim is a revision check, as a store's save is: a worker reads due free jobs in a
  snapshot, then updates one `WHERE id = ? AND revision = ? AND worker IS NULL`; of two workers
  that read the same job, one updates it and the other finds no row and tries the next.
- At least once: a job that ran is deleted in the same transaction as its worker's next claim
  (one commit per job to enqueue, one to claim). Each serving worker beats in `queue_workers`
  every `lease / 5` seconds; the jobs held by a worker whose beat is older than `lease` (it was
  killed) are freed for the others. Such a job may run twice: its attempt token makes the
  second a no-op, and a step the dead worker left EXECUTING is brought back by
  `statesaga recover` (the workflow's heartbeat goes stale), as on RQ.
- `?threads=N`: a worker process runs N jobs at once, each on its own thread. They share one
  core (the GIL) but their saves share the store's group commit (one fsync for several), so
  processes times threads is how to fill a machine: one process per core, a few threads each.
- Connections, WAL, `synchronous` (FULL by default: an enqueue that returned is on disk) and the
  busy timeout are the SQLite store's (statesaga.adapters.stores.sqlite); every write is BEGIN
  IMMEDIATE, so a writer waits for the lock instead of failing.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from statesaga.adapters.queues._poll import wait_until
from statesaga.errors import AdapterError
from statesaga.ports import Job, JobRunner, ServeOptions, WorkerQueue

from ...stores.sqlite import SQLiteStore, immediate  # noqa: TID251, TID252 (relative, so mypy reads the class)

log = logging.getLogger("statesaga.worker")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_jobs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    queue    TEXT NOT NULL,
    due      REAL NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0,
    worker   TEXT,
    payload  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_jobs_ready ON queue_jobs (queue, worker, due, id);
CREATE INDEX IF NOT EXISTS queue_jobs_worker ON queue_jobs (worker);
CREATE TABLE IF NOT EXISTS queue_workers (
    name  TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    beat  REAL NOT NULL
);
"""

DEFAULT_QUEUE = "statesaga"
#: Seconds without a beat after which a worker counts as dead and its jobs are freed.
DEFAULT_LEASE = 15.0
#: Due free jobs read per claim: a worker that loses the race for one tries the next.
_CANDIDATES = 8


class SQLiteQueue(WorkerQueue):  # type: ignore[misc]  # mypy reads statesaga.* as Any here
    """The Queue port (and WorkerQueue: `statesaga worker` serves it) on one SQLite file."""

    #: Jobs run in worker processes (`statesaga worker`), not where they are enqueued.
    in_process = False

    def __init__(
        self,
        path: str | Path,
        name: str = DEFAULT_QUEUE,
        *,
        synchronous: str = "full",
        timeout: float = 30.0,
        lease: float = DEFAULT_LEASE,
        threads: int = 1,
        poll_interval: float = 0.05,
    ) -> None:
        # The store's connections (thread-local, WAL, busy timeout, synchronous), not its table.
        self._db = SQLiteStore(path, synchronous=synchronous, timeout=timeout)
        self.path = self._db.path
        self.name = name
        self.lease = lease
        #: Jobs a worker process runs at once, each on its own thread (see the module docstring).
        self.threads = threads
        self.poll_interval = poll_interval
        self._ready = False

    @classmethod
    def from_url(cls, url: str) -> SQLiteQueue:
        parts = urlsplit(url)
        if parts.scheme != "sqlq" or parts.netloc:
            raise AdapterError(
                f"not a sqlite queue URL: {url!r} "
                "(expected sqlq:///relative.db or sqlq:////absolute/path.db)"
            )
        path = parts.path[1:]  # urlsplit keeps the slash after the empty host
        if not path:
            raise AdapterError(f"sqlite queue URL names no file: {url!r}")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - {"queue", "synchronous", "timeout", "lease", "threads"}
        if unknown:
            raise AdapterError(f"unknown sqlq URL option(s) {sorted(unknown)} in {url!r}")
        name = query.get("queue", [DEFAULT_QUEUE])[-1]
        if not name:
            raise AdapterError(f"sqlite queue URL names an empty queue: {url!r}")
        timeout = _seconds(url, "timeout", query, 30.0)
        lease = _seconds(url, "lease", query, DEFAULT_LEASE)
        if lease < 1:
            raise AdapterError(f"sqlq URL option lease must be at least 1 second: {url!r}")
        threads = query.get("threads", ["1"])[-1]
        if not threads.isdigit() or not 1 <= int(threads) <= 256:
            raise AdapterError(
                f"sqlq URL option threads must be a whole number from 1 to 256: {url!r}"
            )
        synchronous = query.get("synchronous", ["full"])[-1]
        return cls(
            path, name, synchronous=synchronous, timeout=timeout, lease=lease, threads=int(threads)
        )

    # -- the database ----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = self._db._thread_conn()
        if not self._ready:
            with immediate(conn):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            self._ready = True
        return conn

    def _writing(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction on this thread's writer connection (the store's fine-grained
        wait for another process's write lock)."""
        return immediate(self._db.writer(), self._db.timeout)

    def _run(self, what: str, action: Callable[[sqlite3.Connection], object]) -> object:
        try:
            return action(self._conn())
        except sqlite3.Error as exc:
            raise AdapterError(f"sqlite queue {self.path}: cannot {what}: {exc}") from None
        except AdapterError as exc:  # the connection's own message names a store
            raise AdapterError(str(exc).replace("sqlite store", "sqlite queue", 1)) from None

    def check(self) -> None:
        """Raise AdapterError unless the file opens (called before a workflow is stored)."""
        self._run("open", lambda conn: None)

    # -- the port --------------------------------------------------------------------------
    def bind(self, runner: JobRunner) -> None:
        """Nothing to do: jobs run in worker processes, each with its own engine."""

    def enqueue(self, job: Job, delay: float = 0.0) -> None:
        payload = json.dumps(job.to_dict(), ensure_ascii=False)
        due = time.time() + max(delay, 0.0)

        def insert(_: sqlite3.Connection) -> None:
            with self._writing() as conn:
                conn.execute(
                    "INSERT INTO queue_jobs (queue, due, payload) VALUES (?, ?, ?)",
                    (self.name, due, payload),
                )

        self._run("enqueue", insert)

    def drain(self, until: Callable[[], bool], timeout: float | None = None) -> None:
        """Wait for `until()` while workers elsewhere run the jobs (polls, backing off to 0.5 s)."""
        wait_until(until, timeout, self.poll_interval)

    def serve(self, runner: JobRunner, options: ServeOptions) -> bool:
        """The WorkerQueue port: run this queue's jobs here (sqlite_queue_worker)."""
        from .worker import QueueWorker  # noqa: TID251 (relative, as above)

        return QueueWorker(self, runner, options).run()

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteQueue({str(self.path)!r}, queue={self.name!r})"

    # -- what workers do (statesaga.adapters.queues.sqlite.worker) -------------------------
    def claim(self, worker: str, done: Sequence[int] = ()) -> tuple[int, Job | None] | None:
        """Delete the jobs `worker` ran (`done`), then claim the first due free job by its
        revision. Returns (row id, job) — job None when its payload cannot be read (it is
        then deleted with the next claim) — or None when no job is due."""

        def take(conn: sqlite3.Connection) -> tuple[int, Job | None] | None:
            ran = [(job_id, worker) for job_id in done]
            while True:
                rows = conn.execute(
                    "SELECT id, revision, payload FROM queue_jobs"
                    " WHERE queue = ? AND worker IS NULL AND due <= ? ORDER BY due, id LIMIT ?",
                    (self.name, time.time(), _CANDIDATES),
                ).fetchall()
                if not rows and not ran:
                    return None
                taken = None
                with self._writing() as writer:
                    writer.executemany("DELETE FROM queue_jobs WHERE id = ? AND worker = ?", ran)
                    ran = []
                    for job_id, revision, payload in rows:
                        cursor = writer.execute(
                            "UPDATE queue_jobs SET worker = ?, revision = revision + 1"
                            " WHERE id = ? AND revision = ? AND worker IS NULL",
                            (worker, job_id, revision),
                        )
                        if cursor.rowcount == 1:
                            taken = (job_id, _job(job_id, payload))
                            break
                if taken is not None or not rows:
                    return taken
                # Every candidate went to other workers: read again.

        result = self._run("claim a job", take)
        assert result is None or isinstance(result, tuple)
        return result

    def next_due(self) -> float | None:
        """When the first free job falls due (epoch seconds), None when there is none."""
        row = self._run(
            "read the queue",
            lambda conn: conn.execute(
                "SELECT MIN(due) FROM queue_jobs WHERE queue = ? AND worker IS NULL", (self.name,)
            ).fetchone(),
        )
        assert isinstance(row, tuple)
        return None if row[0] is None else float(row[0])

    def beat(self, worker: str) -> int:
        """Say `worker` lives; free the jobs of workers not heard of for `lease` seconds.
        Returns how many jobs were freed."""
        now = time.time()

        def write(_: sqlite3.Connection) -> int:
            with self._writing() as conn:
                conn.execute(
                    "INSERT INTO queue_workers (name, queue, beat) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET beat = excluded.beat",
                    (worker, self.name, now),
                )
                conn.execute("DELETE FROM queue_workers WHERE beat < ?", (now - self.lease,))
                return int(
                    conn.execute(
                        "UPDATE queue_jobs SET worker = NULL, revision = revision + 1"
                        " WHERE worker IS NOT NULL"
                        " AND worker NOT IN (SELECT name FROM queue_workers)"
                    ).rowcount
                )

        freed = self._run("beat", write)
        assert isinstance(freed, int)
        return freed

    def leave(self, worker: str, done: Sequence[int]) -> None:
        """A worker stops: delete the jobs it ran, free any it still holds, forget it."""

        def write(_: sqlite3.Connection) -> None:
            with self._writing() as conn:
                conn.executemany(
                    "DELETE FROM queue_jobs WHERE id = ? AND worker = ?",
                    [(job_id, worker) for job_id in done],
                )
                conn.execute(
                    "UPDATE queue_jobs SET worker = NULL, revision = revision + 1 WHERE worker = ?",
                    (worker,),
                )
                conn.execute("DELETE FROM queue_workers WHERE name = ?", (worker,))

        self._run("release its jobs", write)

    # -- what tests and operators look at --------------------------------------------------
    def worker_count(self) -> int:
        """How many workers serve this queue now (`statesaga run` says when none)."""
        row = self._run(
            "read the workers",
            lambda conn: conn.execute(
                "SELECT COUNT(*) FROM queue_workers WHERE queue = ? AND beat >= ?",
                (self.name, time.time() - self.lease),
            ).fetchone(),
        )
        assert isinstance(row, tuple)
        return int(row[0])

    def __len__(self) -> int:
        """Jobs not yet run (held by a worker or not)."""
        row = self._run(
            "read the queue",
            lambda conn: conn.execute(
                "SELECT COUNT(*) FROM queue_jobs WHERE queue = ?", (self.name,)
            ).fetchone(),
        )
        assert isinstance(row, tuple)
        return int(row[0])


def _job(job_id: int, payload: str) -> Job | None:
    try:
        return Job.from_dict(json.loads(payload))
    except (ValueError, TypeError) as exc:
        log.error("sqlite queue job %s cannot be read and is dropped: %s", job_id, exc)
        return None


def _seconds(url: str, key: str, query: dict[str, list[str]], default: float) -> float:
    try:
        value = float(query.get(key, [str(default)])[-1])
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:  # also refuses nan and inf
        raise AdapterError(f"sqlq URL option {key} must be seconds from 0 to 86400: {url!r}")
    return value


__all__ = ["DEFAULT_LEASE", "SQLiteQueue"]
