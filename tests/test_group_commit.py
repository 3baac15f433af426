"""SQLite group commit: saves of several threads share one transaction and one fsync, and
each is still revision-checked (a stale one fails alone, the others are stored)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.definitions.load import load_definition
from statesaga.errors import ConflictError
from statesaga.models import WorkflowState, WorkflowStatus

DEFINITION = load_definition({"workflow": "g", "steps": [{"name": "a", "action": "a"}]})


def test_saves_waiting_for_the_lock_go_in_one_transaction_each_revision_checked(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    docs = [DEFINITION.instantiate({"n": i}) for i in range(8)]
    for wf in docs:
        store.create(wf)
    stale = docs[3].model_copy(update={"revision": 0})
    before = store.group_commit.transactions, store.group_commit.writes
    # Another process holds the write lock, so the first save (the leader) waits in BEGIN
    # IMMEDIATE while the other seven queue up behind it; the leader takes its group once it
    # holds the lock, so all eight go together.
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    errors: dict[str, BaseException] = {}

    def save(wf: WorkflowState) -> None:
        wf.status = WorkflowStatus.RUNNING
        try:
            store.save(wf)
        except ConflictError as exc:
            errors[wf.id] = exc

    threads = [threading.Thread(target=save, args=(wf,)) for wf in [*docs[:3], stale, *docs[4:]]]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while store.group_commit.waiting < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.group_commit.waiting == 8
    other.execute("COMMIT")
    other.close()
    for t in threads:
        t.join(timeout=30)
    transactions = store.group_commit.transactions - before[0]
    writes = store.group_commit.writes - before[1]
    assert (transactions, writes) == (1, 8)  # one transaction, one fsync
    assert list(errors) == [stale.id]  # the stale save lost its revision check, alone
    fresh = SQLiteStore(tmp_path / "g.db")
    for wf in docs:
        got = fresh.get(wf.id)
        if wf.id == stale.id:
            assert (got.revision, got.status) == (1, WorkflowStatus.PENDING)
        else:
            assert (got.revision, got.status) == (2, WorkflowStatus.RUNNING)
    fresh.close()
    store.close()


def test_a_failed_commit_fails_every_save_of_its_group_and_stores_none(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db", timeout=0.2)
    wf = DEFINITION.instantiate({})
    store.create(wf)
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the lock is never released in time
    wf.status = WorkflowStatus.RUNNING
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.save(wf)
    other.execute("ROLLBACK")
    other.close()
    assert wf.revision == 1 and store.get(wf.id).status is WorkflowStatus.PENDING
    store.save(wf)  # the group is free again
    assert store.get(wf.id).revision == 2
    store.close()


def test_a_write_that_raises_fails_alone_and_the_rest_of_its_group_is_stored(
    tmp_path: Path,
) -> None:
    """No savepoint per write: SQLite undoes the failing statement alone, the transaction goes
    on, and every thread learns how its own write ended."""
    store = SQLiteStore(tmp_path / "g.db")
    conn = store._thread_conn()
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute("INSERT INTO t VALUES (2, 'taken')")
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the group forms behind the lock
    outcomes: dict[int, BaseException | None] = {}

    def write(n: int) -> None:
        try:
            store.group_commit.run(
                lambda c: c.execute("INSERT INTO t VALUES (?, ?)", (n, f"w{n}")),
                store._thread_conn,
            )
            outcomes[n] = None
        except sqlite3.Error as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=write, args=(n,)) for n in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while store.group_commit.waiting < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    before = store.group_commit.transactions
    other.execute("COMMIT")
    other.close()
    for t in threads:
        t.join(timeout=30)
    assert isinstance(outcomes.pop(2), sqlite3.IntegrityError)
    assert outcomes == {1: None, 3: None, 4: None}
    assert store.group_commit.transactions - before == 1  # the four together
    rows = store._thread_conn().execute("SELECT id, v FROM t ORDER BY id").fetchall()
    assert rows == [(1, "w1"), (2, "taken"), (3, "w3"), (4, "w4")]
    store.close()
