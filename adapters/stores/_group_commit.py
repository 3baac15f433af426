"""Group commit for the SQLite store: the writes of several threads of one process in one
transaction, one COMMIT and one fsync for all of them (as databases do for their log).

A thread that finds no commit under way becomes the leader: it takes the file's write lock
(BEGIN IMMEDIATE on its own connection), then every write waiting by then, runs them in that
one transaction, COMMITs, and wakes exactly the threads whose writes it committed. Taking the
writes after the lock matters with several processes on one file: the writes that come while
another process holds the lock join the group (issue 33: two pinned processes × 4 threads
2,011-2,150 steps/s taking them before, 2,212-2,763 after). Writes that arrive after that
wait; when the leader is done it hands the lead to the first of them, which takes them all.
Each write keeps its own checks (the revision check is in its UPDATE), and one that raises
fails alone, in its own thread; a failed COMMIT fails every write of the group. Nothing
returns before its transaction is on disk. With one thread a group is one write: the same
transaction as before.

Why it is shaped so (issue 33's profile): every call into SQLite releases the GIL, and getting
it back while other threads run Python costs a thread switch, up to the interpreter's switch
interval. So a group makes as few calls as it can: a write is at most one statement that
changes anything (`_insert`, `_replace`, `_beat` in statesaga.adapters.stores.sqlite), which SQLite
undoes by itself when it fails (statement rollback), so no savepoint per write; and waking is
targeted (a lock per write) instead of every waiting thread waking on each commit.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

#: How another process's write lock is waited for: a try every 50 µs for the first 5 ms (a
#: whole group commit holds it 0.3-0.6 ms here), then pauses doubling up to 1 ms, so a lock
#: held long costs little CPU. SQLite's own busy handler sleeps 1, 2, 5, 10, 15... ms between
#: tries: processes sharing one file spent most of their time asleep next to a free lock
#: (issue 33: two pinned processes of four threads ran 1,143-1,420 steps/s with it,
#: 1,766-1,932 with doubling pauses from 50 µs, 1,921-2,095 with these).
_PAUSE = 0.00005
_FINE_FOR = 0.005
_LONGEST_PAUSE = 0.001


def busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock it needs."""
    text = str(exc)
    return "locked" in text or "busy" in text


def take_write_lock(conn: sqlite3.Connection, timeout: float) -> None:
    """BEGIN IMMEDIATE, waiting up to `timeout` seconds for another process's write lock in
    short steps. `conn` should have no busy handler of its own (busy_timeout 0), or SQLite
    sleeps first by its own, coarser steps."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        return
    except sqlite3.OperationalError as exc:
        if not busy(exc):
            raise
    start = time.monotonic()
    pause = _PAUSE
    while True:
        time.sleep(pause)
        if time.monotonic() - start > _FINE_FOR:
            pause = min(pause * 2, _LONGEST_PAUSE)
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not busy(exc) or time.monotonic() - start >= timeout:
                raise


class _Write:
    """One thread's write waiting for a group commit, and how it ended."""

    __slots__ = ("apply", "done", "error", "lead", "wake")

    def __init__(self, apply: Callable[[sqlite3.Connection], None]) -> None:
        self.apply = apply
        self.done = False
        #: Set by the leader before `wake`: this thread leads the next group.
        self.lead = False
        self.error: BaseException | None = None
        #: Held until the write is done or leads: a bare lock is the cheapest way to block
        #: one thread until another releases it (an Event is a Condition and two locks).
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit:
    """See the module docstring. `apply` functions make at most one change each."""

    def __init__(self, timeout: float = 30.0) -> None:
        #: How long a group waits for another process's write lock (the store's timeout).
        self.timeout = timeout
        self._lock = threading.Lock()
        self._waiting: list[_Write] = []
        self._busy = False
        #: Transactions committed and writes in them (what the benchmarks report).
        self.transactions = 0
        self.writes = 0

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def run(
        self,
        apply: Callable[[sqlite3.Connection], None],
        connection: Callable[[], sqlite3.Connection],
    ) -> None:
        mine = _Write(apply)
        with self._lock:
            self._waiting.append(mine)
            mine.lead = not self._busy
            self._busy = True
        if not mine.lead:
            mine.wake.acquire()
        if not mine.done:  # this thread leads: commit everything waiting, itself included
            conn: sqlite3.Connection | None = None
            failure: BaseException | None = None
            try:
                conn = connection()
                take_write_lock(conn, self.timeout)
            except BaseException as exc:
                failure = exc
            # Taken once the write lock is held: writes that came while another process
            # held it join this group instead of waiting for one of their own.
            with self._lock:
                group, self._waiting = self._waiting, []
            try:
                if failure is None:
                    assert conn is not None
                    self._commit(group, conn)
                else:
                    for write in group:
                        write.error = failure
                    if not isinstance(failure, Exception):
                        raise failure
            finally:
                self._hand_over(group)
        if mine.error is not None:
            raise mine.error

    def _hand_over(self, group: list[_Write]) -> None:
        """Wake the writers of `group`, then give the lead to the first write waiting."""
        for write in group:
            write.done = True
            if not write.lead:
                write.wake.release()
        with self._lock:
            if not self._waiting:
                self._busy = False
                return
            following = self._waiting[0]
            following.lead = True
        following.wake.release()

    def _commit(self, group: list[_Write], conn: sqlite3.Connection) -> None:
        """Apply the group's writes inside the transaction this thread began, and COMMIT."""
        try:
            try:
                for write in group:
                    try:
                        write.apply(conn)
                    except Exception as exc:
                        if not conn.in_transaction:
                            raise  # SQLite rolled the whole transaction back (full disk, I/O)
                        write.error = exc  # its statement alone was undone by SQLite
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self.transactions += 1
            self.writes += len(group)
        except BaseException as exc:
            for write in group:
                write.error = write.error or exc
            if not isinstance(exc, Exception):
                raise


__all__ = ["GroupCommit", "busy", "take_write_lock"]
