"""The store's clock (statesaga.runtime.clock): read from the store once in a while, carried
forward on the monotonic clock; a store without one leaves the host's clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from statesaga.engine import Engine
from statesaga.plugins import open_queue, open_store
from statesaga.runtime.clock import StoreClock, server_time


class Server:
    """A store's clock two minutes ahead of this host's, which counts its reads."""

    def __init__(self, ahead: float = 120.0) -> None:
        self.ahead = timedelta(seconds=ahead)
        self.reads = 0
        self.down = False

    def __call__(self) -> datetime:
        self.reads += 1
        if self.down:
            raise ConnectionError("the store is down")
        return datetime.now(UTC) + self.ahead


def test_the_clock_is_the_stores_read_once_and_carried_forward() -> None:
    server = Server()
    clock = StoreClock(server, refresh=60.0)
    first = clock.now()
    assert abs((first - datetime.now(UTC)).total_seconds() - 120) < 0.5
    time.sleep(0.05)
    later = clock.now()
    assert timedelta(seconds=0.04) < later - first < timedelta(seconds=0.5)
    assert server.reads == 1  # no round trip per now()


def test_a_failed_read_keeps_the_last_one_but_the_first_must_succeed() -> None:
    server = Server()
    clock = StoreClock(server, refresh=0.0, retry=60.0)
    clock.now()
    server.down = True
    assert abs((clock.now() - datetime.now(UTC)).total_seconds() - 120) < 0.5
    assert server.reads == 2
    clock.now()
    assert server.reads == 2  # retried after `retry`, not at every now()
    with pytest.raises(ConnectionError):
        StoreClock(server).now()


def test_a_store_without_a_clock_leaves_the_hosts(tmp_path: object) -> None:
    calls: list[None] = []

    def none() -> None:
        calls.append(None)

    clock = StoreClock(none)
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 0.5
    clock.now()
    assert len(calls) == 1


@pytest.mark.redis
def test_the_engine_keeps_time_by_the_redis_servers_clock(redis_url: str) -> None:
    store = open_store(redis_url + "?durability=none")
    seconds, micro = store.client.time()  # type: ignore[attr-defined]
    told = server_time(store)
    assert told is not None
    assert abs(told.timestamp() - (int(seconds) + int(micro) / 1e6)) < 1.0
    engine = Engine(store, open_queue("inline://"))
    assert abs((engine.clock.now() - told).total_seconds()) < 1.0


def test_an_sqlite_store_has_no_clock_of_its_own(sqlite_url: str) -> None:
    assert server_time(open_store(sqlite_url)) is None


def test_a_store_that_refuses_its_clock_leaves_the_hosts() -> None:
    def refused() -> datetime:
        raise PermissionError("TIME is disabled on this server")

    clock = StoreClock(refused)
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 0.5
