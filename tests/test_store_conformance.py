"""The Store conformance suite, run against every store adapter.

To add an adapter, add a row to BACKENDS: how to open an empty store, and (optionally) how
to overwrite a stored document with raw text, which enables the unknown-field test.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from statesaga.adapters.memory import MemoryStore
from statesaga.adapters.sqlite import SQLiteStore
from statesaga.ports import Store
from statesaga.testing import StoreConformance


@dataclass(frozen=True)
class Backend:
    """How the suite gets an empty store of one adapter, and gets rid of it afterwards."""

    open: Callable[[pytest.FixtureRequest], Store]
    write_raw: Callable[[Any, str, str], None] | None = None
    discard: Callable[[Any], None] | None = None  # runs before close(), e.g. drop a collection
    marks: tuple[pytest.MarkDecorator, ...] = ()


def _memory(request: pytest.FixtureRequest) -> Store:
    return MemoryStore.from_url("memory://")


def _memory_raw(store: MemoryStore, workflow_id: str, text: str) -> None:
    store.write_raw(workflow_id, text)


def _sqlite(request: pytest.FixtureRequest) -> Store:
    url: str = request.getfixturevalue("sqlite_url")
    return SQLiteStore.from_url(url)


def _sqlite_raw(store: SQLiteStore, workflow_id: str, text: str) -> None:
    # A separate connection, as another program (or an older statesaga) writing the file would.
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE workflows SET doc = ? WHERE id = ?", (text, workflow_id))


def _arango(request: pytest.FixtureRequest) -> Store:
    # Imported here: the adapter needs python-arango, and the row is skipped without a server.
    from statesaga.adapters.arango import ArangoStore

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
    from statesaga.adapters.redis_store import RedisStore

    request.getfixturevalue("redis_client")
    url: str = request.getfixturevalue("redis_url")
    return RedisStore.from_url(f"{url}?prefix=conformance-{uuid.uuid4().hex[:8]}:")


def _redis_raw(store: Any, workflow_id: str, text: str) -> None:
    store.client.hset(f"{store.prefix}wf:{workflow_id}", "doc", text)


_NO_ARANGO = pytest.mark.skipif(
    not os.environ.get("STATESAGA_ARANGO_URL"), reason="STATESAGA_ARANGO_URL not set"
)

BACKENDS: dict[str, Backend] = {
    "memory": Backend(_memory, _memory_raw),
    "sqlite": Backend(_sqlite, _sqlite_raw),
    "redis": Backend(_redis, _redis_raw, marks=(pytest.mark.redis,)),
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
