"""`memory://`: a store in this process's memory, for tests and one-off runs.

Records are kept as the other stores keep them (JSON text and the index fields, see
`statesaga.adapters.stores.document`), so what comes back is a copy that went through the same
serialisation as a real store (no shared mutable objects between callers).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace

from .document import (  # noqa: TID251 (relative, so mypy reads the base class)
    MISSING,
    WRITTEN,
    DocumentStore,
    Outcome,
    Record,
    Stored,
    taken,
)


def _stored(record: Record) -> Stored:
    return Stored(record.id, record.text, record.heartbeat_us, record.revision)


def _later(a: int | None, b: int | None) -> int | None:
    return b if a is None or (b is not None and b > a) else a


class MemoryStore(DocumentStore):
    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, Record] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        return cls()

    def initialize(self) -> None:
        pass

    def close(self) -> None:
        pass

    def write_raw(self, workflow_id: str, text: str) -> None:
        """Replace the stored JSON text of an existing workflow, bypassing validation.

        For tests only (as ArangoStore.write_raw): it shows what reading a document written by
        another program or version does.
        """
        with self._lock:
            self._records[workflow_id] = replace(self._records[workflow_id], text=text)

    def _insert(self, record: Record) -> Outcome:
        with self._lock:
            stored = self._records.get(record.id)
            if stored is not None:
                return taken(stored.revision)
            self._records[record.id] = record
        return WRITTEN

    def _replace(self, record: Record, expected: int) -> Outcome:
        with self._lock:
            stored = self._records.get(record.id)
            if stored is None:
                return MISSING
            if stored.revision != expected:
                return taken(stored.revision)
            beat = _later(stored.heartbeat_us, record.heartbeat_us)
            self._records[record.id] = replace(record, heartbeat_us=beat)
        return WRITTEN

    def _read(self, workflow_id: str) -> Stored | None:
        with self._lock:
            record = self._records.get(workflow_id)
        return None if record is None else _stored(record)

    def _beat(self, workflow_id: str, at_us: int) -> bool:
        with self._lock:
            record = self._records.get(workflow_id)
            if record is None:
                return False
            beat = _later(record.heartbeat_us, at_us)
            self._records[workflow_id] = replace(record, heartbeat_us=beat)
        return True

    def _select(
        self, session_id: str | None, status: str | None, limit: int | None
    ) -> Iterable[Stored]:
        return self._oldest_first(
            lambda r: (
                (session_id is None or r.session_id == session_id)
                and (status is None or r.status == status)
            )
        )[:limit]

    def _select_stale(self, statuses: builtins.list[str], before_us: int) -> Iterable[Stored]:
        return self._oldest_first(
            lambda r: (
                r.status in statuses and (r.heartbeat_us is None or r.heartbeat_us < before_us)
            )
        )

    def _oldest_first(self, keep: Callable[[Record], bool]) -> builtins.list[Stored]:
        with self._lock:
            records = [r for r in self._records.values() if keep(r)]
        return [_stored(r) for r in sorted(records, key=lambda r: (r.created_us, r.id))]
