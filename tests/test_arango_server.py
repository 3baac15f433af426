"""The arango:// store against a real ArangoDB server: what only a server can show.

Runs whenever STATESAGA_ARANGO_URL is set (CI's `arangodb:3.12` service, or
.ci/docker-compose.yml locally), like the `arango` row of tests/test_store_conformance.py;
skipped otherwise. Each test uses its own collection, dropped afterwards.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from statesaga.errors import AdapterError, ConflictError
from statesaga.models import WorkflowStatus
from statesaga.testing import make_workflow
from statesaga.testing.store_suite import T0

pytestmark = [
    pytest.mark.arango,
    pytest.mark.skipif(
        not os.environ.get("STATESAGA_ARANGO_URL"), reason="STATESAGA_ARANGO_URL not set"
    ),
]


@pytest.fixture
def store() -> Iterator[Any]:
    from statesaga.adapters.arango import ArangoStore

    store = ArangoStore.from_url(
        os.environ["STATESAGA_ARANGO_URL"],
        collection_prefix=f"server_{uuid.uuid4().hex[:12]}_",
        initialize=True,
    )
    store.initialize()
    yield store
    store.drop()


def test_heartbeats_racing_saves_never_make_a_conflict(store: Any) -> None:
    # One thread saves the document over and over, the only writer of revisions, so no save
    # may lose; another heartbeats it every couple of milliseconds (a worker beats every few
    # seconds; this makes overlaps certain). Each heartbeat changes the document's _rev, so
    # saves meet error 1200 on the server; the store must run them again and let the integer
    # revision decide (issue #22, point 1).
    wf = make_workflow(status=WorkflowStatus.RUNNING, input={"n": 0})
    store.create(wf)
    rounds = 150
    done = threading.Event()
    beats = 0
    errors: list[BaseException] = []

    def beat() -> None:
        nonlocal beats
        try:
            while not done.is_set():
                beats += 1
                store.heartbeat(wf.id, T0 + timedelta(microseconds=beats))
                time.sleep(0.002)
        except BaseException as exc:
            errors.append(exc)

    def save() -> None:
        try:
            doc = store.get(wf.id)
            for _ in range(rounds):
                doc.input["n"] += 1
                store.save(doc)  # ConflictError here is the bug
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    threads = [threading.Thread(target=beat), threading.Thread(target=save)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    assert not [e for e in errors if isinstance(e, ConflictError)]
    assert errors == []
    got = store.get(wf.id)
    assert (got.revision, got.input["n"]) == (rounds + 1, rounds)
    assert beats > 1
    assert got.heartbeat_at is not None and got.heartbeat_at >= T0


def _populate(store: Any, n: int = 60) -> None:
    statuses = [WorkflowStatus.RUNNING, WorkflowStatus.COMPLETED, WorkflowStatus.FAILED]
    for i in range(n):
        wf = make_workflow(
            session_id=f"S{i % 4}",
            status=statuses[i % 3],
            created_at=T0 + timedelta(seconds=(i * 7919) % n),
        )
        store.create(wf)


def _nodes(store: Any, query: str, binds: dict[str, Any]) -> list[dict[str, Any]]:
    plan = store._database().aql.explain(query, bind_vars=binds)
    nodes: list[dict[str, Any]] = plan["nodes"]
    return nodes


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"limit": 5},
        {"session_id": "S1"},
        {"status": WorkflowStatus.RUNNING},
        {"session_id": "S1", "status": WorkflowStatus.RUNNING, "limit": 2},
    ],
    ids=["all", "all-limit", "session", "status", "session-status-limit"],
)
def test_each_list_query_reads_an_index_in_order(store: Any, kwargs: dict[str, Any]) -> None:
    _populate(store)
    query, binds = store.list_query(**kwargs)
    nodes = _nodes(store, query, binds)
    types = [n["type"] for n in nodes]
    assert "SortNode" not in types, f"sorted in memory: {types}"
    assert "EnumerateCollectionNode" not in types, f"full collection scan: {types}"
    (index_node,) = [n for n in nodes if n["type"] == "IndexNode"]
    fields = [tuple(i["fields"]) for i in index_node["indexes"]]
    assert fields and all(f[-2:] == ("created_at_us", "_key") for f in fields)
    # ... and the order it gives is the one the contract asks for.
    got = store.list(**kwargs)
    assert [(w.created_at, w.id) for w in got] == sorted((w.created_at, w.id) for w in got)


def test_the_stale_scan_reads_its_index(store: Any) -> None:
    from statesaga.adapters.arango import QUERIES

    _populate(store)
    binds = store._bind(statuses=["COMPENSATING", "RUNNING"], before=0)
    nodes = _nodes(store, QUERIES["stale"], binds)
    types = [n["type"] for n in nodes]
    assert "EnumerateCollectionNode" not in types, f"full collection scan: {types}"
    (index_node,) = [n for n in nodes if n["type"] == "IndexNode"]
    # [status, heartbeat_at_us] is the one made for it; any index led by status avoids the scan.
    assert [i["fields"][0] for i in index_node["indexes"]] == ["status"]


@pytest.fixture
def system_db() -> Iterator[Any]:
    """_system, reached with the URL's credentials, for checking what the store did."""
    from statesaga.adapters.arango import ArangoStore

    admin = ArangoStore.from_url(os.environ["STATESAGA_ARANGO_URL"])
    admin._database(schema=False)
    s = admin.settings
    yield admin._client.db("_system", username=s.username, password=s.password)
    admin.close()


def test_drop_of_a_missing_database_does_not_create_it(system_db: Any) -> None:
    from statesaga.adapters.arango import ArangoStore

    name = f"statesaga_missing_{uuid.uuid4().hex[:8]}"
    ArangoStore.from_url(os.environ["STATESAGA_ARANGO_URL"], database=name).drop()
    assert not system_db.has_database(name)


def test_a_user_without_a_grant_sees_no_access_not_a_missing_database(system_db: Any) -> None:
    # arangod answers 401 (not 1228) to a user without a grant on a missing database name.
    from statesaga.adapters.arango import ArangoStore

    user, password = f"statesaga_probe_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    try:
        system_db.create_user(user, password, active=True)
    except Exception as exc:  # the URL's user may not manage users
        pytest.skip(f"cannot create a user with the URL's credentials: {exc}")
    try:
        name = f"statesaga_missing_{uuid.uuid4().hex[:8]}"
        store = ArangoStore.from_url(
            os.environ["STATESAGA_ARANGO_URL"], database=name, username=user, password=password
        )
        with pytest.raises(AdapterError) as caught:
            store.initialize()
        assert f"authentication failed or no access to database {name!r}" in str(caught.value)
        assert password not in str(caught.value)
        assert not system_db.has_database(name)
        store.close()
    finally:
        system_db.delete_user(user, ignore_missing=True)
