"""The Store conformance suite, run against every store adapter.

To add an adapter, add a row to BACKENDS: how to open an empty store, and (optionally) how
to overwrite a stored document with raw text, which enables the unknown-field test.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from statesaga.adapters.stores.memory import MemoryStore
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.ports import Store
from statesaga.testing import StoreConformance
from statesaga.testing.store_suite import SECRET


@dataclass(frozen=True)
class Backend:
    """How the suite gets an empty store of one adapter, and gets rid of it afterwards."""

    open: Callable[[pytest.FixtureRequest], Store]
    write_raw: Callable[[Any, str, str], None] | None = None
    #: Damages a stored workflow (see StoreConformance.damage); None: write_raw's kinds only.
    damage: Callable[[Any, str, str], None] | None = None
    discard: Callable[[Any], None] | None = None  # runs before close(), e.g. drop a collection
    marks: tuple[pytest.MarkDecorator, ...] = ()


def _memory(request: pytest.FixtureRequest) -> Store:
    return MemoryStore.from_url("memory://")


def _memory_raw(store: MemoryStore, workflow_id: str, text: str) -> None:
    store.write_raw(workflow_id, text)


def _memory_damage(store: MemoryStore, workflow_id: str, kind: str) -> None:
    if kind != "revision":  # bytes: a process's memory holds text, never undecodable bytes
        raise NotImplementedError
    with store._lock:
        record = store._records[workflow_id]
        store._records[workflow_id] = replace(record, revision="7x")  # type: ignore[arg-type]


def _not_utf8(text: str) -> bytes:
    """The document with a byte that cannot start a UTF-8 character, and the secret."""
    return text.encode().replace(b'"name":"', b'"name":"\xff' + SECRET.encode(), 1)


def _sqlite(request: pytest.FixtureRequest) -> Store:
    url: str = request.getfixturevalue("sqlite_url")
    return SQLiteStore.from_url(url)


def _sqlite_raw(store: SQLiteStore, workflow_id: str, text: str) -> None:
    # A separate connection, as another program (or an older statesaga) writing the file would.
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE workflows SET doc = ? WHERE id = ?", (text, workflow_id))


def _sqlite_damage(store: SQLiteStore, workflow_id: str, kind: str) -> None:
    with sqlite3.connect(store.path) as conn:
        if kind == "bytes":
            conn.text_factory = bytes
            (doc,) = conn.execute(
                "SELECT doc FROM workflows WHERE id = ?", (workflow_id,)
            ).fetchone()
            conn.execute(
                "UPDATE workflows SET doc = CAST(? AS TEXT) WHERE id = ?",
                (_not_utf8(doc.decode()), workflow_id),
            )
        elif kind == "revision":
            conn.execute("UPDATE workflows SET revision = '7x' WHERE id = ?", (workflow_id,))
        elif kind == "json":
            pytest.skip("sqlite refuses text that is not JSON: the workflows_name index reads it")
        else:
            raise NotImplementedError


def _arango(request: pytest.FixtureRequest) -> Store:
    # Imported here: the adapter needs python-arango, and the row is skipped without a server.
    from statesaga.adapters.stores.arango import ArangoStore

    # The suite needs an empty store, so each test gets its own collection in the shared
    # database, dropped afterwards.
    store: Store = ArangoStore.from_url(
        os.environ["STATESAGA_ARANGO_URL"],
        collection_prefix=f"conformance_{uuid.uuid4().hex[:12]}_",
        initialize=True,
    )
    return store


def _arango_raw(store: Any, workflow_id: str, text: str) -> None:
    store.write_raw(workflow_id, text)


def _arango_drop(store: Any) -> None:
    store.drop()


def _redis(request: pytest.FixtureRequest) -> Store:
    # Imported here: the adapter needs redis-py. redis_client flushes the test database
    # before and after the test; the prefix keeps the suite's keys apart all the same.
    from statesaga.adapters.stores.redis import RedisStore

    request.getfixturevalue("redis_client")
    url: str = request.getfixturevalue("redis_url")
    return RedisStore.from_url(f"{url}?prefix=conformance-{uuid.uuid4().hex[:8]}:")


def _redis_raw(store: Any, workflow_id: str, text: str) -> None:
    store.client.hset(f"{store.prefix}wf:{workflow_id}", "doc", text)


def _redis_damage(store: Any, workflow_id: str, kind: str) -> None:
    key = f"{store.prefix}wf:{workflow_id}"
    if kind == "bytes":
        store.client.hset(key, "doc", _not_utf8(store.client.hget(key, "doc")))
    elif kind == "revision":
        store.client.hset(key, "rev", "7x")
    else:
        raise NotImplementedError


_NO_ARANGO = pytest.mark.skipif(
    not os.environ.get("STATESAGA_ARANGO_URL"), reason="STATESAGA_ARANGO_URL not set"
)

BACKENDS: dict[str, Backend] = {
    "memory": Backend(_memory, _memory_raw, _memory_damage),
    "sqlite": Backend(_sqlite, _sqlite_raw, _sqlite_damage),
    "redis": Backend(_redis, _redis_raw, _redis_damage, marks=(pytest.mark.redis,)),
    "arango": Backend(
        _arango, _arango_raw, discard=_arango_drop, marks=(pytest.mark.arango, _NO_ARANGO)
    ),
}


class TestStoreConformance(StoreConformance):
    @pytest.fixture(
        params=[pytest.param(name, marks=b.marks) for name, b in BACKENDS.items()],
    )
    def backend(self, request: pytest.FixtureRequest) -> Backend:
        return BACKENDS[request.param]

    @pytest.fixture
    def store(self, backend: Backend, request: pytest.FixtureRequest) -> Iterator[Store]:
        store = backend.open(request)
        store.initialize()
        self._backend = backend
        yield store
        if backend.discard is not None:
            backend.discard(store)
        store.close()

    def write_raw(self, store: Store, workflow_id: str, text: str) -> None:
        if self._backend.write_raw is None:
            raise NotImplementedError
        self._backend.write_raw(store, workflow_id, text)

    def damage(self, store: Store, workflow_id: str, kind: str) -> None:
        try:
            if self._backend.damage is None:
                raise NotImplementedError
            self._backend.damage(store, workflow_id, kind)
        except NotImplementedError:
            super().damage(store, workflow_id, kind)  # json, schema: through write_raw
