"""`sqlite:///relative.db`, `sqlite:////abs/path.db`: the embedded default store.

One file, shared by every thread and process on one machine:

- WAL journal, so readers never wait for the writer and a writer never waits for readers.
- `synchronous=FULL` by default: a save that returned is on disk, because the save is the
  engine's commit point. `?synchronous=normal` trades the last transactions before a power
  loss (never consistency) for lower write latency.
- `?timeout=30` (seconds): how long a writer waits for another process's write lock before
  failing with "database is locked". Writes wait on a connection of their own in 50 µs steps
  (`take_write_lock`), finer than SQLite's busy handler, which reads keep.
- Every write runs in `BEGIN IMMEDIATE`: it takes the write lock before reading, so the busy
  handler applies; a deferred transaction that upgrades from read to write can get SQLITE_BUSY
  at once, without waiting, when another connection wrote in between.
- Group commit: the writes of several threads of one process share one transaction and one
  fsync (`GroupCommit`), each still revision-checked, so throughput grows with the number of
  workflows in flight instead of stopping at one fsync per save.

The document is JSON text from `WorkflowState.to_json()` and comes back through
`WorkflowState.from_json` (never pickle). Columns duplicate what queries filter on. Heartbeats
touch only the `heartbeat_at` column (a heartbeat is frequent and must not bump the revision or
rewrite the document); reads put the later of the column and the document's own value into the
returned document.
"""

from __future__ import annotations

import builtins
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from statesaga.errors import AdapterError, BackendError, BackendUnavailable, StoreFullError
from statesaga.models import WorkflowState, WorkflowStatus

from ._group_commit import GroupCommit, busy, take_write_lock  # noqa: TID251 (relative, as below)
from .document import (  # noqa: TID251 (relative, so mypy reads the base class)
    MISSING,
    WRITTEN,
    DocumentStore,
    Outcome,
    Record,
    Stored,
    micros,
    taken,
)

# What the core is told of sqlite3's errors (statesaga.errors.BackendError): one line each;
# an OperationalError (a locked or unopenable file) means the store cannot serve now.
BackendError.declare(sqlite3.Error, "sqlite")
BackendUnavailable.declare(sqlite3.OperationalError, "sqlite")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workflows (
    id           TEXT PRIMARY KEY,
    revision     INTEGER NOT NULL,
    session_id   TEXT,
    status       TEXT NOT NULL,
    heartbeat_at INTEGER,
    created_at   INTEGER NOT NULL,
    doc          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS workflows_session ON workflows (session_id, created_at, id);
CREATE INDEX IF NOT EXISTS workflows_status ON workflows (status, created_at, id);
CREATE INDEX IF NOT EXISTS workflows_heartbeat ON workflows (status, heartbeat_at);
CREATE INDEX IF NOT EXISTS workflows_created ON workflows (created_at, id);
CREATE INDEX IF NOT EXISTS workflows_name
    ON workflows (json_extract(doc, '$.name'), created_at, id, status);
"""

#: The table and indexes _SCHEMA makes: when all are there, opening the store writes nothing.
_SCHEMA_NAMES = frozenset(re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", _SCHEMA))

_HEARTBEAT = (
    "heartbeat_at = CASE WHEN heartbeat_at IS NULL OR heartbeat_at < :heartbeat"
    " THEN :heartbeat ELSE heartbeat_at END"
)
_KEEP_STATUS = (
    f"UPDATE workflows SET revision = :new_revision, doc = :doc, {_HEARTBEAT}"
    " WHERE id = :id AND revision = :revision AND status = :status"
    " AND session_id IS :session_id AND created_at = :created_at"
)
_SET_ALL = (
    "UPDATE workflows SET revision = :new_revision, session_id = :session_id,"
    f" status = :status, created_at = :created_at, doc = :doc, {_HEARTBEAT}"
    " WHERE id = :id AND revision = :revision"
)

_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}


def _stale_query(n_statuses: int) -> str:
    marks = ", ".join("?" * n_statuses)
    # Two range scans of the (status, heartbeat_at) index joined by UNION ALL: with an OR of
    # "IS NULL" and "<" in one WHERE, SQLite uses the index for the status only and reads
    # every row of those statuses.
    return (
        f"SELECT {_DOCUMENT}, created_at FROM workflows"
        f" WHERE status IN ({marks}) AND heartbeat_at IS NULL"
        " UNION ALL"
        f" SELECT {_DOCUMENT}, created_at FROM workflows"
        f" WHERE status IN ({marks}) AND heartbeat_at < ?"
        # A heartbeat that is not a number (a hand edit, another program) sorts after every
        # number, so "<" never takes it: read it here, to be named as unreadable rather
        # than silently never recovered.
        " UNION ALL"
        f" SELECT {_DOCUMENT}, created_at FROM workflows"
        f" WHERE status IN ({marks}) AND heartbeat_at >= ''"
        " ORDER BY created_at, raw_id"
    )


#: The columns a document is read from (see `_stored`). As bytes, not text: the sqlite3
#: module decodes a TEXT value while it fetches the rows, so one that is not UTF-8 would
#: fail the whole query (and its error quotes the document); decoded by the store algorithm,
#: it is one unreadable document.
_DOCUMENT = "CAST(id AS BLOB) AS raw_id, CAST(doc AS BLOB) AS raw_doc, heartbeat_at, revision"


def _stored(row: tuple[object, ...]) -> Stored:
    raw_id, doc, heartbeat, revision = row[:4]
    # An id that is not UTF-8 is still named, with its odd bytes escaped.
    wid = raw_id.decode("utf-8", "backslashreplace") if isinstance(raw_id, bytes) else str(raw_id)
    return Stored(wid, doc if isinstance(doc, bytes) else str(doc), heartbeat, revision)


class SQLiteStore(DocumentStore):
    """A `Store` in one SQLite file; safe to share between threads (one connection each)."""

    def __init__(
        self, path: str | Path, *, synchronous: str = "full", timeout: float = 30.0
    ) -> None:
        if str(path) in ("", ":memory:"):
            # Each thread has its own connection, and each in-memory connection its own database.
            raise AdapterError(
                "sqlite store needs a file path; use memory:// for an in-memory store"
            )
        if synchronous.lower() not in _SYNCHRONOUS:
            raise AdapterError(
                f"sqlite synchronous={synchronous!r} is not supported (use: full, normal)"
            )
        super().__init__()
        self.path = Path(path)
        self.synchronous = _SYNCHRONOUS[synchronous.lower()]
        self.timeout = timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._initialized = False
        self._read_only = False
        self._has_name_index = False
        #: Saves of this process's threads share transactions (see GroupCommit).
        self.group_commit = GroupCommit(timeout)

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        path, synchronous, timeout = _parse_url(url)
        return cls(path, synchronous=synchronous, timeout=timeout)

    def location(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        """Whether the database file is there: read-only commands must not create it."""
        return self.path.is_file()

    def read_only(self) -> None:
        """Open the file for reading only (`mode=ro`): no schema check, no journal-mode switch,
        no write at all, so a command that only looks works on a full disk. Call before first
        use; a write then fails with one line."""
        self._read_only = True

    # -- connections ---------------------------------------------------------------------------

    def _connect(self, busy: bool = True) -> sqlite3.Connection:
        try:
            return self._open(busy)
        except (OSError, sqlite3.Error) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise AdapterError(f"sqlite store {self.path} cannot be opened: {why}") from None

    def _open(self, busy: bool = True) -> sqlite3.Connection:
        if self._read_only:
            conn = _open_read_only(self.path, self.timeout)
            with self._lock:
                self._connections.append(conn)
            return conn
        if self.path.parent != Path("."):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: the module must not open transactions behind our back; writes
        # say BEGIN IMMEDIATE themselves. check_same_thread=False only so close() can close
        # every thread's connection; each connection is still used by its own thread alone.
        # A writer connection (busy=False) has no busy handler: take_write_lock waits for the
        # write lock in finer steps than SQLite's; readers keep it for WAL's rare busy reads.
        timeout = self.timeout if busy else 0.0
        conn = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        try:
            mode = _wal(conn, self.timeout)
        except BaseException:
            conn.close()
            raise
        if str(mode).lower() != "wal":
            # Without WAL, readers and the writer block each other across processes.
            conn.close()
            raise AdapterError(f"{self.path}: sqlite cannot use WAL here (journal_mode={mode})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        with self._lock:
            self._connections.append(conn)
        return conn

    def _thread_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def writer(self) -> sqlite3.Connection:
        """This thread's connection for write transactions alone (immediate(conn, timeout))."""
        conn: sqlite3.Connection | None = getattr(self._local, "writer", None)
        if conn is None:
            conn = self._connect(busy=False)
            self._local.writer = conn
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn = self._thread_conn()
        if not self._initialized and not self._read_only:
            self.initialize()
        return conn

    def _write(self, apply: Callable[[sqlite3.Connection], None]) -> None:
        """Run one write in a group commit; a full disk or a read-only store is one line."""
        if self._read_only:
            raise AdapterError(f"sqlite store {self.path} was opened read-only")
        try:
            if not self._initialized:
                self._conn()  # the schema first, on the reading connection, as a read makes it
            self.group_commit.run(apply, self.writer)
        except sqlite3.OperationalError as exc:
            raise _full(exc, self.path) or exc from None

    def initialize(self) -> None:
        """Create the table and indexes if missing (also done on first use)."""
        if self._read_only:
            return
        conn = self._thread_conn()
        if _schema_is_there(conn):
            # No write at all: even an empty write transaction changes the file's header
            # (its change counter), and a command that is refused must leave the file as it
            # found it.
            self._initialized = True
            return
        # Statement by statement: executescript() would COMMIT the transaction that makes
        # two processes creating the schema at once wait for each other.
        try:
            with immediate(conn) as conn:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.OperationalError as exc:
            raise _full(exc, self.path) or _not_json(exc, conn, self.path) or exc from None
        self._initialized = True

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for conn in connections:
            conn.close()

    # -- the primitives of the store algorithm (statesaga.adapters.stores.document) ----------------

    def _insert(self, record: Record) -> Outcome:
        outcome = WRITTEN

        def write(conn: sqlite3.Connection) -> None:
            nonlocal outcome
            row = conn.execute(
                "SELECT revision FROM workflows WHERE id = ?", (record.id,)
            ).fetchone()
            if row is not None:
                outcome = taken(row[0])
                return
            conn.execute(
                "INSERT INTO workflows (id, revision, session_id, status, heartbeat_at,"
                " created_at, doc) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.revision,
                    record.session_id,
                    record.status,
                    record.heartbeat_us,
                    record.created_us,
                    record.text,
                ),
            )

        self._write(write)
        return outcome

    def _replace(self, record: Record, expected: int) -> Outcome:
        outcome = WRITTEN
        params = {
            "new_revision": record.revision,
            "session_id": record.session_id,
            "status": record.status,
            "created_at": record.created_us,
            "doc": record.text,
            "heartbeat": record.heartbeat_us,
            "id": record.id,
            "revision": expected,
        }

        def write(conn: sqlite3.Connection) -> None:
            nonlocal outcome
            # The revision check and the write are one statement; the heartbeat column only
            # moves forward, so a save carrying an old heartbeat cannot hide a newer one.
            # Most saves keep the status: the first statement leaves the columns it does not
            # set alone, and SQLite then rewrites none of their indexes (half the pages of a
            # save); a save that changes them takes the second.
            for statement in (_KEEP_STATUS, _SET_ALL):
                if conn.execute(statement, params).rowcount:
                    return
            row = conn.execute("SELECT revision FROM workflows WHERE id = ?", (record.id,))
            found = row.fetchone()
            outcome = MISSING if found is None else taken(found[0])

        self._write(write)
        return outcome

    def _read(self, workflow_id: str) -> Stored | None:
        row = (
            self._conn()
            .execute(f"SELECT {_DOCUMENT} FROM workflows WHERE id = ?", (workflow_id,))
            .fetchone()
        )
        return None if row is None else _stored(row)

    def _beat(self, workflow_id: str, at_us: int) -> bool:
        found = True

        def write(conn: sqlite3.Connection) -> None:
            nonlocal found
            cursor = conn.execute(
                "UPDATE workflows SET heartbeat_at = CASE"
                " WHEN heartbeat_at IS NULL OR heartbeat_at < :at THEN :at ELSE heartbeat_at END"
                " WHERE id = :id",
                {"at": at_us, "id": workflow_id},
            )
            found = cursor.rowcount > 0

        self._write(write)
        return found

    def _select(
        self, session_id: str | None, status: str | None, limit: int | None
    ) -> Iterable[Stored]:
        where, params = _filters(session_id, status, None)
        sql = f"SELECT {_DOCUMENT} FROM workflows"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._rows(sql, params)

    def _select_stale(self, statuses: builtins.list[str], before_us: int) -> Iterable[Stored]:
        rows = self._conn().execute(
            _stale_query(len(statuses)), [*statuses, *statuses, before_us, *statuses]
        )
        return [_stored(row) for row in rows.fetchall()]

    def _rows(self, sql: str, params: builtins.list[object]) -> builtins.list[Stored]:
        return [_stored(row) for row in self._conn().execute(sql, params).fetchall()]

    # -- browsing (the web dashboard): newest first, keyset paging -----------------------------

    def browse(
        self,
        *,
        session_id: str | None = None,
        status: WorkflowStatus | None = None,
        name: str | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> builtins.list[WorkflowState]:
        """Newest first, strictly older than `before` (created_at, id): a keyset page, so the
        cost of page 1,000 is the cost of page 1."""
        where, params = _filters(session_id, status, name, self._name_indexed())
        if before is not None:
            where.append("(created_at, id) < (?, ?)")
            params += [micros(before[0]), before[1]]
        sql = f"SELECT {_DOCUMENT} FROM workflows"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        return self._readable(self._rows(sql, [*params, limit]))

    def _name_indexed(self) -> bool:
        """Whether the index on names is there (a store made before it may lack it, and may
        then hold a document that is not JSON, which the index would have refused)."""
        if not self._has_name_index:
            self._has_name_index = _has_index(self._conn(), "workflows_name")
        return self._has_name_index

    def count_by_status(
        self, *, session_id: str | None = None, name: str | None = None
    ) -> dict[str, int]:
        # workflows_name ends with status, so a count by definition reads no document.
        where, params = _filters(session_id, None, name, self._name_indexed())
        sql = "SELECT status, COUNT(*) FROM workflows"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " GROUP BY status"
        return {status: n for status, n in self._conn().execute(sql, params).fetchall()}


# -- opening the file, the schema, the dashboard's filters ----------------------------------


def _parse_url(url: str) -> tuple[str, str, float]:
    """A sqlite store URL's file, synchronous mode and busy timeout, checked."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise AdapterError(
            f"not a sqlite store URL: {url!r} "
            "(expected sqlite:///relative.db or sqlite:////absolute/path.db)"
        )
    # urlsplit keeps the slash that separates the empty host from the path.
    path = parts.path[1:]
    query = parse_qs(parts.query)
    unknown = set(query) - {"synchronous", "timeout"}
    if unknown:
        raise AdapterError(f"unknown sqlite URL option(s) {sorted(unknown)} in {url!r}")
    synchronous = query.get("synchronous", ["full"])[-1]
    try:
        timeout = float(query.get("timeout", ["30"])[-1])
    except ValueError:
        timeout = -1.0
    if not 0 <= timeout <= 86400:  # also refuses nan and inf
        raise AdapterError(
            f"sqlite URL option timeout must be seconds from 0 to 86400: {url!r}"
        ) from None
    if not path:
        raise AdapterError(f"sqlite store URL names no file: {url!r}")
    return path, synchronous, timeout


def _wal(conn: sqlite3.Connection, timeout: float) -> str:
    # Switching a file to WAL takes an exclusive lock and SQLite does not call the busy
    # handler for it: a second process opening the store while the first creates or
    # writes it gets "database is locked" at once. Wait for it as busy_timeout would.
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            return str(mode)
        except sqlite3.OperationalError as exc:
            if not busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


def _open_read_only(path: Path, timeout: float) -> sqlite3.Connection:
    conn = _connect_uri(path, "mode=ro", timeout)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError:
        # A WAL reader needs the -shm index, which cannot be made on a full disk. With no
        # WAL content left (every writer closed, so all is in the main file) the file is
        # read as it is: `immutable` takes no lock and makes no -shm.
        conn.close()
        wal = path.with_name(path.name + "-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            raise
        conn = _connect_uri(path, "immutable=1", timeout)
    return conn


def _connect_uri(path: Path, query: str, timeout: float) -> sqlite3.Connection:
    uri = f"{path.absolute().as_uri()}?{query}"
    conn = sqlite3.connect(
        uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return conn


@contextmanager
def immediate(conn: sqlite3.Connection, timeout: float = 0.0) -> Iterator[sqlite3.Connection]:
    """A write transaction taken at once (BEGIN IMMEDIATE: the file's write lock up front, so
    it never fails half way on a lock), committed, or rolled back on any exception. The lock
    is waited for by take_write_lock: `timeout` seconds on a `writer()` connection; on one
    with a busy handler, SQLite's own wait comes first."""
    take_write_lock(conn, timeout)
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _has_index(conn: sqlite3.Connection, name: str) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?"
    return conn.execute(sql, (name,)).fetchone() is not None


def _schema_is_there(conn: sqlite3.Connection) -> bool:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    names = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE tbl_name = 'workflows'"
        ).fetchall()
    }
    return version == SCHEMA_VERSION and _SCHEMA_NAMES <= names


def _filters(
    session_id: str | None, status: str | None, name: str | None, name_indexed: bool = True
) -> tuple[builtins.list[str], builtins.list[object]]:
    where: builtins.list[str] = []
    params: builtins.list[object] = []
    if session_id is not None:
        where.append("session_id = ?")
        params.append(session_id)
    if status is not None:
        where.append("status = ?")
        params.append(WorkflowStatus(status).value)
    if name is not None:
        # The same expression as the workflows_name index, so the index answers it. Without
        # the index every row is read, and json_extract on a document that is not JSON would
        # fail the whole listing: such a document has no name to match.
        if name_indexed:
            where.append("json_extract(doc, '$.name') = ?")
        else:
            where.append("json_extract(CASE WHEN json_valid(doc) THEN doc END, '$.name') = ?")
        params.append(name)
    return where, params


def _not_json(
    exc: sqlite3.OperationalError, conn: sqlite3.Connection, path: Path
) -> AdapterError | None:
    """The one line for an index on the workflows' names that cannot be built because a
    stored document is not JSON (a store made before the index existed, then damaged: the
    index itself refuses such a document once it is there), naming the documents, else None."""
    if "malformed JSON" not in str(exc):
        return None
    rows = conn.execute(
        "SELECT CAST(id AS BLOB) FROM workflows WHERE NOT json_valid(CAST(doc AS TEXT)) LIMIT 6"
    ).fetchall()
    ids = [bytes(r[0]).decode("utf-8", "backslashreplace") for r in rows]
    named = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    return AdapterError(
        f"sqlite store {path}: the index on workflow names cannot be built: stored workflow "
        f"{named or '(unknown)'} is not JSON; nothing was written. Repair or delete it "
        "(`statesaga list` names every unreadable workflow), then run the command again"
    )


def _full(exc: sqlite3.OperationalError, path: Path) -> StoreFullError | None:
    """The one line for a write refused because the disk is full (SQLITE_FULL), else None."""
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_FULL:
        return None
    return StoreFullError(
        f"sqlite store {path}: the disk is full ({exc}); nothing was written. Reads still "
        "work; free space (at least the size of the -wal file next to it) and writes resume"
    )
