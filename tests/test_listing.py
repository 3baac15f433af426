"""Finding a workflow among many: `statesaga list` newest first (and `--oldest`), the list's
search by id or its beginning and its time range, on a real SQLite file and on a store that
is read by scanning (memory)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from statesaga.adapters.stores.memory import MemoryStore
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.models import WorkflowState, WorkflowStatus
from statesaga.ports import Store
from statesaga.web.query import Filters, browse

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def fill(store: Store, n: int) -> list[WorkflowState]:
    """n workflows, one a minute from T0 over two days' ids, alternately RUNNING and COMPLETED."""
    made = []
    for i in range(n):
        at = T0 + timedelta(hours=i)
        wf = WorkflowState(
            id=f"WF-{at:%Y%m%d}-{i:08x}",
            name="trip_booking",
            status=WorkflowStatus.COMPLETED if i % 2 else WorkflowStatus.RUNNING,
            created_at=at,
            updated_at=at,
        )
        store.create(wf)
        made.append(wf)
    return made


def statesaga(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("statesaga")
    return subprocess.run([str(script), *args], capture_output=True, text=True, check=False)


def test_list_shows_the_newest_first_and_limit_keeps_the_newest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'many.db'}"
    store = SQLiteStore.from_url(url)
    store.initialize()
    made = fill(store, 30)
    store.close()
    ids = [wf.id for wf in made]

    newest = statesaga("list", "--store", url, "--limit", "10")
    assert newest.returncode == 0, newest.stderr
    assert [line.split()[0] for line in newest.stdout.splitlines()] == ids[::-1][:10]

    oldest = statesaga("list", "--store", url, "--limit", "3", "--oldest", "--json")
    assert [json.loads(line)["id"] for line in oldest.stdout.splitlines()] == ids[:3]

    running = statesaga("list", "--store", url, "--status", "running", "--limit", "2")
    assert [line.split()[0] for line in running.stdout.splitlines()] == [ids[28], ids[26]]

    every = statesaga("list", "--store", url)
    assert [line.split()[0] for line in every.stdout.splitlines()] == ids[::-1]


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        s: Store = SQLiteStore.from_url(f"sqlite:///{tmp_path / 'b.db'}")
    else:
        s = MemoryStore()
    s.initialize()
    return s


def test_search_by_id_prefix_and_time_range(store: Store) -> None:
    made = fill(store, 48)  # 2026-12-01 08:00 to 2026-12-03 07:00, one an hour
    ids = [wf.id for wf in made]

    exact = browse(store, Filters(id_prefix=ids[7]))
    assert [wf.id for wf in exact.workflows] == [ids[7]]
    lower = browse(store, Filters(id_prefix=ids[7].lower()))
    assert [wf.id for wf in lower.workflows] == [ids[7]]

    day = browse(store, Filters(id_prefix="WF-20261202"))
    assert [wf.id for wf in day.workflows] == [i for i in ids[::-1] if "20261202" in i]
    assert len(day.workflows) == 24 and day.next_cursor is None

    paged = browse(store, Filters(id_prefix="WF-2026120"), limit=20)
    seen = [wf.id for wf in paged.workflows]
    while paged.next_cursor:
        paged = browse(store, Filters(id_prefix="WF-2026120"), paged.next_cursor, limit=20)
        seen += [wf.id for wf in paged.workflows]
    assert seen == ids[::-1]

    window = Filters.parse(None, None, None, since="2026-12-02T10:00", until="2026-12-02T13:00")
    inside = browse(store, window)
    assert [wf.created_at.hour for wf in inside.workflows] == [12, 11, 10]
    assert inside.counts == {"RUNNING": 24, "COMPLETED": 24}  # the counts are the store's

    running = Filters.parse("running", None, None, until="2026-12-01T12:00")
    assert [wf.created_at.hour for wf in browse(store, running).workflows] == [10, 8]
    assert browse(store, Filters(id_prefix="WF-1999")).workflows == []


def test_a_bad_time_names_the_parameter() -> None:
    with pytest.raises(ValueError, match="since must be a date or an ISO time"):
        Filters.parse(None, None, None, since="yesterday")
