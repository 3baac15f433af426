"""`arango://`: workflow documents in ArangoDB (python-arango), for many machines.

One document per workflow, keyed by the workflow id (`_key`):

    {"_key": id, "revision": 3, "session_id": ..., "status": "RUNNING",
     "created_at_us": 1770543000123456, "heartbeat_at_us": null,
     "state": "<the whole WorkflowState (steps, compensations, history) as JSON text>"}

so a workflow reads in one round trip. The top-level attributes are what AQL filters, sorts and
checks on (times as integer microseconds since the epoch, UTC, so they compare as instants); the
state is kept as pydantic's JSON text rather than as nested attributes because ArangoDB does not
keep a float with an integral value a float (12.0 comes back as 12, arangodb/arangodb#2438), and
the store contract is an exact round trip of free-form values (params, results, input).

Every write waits for the disk (waitForSync, see queries.py) before it is acknowledged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import arango.errno as arango_errno
from arango.exceptions import ArangoError, DocumentInsertError
from requests import RequestException
from statesaga.errors import AdapterError, Problem
from statesaga.models import WorkflowState, WorkflowStatus

from ..document import (  # noqa: TID251, TID252 (relative, so mypy reads the base class)
    MISSING,
    WRITTEN,
    DocumentStore,
    Outcome,
    Record,
    Stored,
    taken,
)
from .client import ArangoUnavailable, Busy, Connection, OutcomeUnknown  # noqa: TID251
from .queries import QUERIES, list_query  # noqa: TID251
from .settings import KEY_RE, ArangoSettings  # noqa: TID251

_SYSTEM_FIELDS = frozenset({"_key", "_id", "_rev"})
_STORED_FIELDS = frozenset(
    {"revision", "session_id", "status", "created_at_us", "heartbeat_at_us", "state"}
)
# How often a one-document write runs again after meeting a concurrent write (error 1200), and
# the longest pause between two runs (doubled from 1 ms, with jitter).
_WRITE_TRIES = 8
_WRITE_PAUSE_MAX = 0.05
_T = TypeVar("_T")


class ArangoStore(DocumentStore):
    """Store workflow documents in one ArangoDB collection, with optimistic revisions."""

    def __init__(self, settings: ArangoSettings, *, database: Any = None) -> None:
        """`database` is a connected python-arango StandardDatabase; None connects lazily on
        first use (unit tests pass one whose connection is scripted)."""
        super().__init__()
        settings.check()
        self.settings = settings
        self._conn = Connection(settings, database)
        self._http = self._conn.http
        self._errors = self._conn.errors
        # Rows per cursor batch; None leaves the server's default (1000).
        self.batch_size: int | None = None

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> ArangoStore:
        """Open `arango://...`; keyword overrides (e.g. collection_prefix=f"run{n}_") win over
        the URL, so a test run can use its own collections in a shared database."""
        settings = ArangoSettings.from_url(url)
        if overrides:
            settings = replace(settings, **overrides)
        return cls(settings)

    def __repr__(self) -> str:
        return f"ArangoStore({self.settings.redacted_url()!r})"

    # -- connection -------------------------------------------------------------------------

    def _database(self, schema: bool = True, create: bool = True) -> Any:
        return self._conn.database(schema, create)

    def initialize(self) -> None:
        """Connect; with initialize=1 create the database, the collection and its indexes
        (idempotent); with initialize=0 only check that they exist."""
        db = self._database()
        if not self.settings.initialize:
            with self._errors("initialize"):
                exists = db.has_collection(self.settings.collection)
            if not exists:
                raise AdapterError(
                    f"{self.settings.where}: collection {self.settings.collection!r} does not "
                    "exist (create it, or allow it with initialize=1)"
                )

    def close(self) -> None:
        self._conn.close()

    def drop(self) -> None:
        """Delete this store's collection and close the store (teardown for test runs that
        use their own collection_prefix); works after close() too. A missing database or
        collection is nothing to drop: neither is created for it."""
        db = self._database(schema=False, create=False)
        if db is not None:
            with self._errors("drop"), self._conn.long():
                db.delete_collection(self.settings.collection, ignore_missing=True)
        self.close()

    # -- mapping ----------------------------------------------------------------------------

    @staticmethod
    def to_document(wf: WorkflowState, revision: int) -> dict[str, Any]:
        """The stored form of `wf` at `revision` (without `_key`; see the module docstring)."""
        return _document(Record.of(wf, revision))

    def from_document(self, doc: Mapping[str, Any]) -> WorkflowState:
        """Validate a stored document; unknown or invalid fields raise DefinitionError."""
        return self._load(self._stored(doc))

    def _stored(self, doc: Mapping[str, Any]) -> Stored:
        return _stored(doc, f"arango:{self.settings.database}/{self.settings.collection}")

    # -- the Store protocol -----------------------------------------------------------------

    def _bind(self, **values: Any) -> dict[str, Any]:
        return {"@coll": self.settings.collection, **values}

    def _run(self, query: str, bind_vars: dict[str, Any], op: str) -> list[Any]:
        """A listing: its requests (the cursor's later batches too) get `long_timeout`, and
        the server stops the query when nobody waits for it any more.

        The cursor is retryable (allowRetry, ArangoDB 3.11+): each later batch is fetched by
        its number, so a fetch whose connection broke is sent again for the same batch. A
        server that ignores the option gives no batch numbers, and then a broken fetch is
        an error, never a shorter listing (ArangoHTTPClient). A retryable cursor is kept
        after its last batch until it is deleted, so it is deleted once read."""
        db = self._database()
        s = self.settings
        with self._errors(op), self._conn.long():
            cursor = db.aql.execute(
                query,
                bind_vars=bind_vars,
                max_runtime=s.long_timeout,
                allow_retry=True,
                batch_size=self.batch_size,
            )
            rows = list(cursor)
            if cursor.id is not None:
                try:
                    cursor.close(ignore_missing=True)
                except (ArangoError, RequestException, OSError):
                    pass  # every row is in hand; the server drops the cursor after its ttl
        return rows

    def _write(self, query: str, bind_vars: dict[str, Any], op: str, wid: str) -> list[Any]:
        """Run a one-document write statement (see _retried). `max_runtime` has the server
        stop a statement that outlives the client's wait, so a timed-out write does not apply
        much later."""
        db = self._database()

        def run() -> list[Any]:
            cursor = db.aql.execute(query, bind_vars=bind_vars, max_runtime=self.settings.timeout)
            return list(cursor)

        return self._retried(op, wid, run)

    def _retried(self, op: str, wid: str, write: Callable[[], _T]) -> _T:
        """Run a one-document write; again when it meets a concurrent write.

        Error 1200 means the document changed after the statement's snapshot (see QUERIES
        ["save"]); the write was aborted, so running it again is safe, and a save's FILTER
        decides again on a new snapshot. Pauses double from 1 ms, with jitter, so two writers
        that keep meeting fall out of step. Raises OutcomeUnknown when no answer (or an
        answer that cannot tell) came.
        """
        for attempt in range(_WRITE_TRIES):
            try:
                with self._errors(op, wid, write=True):
                    return write()
            except Busy:
                pause = min(_WRITE_PAUSE_MAX, 0.001 * 2**attempt)
                time.sleep(random.uniform(pause / 2, pause))
        raise AdapterError(
            f"{self.settings.where}: {op} of {wid} met a concurrent write to the same "
            f"document (error 1200) {_WRITE_TRIES} times in a row"
        )

    def _insert(self, record: Record) -> Outcome:
        if not KEY_RE.match(record.id):
            raise AdapterError(
                f"{self.settings.where}: workflow id {record.id!r} is not a valid ArangoDB key "
                "(letters, digits and _-:.@()+,=;$!*' only, at most 254)"
            )
        doc = {"_key": record.id, **_document(record)}
        coll = self._database().collection(self.settings.collection)

        def insert() -> bool:
            try:
                coll.insert(doc, silent=True, sync=True)
                return True
            except DocumentInsertError as exc:
                if exc.error_code != arango_errno.UNIQUE_CONSTRAINT_VIOLATED:
                    raise
                return False

        unknown: OutcomeUnknown | None = None
        try:
            if self._retried("create", record.id, insert):
                return WRITTEN
        except OutcomeUnknown as exc:
            unknown = exc
        stored = self._read_back("create", record.id, unknown)
        # A replayed insert (the connection broke after the first one was sent), or one whose
        # answer was lost, finds its own document: that is a success, not a duplicate.
        if stored is not None and self._is_ours(stored, doc):
            return WRITTEN
        if unknown is not None and stored is None:
            raise AdapterError(
                f"{self.settings.where}: create of {record.id} {unknown.why}, so its outcome "
                "is unknown; it is not stored yet and may yet be: read it again before acting"
            ) from ArangoUnavailable(unknown.why)
        rev = stored.get("revision") if stored else None
        return taken(rev if isinstance(rev, int) else None)

    def _read_back(
        self, op: str, workflow_id: str, unknown: OutcomeUnknown | None
    ) -> dict[str, Any] | None:
        """The stored document after a write that did not say it applied. When the write's
        outcome is unknown and the read fails too, says both, as an outage."""
        try:
            return self._fetch(workflow_id)
        except AdapterError as exc:
            if unknown is None:
                raise
            raise AdapterError(
                f"{self.settings.where}: {op} of {workflow_id} {unknown.why}, so its outcome is "
                f"unknown; reading it back failed too: {exc}"
            ) from ArangoUnavailable(unknown.why)

    @staticmethod
    def _is_ours(stored: Mapping[str, Any], doc: Mapping[str, Any]) -> bool:
        """Whether `stored` is the document `doc` wrote: same revision, same JSON text (which
        holds the revision, the updated_at time and the history, so another writer's
        document differs). heartbeat_at_us is left out: a heartbeat may have moved it since."""
        return bool(
            stored.get("revision") == doc["revision"] and stored.get("state") == doc["state"]
        )

    def _fetch(self, workflow_id: str) -> dict[str, Any] | None:
        if not KEY_RE.match(workflow_id):
            return None  # cannot be stored under this id, so it is not there
        db = self._database()
        with self._errors("get", workflow_id):
            doc: dict[str, Any] | None = db.collection(self.settings.collection).get(workflow_id)
        return doc

    def _read(self, workflow_id: str) -> Stored | None:
        doc = self._fetch(workflow_id)
        return None if doc is None else self._stored(doc)

    def _replace(self, record: Record, expected: int) -> Outcome:
        if not KEY_RE.match(record.id):
            return MISSING
        doc = _document(record)
        binds = self._bind(key=record.id, revision=expected, doc=doc)
        unknown: OutcomeUnknown | None = None
        try:
            if self._write(QUERIES["save"], binds, "save", record.id):
                return WRITTEN
        except OutcomeUnknown as exc:
            unknown = exc
        # Nothing matched, or nothing says whether it applied: the stored document tells what
        # happened. Only paid on these paths.
        stored = self._read_back(f"save at revision {expected}", record.id, unknown)
        if stored is None:
            return MISSING
        if self._is_ours(stored, doc):
            # Our statement did commit: the answer was lost (timeout), or the request was
            # replayed after a broken connection and the replay found the revision taken.
            return WRITTEN
        rev = stored.get("revision")
        if unknown is not None and rev == expected:
            # Not applied yet, but the statement may still be queued or running on the
            # server: neither "saved" nor "conflict" would be true.
            raise AdapterError(
                f"{self.settings.where}: save of {record.id} at revision {expected} "
                f"{unknown.why}, so its outcome is unknown; the store still has revision {rev}, "
                "and the save may yet apply (the server stops it after max_runtime): read it "
                "again before acting"
            ) from ArangoUnavailable(unknown.why)
        return taken(rev if isinstance(rev, int) else None)

    def _beat(self, workflow_id: str, at_us: int) -> bool:
        if not KEY_RE.match(workflow_id):
            return False
        binds = self._bind(key=workflow_id, at=at_us)
        try:
            touched = self._write(QUERIES["heartbeat"], binds, "heartbeat", workflow_id)
        except OutcomeUnknown as exc:
            raise AdapterError(
                f"{self.settings.where}: heartbeat of {workflow_id} {exc.why}"
            ) from ArangoUnavailable(exc.why)
        return bool(touched)

    def _select(
        self, session_id: str | None, status: str | None, limit: int | None
    ) -> Iterable[Stored]:
        query, binds = self.list_query(
            session_id=session_id,
            status=None if status is None else WorkflowStatus(status),
            limit=limit,
        )
        return [self._stored(d) for d in self._run(query, binds, "list")]

    def _select_stale(self, statuses: list[str], before_us: int) -> Iterable[Stored]:
        binds = self._bind(statuses=statuses, before=before_us)
        return [self._stored(d) for d in self._run(QUERIES["stale"], binds, "list")]

    def write_raw(self, workflow_id: str, text: str) -> None:
        """Replace the stored JSON text of an existing workflow, bypassing validation.

        For tests only (the conformance suite's `write_raw` hook): it shows what reading a
        document written by another program or version does.
        """
        db = self._database()
        with self._errors("write_raw", workflow_id):
            db.collection(self.settings.collection).update(
                {"_key": workflow_id, "state": text}, check_rev=False, silent=True, sync=True
            )

    def list_query(
        self,
        *,
        session_id: str | None = None,
        status: WorkflowStatus | None = None,
        limit: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """The AQL and bind variables `list()` sends for these arguments (also what the
        conformance tests `explain` on a real server)."""
        state = None if status is None else WorkflowStatus(status).value
        return list_query(self.settings.collection, session_id, state, limit)


def _stored(doc: Mapping[str, Any], where: str) -> Stored:
    """A document as the store algorithm reads it, with what is wrong with its top-level
    attributes (raised when it is loaded). They are authoritative: a heartbeat updates only
    heartbeat_at_us, and the revision is what the save's check compared."""
    key = str(doc.get("_key", "?"))
    source = f"{where}/{key}"
    unknown = sorted(set(doc) - _SYSTEM_FIELDS - _STORED_FIELDS)
    problems = [Problem("unknown attribute", source, None, name) for name in unknown]
    state, revision, heartbeat = doc.get("state"), doc.get("revision"), doc.get("heartbeat_at_us")
    if not isinstance(state, str):
        problems.append(Problem("must be the workflow's JSON text", source, None, "state"))
    if not isinstance(revision, int) or isinstance(revision, bool):
        problems.append(Problem("must be an integer", source, None, "revision"))
    if heartbeat is not None and (not isinstance(heartbeat, int) or isinstance(heartbeat, bool)):
        problems.append(Problem("must be an integer or null", source, None, "heartbeat_at_us"))
    if problems:
        return Stored(key, "", problems=tuple(problems))
    assert isinstance(state, str) and isinstance(revision, int)  # checked just above
    return Stored(key, state, heartbeat, revision)


def _document(record: Record) -> dict[str, Any]:
    """A record as the collection stores it (without `_key`; see the module docstring)."""
    return {
        "revision": record.revision,
        "session_id": record.session_id,
        "status": record.status,
        "created_at_us": record.created_us,
        "heartbeat_at_us": record.heartbeat_us,
        "state": record.text,
    }


__all__ = ["ArangoStore"]
