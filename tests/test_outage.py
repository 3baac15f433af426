"""Outage: one warning when a service goes away, one line when it is back, and retries that
back off (with jitter) up to a ceiling in between."""

from __future__ import annotations

import logging

import pytest
import redis
from statesaga.runtime.outage import Outage, is_outage


def test_an_outage_is_logged_once_and_its_retries_back_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage("loop", initial=1.0, factor=2.0, ceiling=8.0)
    with caplog.at_level(logging.INFO, logger="statesaga.outage"):
        pauses = [outage.failed(ConnectionError("refused")) for _ in range(6)]
        assert outage.down
        outage.ok()
        outage.ok()
    assert not outage.down
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert all(c / 2 <= p <= c for p, c in zip(pauses, ceilings, strict=True))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("loop: service unreachable (ConnectionError: refused)")
    assert lines[1].startswith("loop: service back after") and "(6 failed attempts)" in lines[1]
    # The next outage starts from the first pause again.
    assert outage.failed(ConnectionError("again")) <= 1.0


def test_what_counts_as_an_outage() -> None:
    # Importing a Redis adapter declares redis-py's errors to the core (the core never names
    # them), as a process that opens a redis:// store or an rq:// queue does.
    import statesaga.adapters.stores.redis  # noqa: F401

    assert is_outage(redis.exceptions.ConnectionError("down"))
    assert is_outage(redis.exceptions.TimeoutError("slow"))
    assert is_outage(ConnectionRefusedError())
    assert not is_outage(ValueError("a bug"))
    assert not is_outage(redis.exceptions.ResponseError("WRONGTYPE"))


def test_an_adapter_error_caused_by_a_lost_connection_is_an_outage() -> None:
    from statesaga.errors import AdapterError

    def wrapped() -> None:
        try:
            raise ConnectionAbortedError("host tries used up")
        except ConnectionAbortedError:
            raise AdapterError("cannot reach the store") from None

    with pytest.raises(AdapterError) as caught:
        wrapped()
    assert is_outage(caught.value)
    assert not is_outage(AdapterError("redis store has no persistence"))
