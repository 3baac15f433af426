"""The workflows list: filters, newest first, keyset paging, counts per status.

A store that can answer this itself (an index on created_at; SQLite does) implements
`Browsable`; any other store is browsed through `Store.list`, which is correct but reads every
document, so it suits small stores only.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from ..models import WorkflowState, WorkflowStatus
from ..ports import Store

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@runtime_checkable
class Browsable(Protocol):
    """A store that pages newest first and counts per status without reading documents."""

    def browse(
        self,
        *,
        session_id: str | None = None,
        status: WorkflowStatus | None = None,
        name: str | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = PAGE_SIZE,
    ) -> list[WorkflowState]: ...

    def count_by_status(
        self, *, session_id: str | None = None, name: str | None = None
    ) -> dict[str, int]: ...


class BadCursor(ValueError):
    """Raised when a `before` cursor was not made by `Page.next_cursor`."""


@dataclass(frozen=True)
class Filters:
    status: WorkflowStatus | None = None
    session_id: str | None = None
    name: str | None = None

    @classmethod
    def parse(cls, status: str | None, session: str | None, name: str | None) -> Filters:
        """From query parameters; an unknown status raises ValueError naming the choices."""
        wanted = None
        if status:
            try:
                wanted = WorkflowStatus(status.upper())
            except ValueError:
                choices = ", ".join(s.value for s in WorkflowStatus)
                raise ValueError(f"status {status!r} is not one of {choices}") from None
        return cls(wanted, session or None, name or None)


@dataclass(frozen=True)
class Page:
    workflows: list[WorkflowState]
    #: The cursor of the next (older) page, or None on the last page.
    next_cursor: str | None
    counts: dict[str, int]
    #: Stored documents the store's listings left out because they cannot be read: id -> why.
    unreadable: dict[str, str] = field(default_factory=dict)


def encode_cursor(wf: WorkflowState) -> str:
    key = f"{wf.created_at.astimezone(UTC).isoformat()}|{wf.id}"
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, wf_id = text.split("|", 1)
        when = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor(f"not a page cursor: {cursor[:40]!r}") from None
    if when.tzinfo is None:
        raise BadCursor(f"not a page cursor: {cursor[:40]!r}")
    return when, wf_id


def _key(wf: WorkflowState) -> tuple[datetime, str]:
    return (wf.created_at, wf.id)


def _scan(
    store: Store, filters: Filters, before: tuple[datetime, str] | None, limit: int
) -> list[WorkflowState]:
    found = [
        wf
        for wf in store.list(session_id=filters.session_id, status=filters.status)
        if (filters.name is None or wf.name == filters.name)
        and (before is None or _key(wf) < before)
    ]
    found.sort(key=_key, reverse=True)
    return found[:limit]


def _scan_counts(store: Store, filters: Filters) -> dict[str, int]:
    counts: dict[str, int] = {}
    for wf in store.list(session_id=filters.session_id):
        if filters.name is None or wf.name == filters.name:
            counts[wf.status.value] = counts.get(wf.status.value, 0) + 1
    return counts


def count(store: Store, filters: Filters) -> dict[str, int]:
    """How many workflows per status under the filters (except the status filter itself)."""
    if isinstance(store, Browsable):
        return store.count_by_status(session_id=filters.session_id, name=filters.name)
    return _scan_counts(store, filters)


def browse(
    store: Store, filters: Filters, cursor: str | None = None, limit: int = PAGE_SIZE
) -> Page:
    """One page of workflows, newest first, and the counts per status under the same filters
    (except the status filter itself, so every status's count stays visible)."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    before = decode_cursor(cursor) if cursor else None
    if isinstance(store, Browsable):
        rows = store.browse(
            session_id=filters.session_id,
            status=filters.status,
            name=filters.name,
            before=before,
            limit=limit + 1,
        )
    else:
        rows = _scan(store, filters, before, limit + 1)
    counts = count(store, filters)
    more = len(rows) > limit
    rows = rows[:limit]
    unreadable = dict(getattr(store, "unreadable", {}))
    return Page(rows, encode_cursor(rows[-1]) if more else None, counts, unreadable)
