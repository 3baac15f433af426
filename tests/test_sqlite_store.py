"""What the SQLite store promises beyond the Store contract: URLs, pragmas, index use, threads."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from statesaga.adapters.stores.sqlite import SQLiteStore, _stale_query
from statesaga.errors import AdapterError, ConflictError
from statesaga.models import WorkflowState, WorkflowStatus
from statesaga.plugins import NoStoreError, open_existing_store, open_store


def test_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore.from_url("sqlite:///data/relative.db")
    store.create(WorkflowState(name="x"))  # schema made lazily, directory created
    store.close()
    assert (tmp_path / "data" / "relative.db").is_file()


def test_absolute_url_and_the_entry_point(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "abs.db"
    assert store.path.is_absolute()


def test_exists_is_false_until_the_file_is_made_and_asking_makes_nothing(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "later" / "s.db")
    assert store.exists() is False
    assert not (tmp_path / "later").exists()
    with pytest.raises(NoStoreError, match="nothing has been stored there yet"):
        open_existing_store(f"sqlite:///{tmp_path}/later/s.db")
    store.create(WorkflowState(name="x"))
    assert store.exists() is True
    assert open_existing_store(f"sqlite:///{tmp_path}/later/s.db").exists()
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///x.db?synchronous=off",
        "sqlite:///x.db?sync=normal",
        "sqlite:///x.db?timeout=soon",
        "sqlite://host/x.db",
        "sqlite:///:memory:",
        "sqlite://",
    ],
)
def test_bad_urls_are_adapter_errors(url: str) -> None:
    with pytest.raises(AdapterError):
        SQLiteStore.from_url(url)


@pytest.mark.parametrize(("option", "expected"), [("", 2), ("?synchronous=normal", 1)])
def test_pragmas(sqlite_url: str, option: str, expected: int) -> None:
    store = SQLiteStore.from_url(sqlite_url + option + ("&" if option else "?") + "timeout=7.5")
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == expected  # FULL=2, NORMAL=1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 7500
    store.close()


def test_list_stale_searches_the_heartbeat_index(sqlite_url: str) -> None:
    store = SQLiteStore.from_url(sqlite_url)
    store.initialize()
    plan = (
        store._conn()
        .execute(
            "EXPLAIN QUERY PLAN " + _stale_query(2),
            ["RUNNING", "COMPENSATING"] * 2 + [0] + ["RUNNING", "COMPENSATING"],
        )
        .fetchall()
    )
    details = [row[-1] for row in plan]
    searches = [d for d in details if "USING INDEX workflows_heartbeat" in d]
    # NULL, a number below the cutoff, and a value that is not a number (named unreadable)
    assert len(searches) == 3, details
    assert not any(d.startswith("SCAN workflows") for d in details), details
    store.close()


def test_heartbeat_touches_only_its_column(sqlite_url: str) -> None:
    store = SQLiteStore.from_url(sqlite_url)
    wf = WorkflowState(name="x", status=WorkflowStatus.RUNNING)
    store.create(wf)
    before = store._conn().execute("SELECT doc, revision FROM workflows").fetchone()
    store.heartbeat(wf.id, datetime(2026, 2, 8, tzinfo=UTC))
    after = store._conn().execute("SELECT doc, revision FROM workflows").fetchone()
    assert after == before
    store.close()


def test_each_thread_has_its_own_connection_and_close_closes_them_all(sqlite_url: str) -> None:
    store = SQLiteStore.from_url(sqlite_url)
    wf = WorkflowState(name="x")
    store.create(wf)
    seen: list[sqlite3.Connection] = []

    def read() -> None:
        store.get(wf.id)
        seen.append(store._conn())

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in seen} | {id(store._conn())}) == 4
    store.close()
    for conn in seen:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
    # A closed store opens new connections when used again.
    assert store.get(wf.id).id == wf.id
    store.close()


def test_store_times_are_exact_microseconds_either_side_of_the_epoch() -> None:
    """Heartbeats and creation times are kept as integer microseconds (indexes order them):
    exact for every instant a datetime holds, a naive one read as UTC, an offset honoured."""
    from datetime import timedelta, timezone

    from statesaga.adapters.stores.document import from_micros, micros

    assert micros(datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == 1
    assert micros(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1
    assert micros(datetime(2026, 12, 6, 19, 30)) == 1_796_585_400_000_000
    plus_two = datetime(2026, 12, 6, 21, 30, tzinfo=timezone(timedelta(hours=2)))
    assert micros(plus_two) == 1_796_585_400_000_000
    for at in (
        datetime(1, 1, 2, tzinfo=UTC),
        datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC),
    ):
        assert from_micros(micros(at)) == at


def test_a_save_rewrites_only_the_indexes_of_the_columns_it_changes(sqlite_url: str) -> None:
    """A save that keeps the status, session and creation time leaves their three indexes
    alone (about half the pages of a save); one that changes any of them writes every column,
    and a stale one writes nothing."""
    store = SQLiteStore.from_url(sqlite_url)
    wf = WorkflowState(name="x", status=WorkflowStatus.RUNNING, session_id="s1")
    store.create(wf)
    store.writer().execute("PRAGMA wal_autocheckpoint = 0")  # the WAL only grows: count it
    wal = Path(str(store.path) + "-wal")

    def save() -> int:
        before = wal.stat().st_size
        store.save(wf)
        return (wal.stat().st_size - before) // (4096 + 24)  # frames: pages written

    def row() -> tuple[object, ...]:
        sql = "SELECT status, session_id, created_at, revision FROM workflows"
        return tuple(store._conn().execute(sql).fetchone())

    kept = save()
    created = row()[2]
    wf.status = WorkflowStatus.COMPLETED
    changed = save()
    assert row() == ("COMPLETED", "s1", created, 3)
    assert 0 < kept < changed, (kept, changed)
    wf.session_id = "s2"
    wf.created_at = datetime(2026, 1, 2, tzinfo=UTC)
    save()
    assert row()[:2] == ("COMPLETED", "s2") and row()[2] != created
    assert [w.id for w in store.list(session_id="s2")] == [wf.id]
    assert store.list(session_id="s1") == []
    stale = wf.model_copy(update={"revision": 2})
    with pytest.raises(ConflictError):
        store.save(stale)
    assert row()[3] == 4
    store.close()
