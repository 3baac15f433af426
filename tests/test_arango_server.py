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
    from statesaga.adapters.stores.arango import ArangoStore

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
    from statesaga.adapters.stores.arango import QUERIES

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
    from statesaga.adapters.stores.arango import ArangoStore

    admin = ArangoStore.from_url(os.environ["STATESAGA_ARANGO_URL"])
    admin._database(schema=False)
    s = admin.settings
    yield admin._conn.client.db("_system", username=s.username, password=s.password)
    admin.close()


def test_drop_of_a_missing_database_does_not_create_it(system_db: Any) -> None:
    from statesaga.adapters.stores.arango import ArangoStore

    name = f"statesaga_missing_{uuid.uuid4().hex[:8]}"
    ArangoStore.from_url(os.environ["STATESAGA_ARANGO_URL"], database=name).drop()
    assert not system_db.has_database(name)


def test_a_user_without_a_grant_sees_no_access_not_a_missing_database(system_db: Any) -> None:
    # arangod answers 401 (not 1228) to a user without a grant on a missing database name.
    from statesaga.adapters.stores.arango import ArangoStore

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


# -- issue 30: saves that reach the disk, outages ridden out, no lost batch -------------------


def test_the_collection_syncs_every_write_even_one_made_before(store: Any) -> None:
    coll = store._database().collection(store.settings.collection)
    assert coll.properties()["sync"] is True
    # A collection made without sync (as python-arango makes one by default, or an older
    # version of this store did) is given it by initialize().
    coll.configure(sync=False)
    store.close()
    store.initialize()
    assert store._database().collection(store.settings.collection).properties()["sync"] is True


class _HTTPProxy:
    """A TCP relay between the store and the real server, one HTTP/1.1 request at a time
    (Content-Length framing, as arangod answers). It can cut the link (`down`: new and kept
    connections are closed without an answer) and drop the answer to the first request whose
    path matches `drop_answer_to`, after the server has handled it. The server behind it is
    the real one; the relay only loses bytes, as a network does."""

    def __init__(self, host: str, port: int) -> None:
        import socket

        self.upstream = (host, port)
        self.down = threading.Event()
        self.drop_answer_to: str | None = None
        self.dropped: list[str] = []
        self.paths: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    @staticmethod
    def _message(reader: Any) -> bytes | None:
        head = b""
        length = 0
        while True:
            line = reader.readline()
            if not line:
                return None
            head += line
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return head + reader.read(length)

    def _relay(self, conn: Any) -> None:
        import re
        import socket

        with conn, socket.create_connection(self.upstream) as up:
            client, server = conn.makefile("rb"), up.makefile("rb")
            while True:
                request = self._message(client)
                if request is None or self.down.is_set():
                    return
                path = request.split(b" ", 2)[1].decode()
                self.paths.append(path)
                up.sendall(request)
                response = self._message(server)
                if response is None:
                    return
                pattern = self.drop_answer_to
                if pattern and not self.dropped and re.search(pattern, path):
                    self.dropped.append(path)
                    return  # the server moved on; the client never hears of it
                conn.sendall(response)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def proxied(store: Any) -> Iterator[tuple[Any, _HTTPProxy]]:
    """A second store on the same collection, reaching the server through a _HTTPProxy."""
    from dataclasses import replace

    from statesaga.adapters.stores.arango import ArangoStore

    s = store.settings
    proxy = _HTTPProxy(s.host, s.port)
    other = ArangoStore(replace(s, host="127.0.0.1", port=proxy.port, tls=False))
    if s.tls:
        proxy.close()
        pytest.skip("the relay speaks plain HTTP; the URL asks for TLS")
    yield other, proxy
    other.close()
    proxy.close()


def test_a_dropped_cursor_batch_is_fetched_again_not_lost(proxied: Any) -> None:
    # ArangoDB 3.11+: the answer to a batch fetch is lost after the server sent it; the
    # store's retryable cursor asks for that same batch again and lists every workflow.
    other, proxy = proxied
    for i in range(7):
        other.create(make_workflow(created_at=T0 + timedelta(seconds=i)))
    other.batch_size = 2
    proxy.drop_answer_to = r"/_api/cursor/[^/]+/\d+$"
    assert len(other.list()) == 7
    assert len(proxy.dropped) == 1, proxy.paths
    dropped = proxy.dropped[0]
    assert proxy.paths.count(dropped) == 2, "the same batch is asked for again"


def test_recover_every_rides_out_a_lost_link(proxied: Any) -> None:
    # The link to the server goes away for a while (a restart, a failover, a partition look
    # the same from here): the recovery loop waits and goes on; it does not exit.
    from statesaga.adapters.queues.inline import InlineQueue
    from statesaga.engine import Engine
    from statesaga.runtime.recovery import Recovery, recover_every

    other, proxy = proxied
    recovery = Recovery(Engine(other, InlineQueue()), timeout=0.05)
    stop, scans = threading.Event(), []

    def scan_once() -> None:
        scans.append(recovery.run_once())
        if len(scans) == 1:
            proxy.down.set()
            threading.Timer(1.5, proxy.down.clear).start()
        if len(scans) == 3:
            stop.set()

    recover_every(recovery, scan_once, 0.05, stop=stop)
    assert len(scans) == 3


@pytest.mark.skipif(
    not os.environ.get("STATESAGA_ARANGO_RESTART"),
    reason="STATESAGA_ARANGO_RESTART (a command that restarts the server) not set",
)
def test_recover_every_rides_out_a_server_restart(store: Any) -> None:
    # A real restart (e.g. STATESAGA_ARANGO_RESTART='docker restart statesaga-arangodb'):
    # arangod answers 503/30 while it shuts down, then refuses connections, then answers.
    import shlex
    import subprocess

    from statesaga.adapters.queues.inline import InlineQueue
    from statesaga.engine import Engine
    from statesaga.runtime.recovery import Recovery, recover_every

    recovery = Recovery(Engine(store, InlineQueue()), timeout=0.05)
    stop, scans = threading.Event(), []
    restart = shlex.split(os.environ["STATESAGA_ARANGO_RESTART"])

    def scan_once() -> None:
        scans.append(recovery.run_once())
        if len(scans) == 1:
            subprocess.Popen(restart)
            time.sleep(0.5)  # into the shutdown
        if len(scans) == 3:
            stop.set()

    timer = threading.Timer(180, stop.set)
    timer.start()
    recover_every(recovery, scan_once, 0.5, stop=stop)
    timer.cancel()
    assert len(scans) == 3, "the loop did not come back within 180 s"
