"""The workflows list: filters, newest first, keyset paging, counts per status; a search by id
(or its beginning) and a time range on top.

A store that can answer this itself (an index on created_at; SQLite does) implements
`statesaga.ports.Browsable`; any other store is browsed through `Store.list`, which is correct
but reads every document, so it suits small stores only.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from ..models import WorkflowState, WorkflowStatus
from ..ports import Browsable, Store

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: A search by id prefix reads at most this many rows per page (newest first): past it, the
#: page says so and its cursor continues from where the search stopped.
SEARCH_SCAN = 20_000
_BATCH = 500
#: An id carries its creation day (WF-20260208-5b193f0d): a prefix with the day bounds the scan.
_DAY = re.compile(r"^[A-Za-z]+-(\d{8})")


class BadCursor(ValueError):
    """Raised when a `before` cursor was not made by `Page.next_cursor`."""


def parse_time(text: str, what: str) -> datetime:
    """`2026-12-06`, `2026-12-06T10:00` (a browser's datetime-local) or a full ISO time; UTC
    when no zone is given. ValueError names the parameter."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{what} must be a date or an ISO time (2026-12-06T10:00), not {text[:40]!r}"
        ) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


@dataclass(frozen=True)
class Filters:
    status: WorkflowStatus | None = None
    session_id: str | None = None
    name: str | None = None
    #: An id, or its beginning (case-insensitive).
    id_prefix: str | None = None
    #: Created at or after `since`, before `until`.
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(
        cls,
        status: str | None,
        session: str | None,
        name: str | None,
        *,
        id_prefix: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> Filters:
        """From query parameters; an unknown status or a bad time raises ValueError naming
        the choices or the parameter."""
        wanted = None
        if status:
            try:
                wanted = WorkflowStatus(status.upper())
            except ValueError:
                choices = ", ".join(s.value for s in WorkflowStatus)
                raise ValueError(f"status {status!r} is not one of {choices}") from None
        return cls(
            wanted,
            session or None,
            name or None,
            (id_prefix or "").strip() or None,
            parse_time(since, "since") if since else None,
            parse_time(until, "until") if until else None,
        )

    @property
    def narrowed(self) -> bool:
        """Filters the store cannot apply itself (read page by page here)."""
        return bool(self.id_prefix or self.since)

    def window(self) -> tuple[datetime | None, datetime | None]:
        """The creation times to read: the time range, narrowed by a day an id prefix names."""
        since, until = self.since, self.until
        day = _DAY.match(self.id_prefix or "")
        if day:
            try:
                start = datetime.strptime(day.group(1), "%Y%m%d").replace(tzinfo=UTC)
            except ValueError:
                start = None
            if start is not None:
                # A day's ids may be made a little before midnight by a clock ahead: one
                # hour of slack either side.
                lo, hi = start - timedelta(hours=1), start + timedelta(days=1, hours=1)
                since = max(since, lo) if since else lo
                until = min(until, hi) if until else hi
        return since, until

    def matches(self, wf: WorkflowState) -> bool:
        if self.id_prefix and not wf.id.lower().startswith(self.id_prefix.lower()):
            return False
        return self.since is None or wf.created_at >= self.since


@dataclass(frozen=True)
class Page:
    workflows: list[WorkflowState]
    #: The cursor of the next (older) page, or None on the last page.
    next_cursor: str | None
    counts: dict[str, int]
    #: A search stopped after SEARCH_SCAN rows: the next cursor continues it.
    searched_out: bool = False
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


def _rows(
    store: Store, filters: Filters, before: tuple[datetime, str] | None, limit: int
) -> list[WorkflowState]:
    if isinstance(store, Browsable):
        return store.browse(
            session_id=filters.session_id,
            status=filters.status,
            name=filters.name,
            before=before,
            limit=limit,
        )
    return _scan(store, filters, before, limit)


def _browse(
    store: Store,
    filters: Filters,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
    *,
    with_counts: bool = True,
) -> Page:
    """One page of workflows, newest first, and the counts per status under the same filters
    (except the status filter itself, so every status's count stays visible; the search and
    the time range narrow the rows, not the counts)."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    before = decode_cursor(cursor) if cursor else None
    since, until = filters.window()
    if until is not None:
        # Everything created before `until`: a keyset bound below every id of that instant.
        bound = (until, "")
        before = min(before, bound) if before is not None else bound
    counts = count(store, filters) if with_counts else {}
    if not filters.narrowed and since is None:
        rows = _rows(store, filters, before, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor(rows[-1]) if more else None, counts)
    found: list[WorkflowState] = []
    scanned = 0
    last: WorkflowState | None = None
    while len(found) <= limit and scanned < SEARCH_SCAN:
        batch = _rows(store, filters, before, _BATCH)
        for wf in batch:
            if since is not None and wf.created_at < since:
                return Page(found[:limit], _cursor_after(found, limit), counts)
            scanned += 1
            last = wf
            if filters.matches(wf):
                found.append(wf)
                if len(found) > limit:
                    break
        if len(batch) < _BATCH:
            return Page(found[:limit], _cursor_after(found, limit), counts)
        before = (batch[-1].created_at, batch[-1].id)
    if len(found) > limit:
        return Page(found[:limit], _cursor_after(found, limit), counts)
    # The scan budget ran out: continue, on the next page, from the last row read.
    return Page(found, encode_cursor(last) if last else None, counts, searched_out=True)


def browse(
    store: Store,
    filters: Filters,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
    *,
    with_counts: bool = True,
) -> Page:
    """One page of workflows, newest first (see _browse), with the stored documents the
    store's listings left out because they cannot be read."""
    page = _browse(store, filters, cursor, limit, with_counts=with_counts)
    return replace(page, unreadable=dict(store.unreadable))


def _cursor_after(found: list[WorkflowState], limit: int) -> str | None:
    return encode_cursor(found[limit - 1]) if len(found) > limit else None


def newest(store: Store, filters: Filters, limit: int | None = None) -> Iterator[WorkflowState]:
    """Every workflow under the filters, newest first, page by page (`statesaga list`)."""
    cursor: str | None = None
    left = limit
    while left is None or left > 0:
        size = MAX_PAGE_SIZE if left is None else min(left, MAX_PAGE_SIZE)
        page = browse(store, filters, cursor, size, with_counts=False)
        yield from page.workflows
        if left is not None:
            left -= len(page.workflows)
        cursor = page.next_cursor
        if cursor is None:
            return
