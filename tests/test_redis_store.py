"""What the Redis store keeps in Redis, beyond the shared store conformance suite (which runs
against it in tests/test_store_conformance.py): the URL, the key layout others may inspect
with redis-cli, and the separation of prefixes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from statesaga.adapters.stores.redis import RedisStore
from statesaga.errors import AdapterError
from statesaga.models import WorkflowStatus
from statesaga.plugins import open_store
from statesaga.testing import make_workflow
from statesaga.testing.store_suite import T0

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_url: str, redis_client: Any) -> RedisStore:
    got = open_store(f"{redis_url}?prefix=app:")
    assert isinstance(got, RedisStore)
    got.initialize()
    return got


def test_the_url_picks_the_prefix_and_the_entry_point_opens_it(store: RedisStore) -> None:
    assert store.prefix == "app:"
    assert RedisStore.from_url("redis://127.0.0.1:1/0").prefix == "statesaga:"


def test_a_server_store_exists_without_asking_the_server() -> None:
    # Port 1 is closed: whether the server answers is learnt on first use, not here.
    assert RedisStore.from_url("redis://127.0.0.1:1/0").exists() is True


def test_an_unreachable_server_is_reported_when_initialized() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0?socket_connect_timeout=0.2")
    with pytest.raises(AdapterError, match="cannot reach"):
        store.initialize()


def test_documents_are_json_and_indexes_are_sorted_sets(
    store: RedisStore, redis_client: Any
) -> None:
    wf = make_workflow(session_id="chat-1", status=WorkflowStatus.RUNNING)
    store.create(wf)
    wf.status = WorkflowStatus.COMPLETED
    store.save(wf)
    doc = json.loads(redis_client.hget(f"app:wf:{wf.id}", "doc"))
    assert (doc["id"], doc["status"], doc["revision"]) == (wf.id, "COMPLETED", 2)
    micros = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert redis_client.zscore("app:session:chat-1", wf.id) == micros
    assert redis_client.zscore("app:status:COMPLETED", wf.id) == micros
    # Moving status moves the index entry: a stale entry would list the workflow twice.
    assert redis_client.zscore("app:status:RUNNING", wf.id) is None
    store.heartbeat(wf.id, T0 + timedelta(seconds=1, microseconds=1))
    assert redis_client.zscore("app:heartbeat", wf.id) == micros + 1_000_001
    assert store.get(wf.id).revision == 2


def test_prefixes_keep_two_deployments_apart(store: RedisStore, redis_url: str) -> None:
    other = RedisStore.from_url(f"{redis_url}?prefix=other:")
    wf = make_workflow()
    store.create(wf)
    assert other.list() == []
    assert [w.id for w in store.list()] == [wf.id]
    other.close()
