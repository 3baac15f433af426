"""The one store algorithm every built-in store runs, and the public base of a plugin store:
subclass `DocumentStore` and write only the backend's primitives.

As dramatiq's result backends keep polling, encoding and timeouts in `ResultBackend` and let
each backend write `_get` / `_store`, `DocumentStore` implements the `statesaga.ports.Store`
contract once (revision check outcomes mapped to ConflictError / NotFoundError, heartbeats
that only move forward folded into the documents read, listings that go on past an unreadable
document, named in `unreadable`) over six primitive operations a backend writes in its own
terms (underscored: they are the backend's side, called by the base, never by the engine):

- `_insert(record)`: store a new record unless its id is taken.
- `_replace(record, expected)`: replace the record if the stored revision is `expected`,
  keeping the later of the stored and the record's heartbeat.
- `_read(workflow_id)`: one stored document, or None.
- `_beat(workflow_id, at_us)`: move the heartbeat forward; False when the id is unknown.
- `_select(session_id, status, limit)`: stored documents, oldest first (created, then id).
- `_select_stale(statuses, before_us)`: those in one of `statuses` whose heartbeat is older
  than `before_us` or missing, oldest first.

plus `initialize()`, `close()` and a `from_url(url)` classmethod (the entry point's URL). A
write gets a `Record` (the JSON text and the fields to index); a read gives back a `Stored`
(the text or raw bytes and the fields, unchecked: every check of a damaged document is the
base's); a conditional write answers with an `Outcome` (`WRITTEN`, `MISSING`, `taken(rev)`)
instead of raising, so that what a lost revision check means is said here alone. Times are
integer microseconds since the epoch in every store (`micros`, `from_micros`): exact (a float
would round microseconds) and ordered, so indexes compare instants, not text.

A store built on it passes the Store conformance suite (statesaga.testing.StoreConformance,
in statesaga/testing/store_suite.py) as the built-in ones do; docs/extending/plugins.md shows
a plugin store written this way.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import NamedTuple, TypeGuard

from statesaga.errors import ConflictError, DefinitionError, NotFoundError, Problem
from statesaga.models import WorkflowState, WorkflowStatus, readable_documents
from statesaga.ports import Store

__all__ = [
    "MISSING",
    "WRITTEN",
    "DocumentStore",
    "Outcome",
    "Record",
    "Stored",
    "fold_heartbeat",
    "from_micros",
    "micros",
    "taken",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(at: datetime) -> int:
    """Integer microseconds since the epoch; a naive datetime is taken as UTC, the zone every
    statesaga timestamp is made in."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    # The timedelta's own fields, not `// timedelta(microseconds=1)`: the same integer in a
    # third of the time, and every save takes two (issue 33's profile).
    since = at - _EPOCH
    return (since.days * 86400 + since.seconds) * 1_000_000 + since.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


@dataclass(frozen=True)
class Record:
    """A workflow as every store writes it: its JSON text at `revision`, and the fields the
    indexes are kept from (listings and the revision check never parse the text)."""

    id: str
    revision: int
    text: str
    session_id: str | None
    status: str
    created_us: int
    heartbeat_us: int | None

    @classmethod
    def of(cls, wf: WorkflowState, revision: int) -> Record:
        return cls(
            id=wf.id,
            revision=revision,
            text=wf.model_copy(update={"revision": revision}).to_json(),
            session_id=wf.session_id,
            status=WorkflowStatus(wf.status).value,
            created_us=micros(wf.created_at),
            heartbeat_us=None if wf.heartbeat_at is None else micros(wf.heartbeat_at),
        )


@dataclass(frozen=True)
class Stored:
    """A document as a backend read it, not decoded nor parsed yet: every check of what a
    disk, a hand edit or another program may have damaged is `DocumentStore._load`'s, so
    that a listing parses each document apart and leaves out one that cannot be read alone.

    `text` is the JSON text, as bytes when the backend reads raw bytes (they are decoded
    here, so bytes that are not UTF-8 damage one document, not the read of every row);
    `heartbeat_us` the store's heartbeat field (a heartbeat writes only that); `revision`
    the revision field the store's revision check compares, when it keeps one apart from
    the text (it is authoritative). Both are given as stored, unchecked. `problems`: what
    the backend already found wrong with the stored fields around the text."""

    id: str
    text: str | bytes
    heartbeat_us: object = None
    revision: object = None
    problems: tuple[Problem, ...] = ()


class Outcome(NamedTuple):
    """What a conditional write did: applied, or not, and then what the store holds."""

    written: bool
    #: When not written: the stored revision (None when unknown or there is no document).
    revision: int | None = None
    #: When not written: whether a document is stored under that id at all.
    found: bool = True


WRITTEN = Outcome(True)
MISSING = Outcome(False, found=False)


def taken(revision: int | None) -> Outcome:
    """Not written: the id holds another revision (or, for an insert, exists)."""
    return Outcome(False, revision)


def fold_heartbeat(wf: WorkflowState, heartbeat_us: int | None) -> WorkflowState:
    """Give `wf` the later of its own heartbeat and the store's heartbeat field. The
    document's own value is kept when it is the same instant, so a document reads back
    exactly as written (same UTC offset), not re-expressed in UTC."""
    if heartbeat_us is not None and (
        wf.heartbeat_at is None or micros(wf.heartbeat_at) < heartbeat_us
    ):
        wf.heartbeat_at = from_micros(heartbeat_us)
    return wf


class DocumentStore(Store, ABC):  # type: ignore[misc]  # mypy reads statesaga.* as Any here
    """The Store port over a backend's six primitive operations (see the module docstring):
    the public base of a store, built in or a plugin's."""

    def __init__(self) -> None:
        #: Documents listings found unreadable (and left out), id -> why, until read again.
        self.unreadable: dict[str, str] = {}

    @abstractmethod
    def initialize(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def exists(self) -> bool:
        """The port's default: a store on a server is there (a file store says otherwise)."""
        return True

    def read_only(self) -> None:
        """The port's default: reads write nothing (a file store says otherwise)."""
        return None

    def server_time(self) -> datetime | None:
        """The port's default: no clock of its own (a server store with one says its time)."""
        return None

    # -- the primitives a backend writes -----------------------------------------------------
    @abstractmethod
    def _insert(self, record: Record) -> Outcome: ...

    @abstractmethod
    def _replace(self, record: Record, expected: int) -> Outcome: ...

    @abstractmethod
    def _read(self, workflow_id: str) -> Stored | None: ...

    @abstractmethod
    def _beat(self, workflow_id: str, at_us: int) -> bool: ...

    @abstractmethod
    def _select(
        self, session_id: str | None, status: str | None, limit: int | None
    ) -> Iterable[Stored]: ...

    @abstractmethod
    def _select_stale(self, statuses: builtins.list[str], before_us: int) -> Iterable[Stored]: ...

    # -- the port ----------------------------------------------------------------------------
    def create(self, wf: WorkflowState) -> None:
        outcome = self._insert(Record.of(wf, 1))
        if not outcome.written:
            raise ConflictError(wf.id, None, outcome.revision)
        wf.revision = 1

    def get(self, workflow_id: str) -> WorkflowState:
        stored = self._read(workflow_id)
        if stored is None:
            raise NotFoundError(workflow_id)
        return self._load(stored)

    def save(self, wf: WorkflowState) -> None:
        record = Record.of(wf, wf.revision + 1)
        outcome = self._replace(record, wf.revision)
        if not outcome.written:
            if not outcome.found:
                raise NotFoundError(wf.id)
            raise ConflictError(wf.id, wf.revision, outcome.revision)
        wf.revision = record.revision

    def heartbeat(self, workflow_id: str, at: datetime) -> None:
        # The revision is not touched: a beat must not make a worker's copy stale.
        if not self._beat(workflow_id, micros(at)):
            raise NotFoundError(workflow_id)

    def list(
        self,
        *,
        session_id: str | None = None,
        status: WorkflowStatus | None = None,
        limit: int | None = None,
    ) -> builtins.list[WorkflowState]:
        if limit is not None and limit <= 0:
            return []
        wanted = None if status is None else WorkflowStatus(status).value
        return self._readable(self._select(session_id, wanted, limit))

    def list_stale(
        self, before: datetime, statuses: Iterable[WorkflowStatus]
    ) -> builtins.list[WorkflowState]:
        wanted = sorted({WorkflowStatus(s).value for s in statuses})
        if not wanted:
            return []
        return self._readable(self._select_stale(wanted, micros(before)))

    # -- reading documents -------------------------------------------------------------------
    def _source(self, workflow_id: str) -> str:
        """How errors name a stored document."""
        return f"stored {workflow_id}"

    def _load(self, stored: Stored) -> WorkflowState:
        """Decode and parse a stored document. Whatever is damaged (bytes that are not UTF-8,
        text that is not JSON, JSON that is not a workflow, a revision or heartbeat field
        that is not a whole number) raises DefinitionError naming the document and the
        field, never quoting the document (it may hold anything, secrets included)."""
        source = self._source(stored.id)
        problems = [*stored.problems, *_field_problems(stored, source)]
        if problems:
            raise DefinitionError(problems)
        text = stored.text
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DefinitionError(
                    [Problem(f"not UTF-8 text (byte {exc.start} of {len(text)})", source)]
                ) from None
        wf = WorkflowState.from_json(text, source)
        if isinstance(stored.revision, int):
            wf.revision = stored.revision
        heartbeat = stored.heartbeat_us
        return fold_heartbeat(wf, heartbeat if isinstance(heartbeat, int) else None)

    def _readable(self, rows: Iterable[Stored]) -> builtins.list[WorkflowState]:
        """A listing leaves out a document that cannot be read (named in `unreadable`)."""
        docs: builtins.list[WorkflowState] = readable_documents(
            ((s.id, partial(self._load, s)) for s in rows), self.unreadable
        )
        return docs


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_problems(stored: Stored, source: str) -> builtins.list[Problem]:
    """The stored fields around the text that the store's own checks compare: a revision the
    revision check could never match, a heartbeat the stale scan could not order."""
    problems = []
    if stored.revision is not None and not (_whole(stored.revision) and stored.revision >= 1):
        problems.append(Problem("must be a whole number from 1", source, None, "revision"))
    beat = stored.heartbeat_us
    if beat is not None and not (_whole(beat) and _FIRST_US <= beat <= _LAST_US):
        problems.append(
            Problem("must be a whole number of microseconds since 1970", source, None, "heartbeat")
        )
    return problems


#: The heartbeats a datetime can hold (beyond them, reading one would overflow).
_FIRST_US = micros(datetime(1, 1, 2, tzinfo=UTC))
_LAST_US = micros(datetime(9999, 12, 30, tzinfo=UTC))
