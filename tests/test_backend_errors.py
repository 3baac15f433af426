"""Adapters tell the core what their client libraries' errors mean (statesaga.errors.BackendError):
the core never names sqlite3, redis or rq, yet a lost Redis connection is an outage, a Redis
timeout a pause, a locked SQLite file a 503, and each is one line naming its backend."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import redis
import rq.exceptions
from statesaga.cli.options import _backend_error
from statesaga.errors import BackendError, BackendPaused, BackendUnavailable, BackendUnreachable
from statesaga.runtime.outage import is_outage, is_pause
from statesaga.web.http import status_of


def test_redis_errors_mean_what_they_meant() -> None:
    lost = redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1")
    slow = redis.exceptions.TimeoutError("Timeout reading from socket")
    refused = redis.exceptions.ResponseError("WRONGTYPE")
    assert isinstance(lost, BackendUnreachable) and not isinstance(lost, BackendPaused)
    assert is_outage(lost) and not is_pause(lost)
    assert is_outage(slow) and is_pause(slow)
    assert not is_outage(refused) and isinstance(refused, BackendError)
    assert _backend_error(lost) == "redis: ConnectionError: Error 111 connecting to 127.0.0.1:1"
    assert _backend_error(rq.exceptions.NoSuchJobError("x")) == "rq: NoSuchJobError: x"
    assert status_of(lost) == 503 and status_of(slow) == 503


def test_sqlite_errors_are_one_line_and_a_locked_file_is_unavailable() -> None:
    locked = sqlite3.OperationalError("database is locked")
    assert isinstance(locked, BackendUnavailable) and not is_outage(locked)
    assert _backend_error(locked) == "sqlite: database is locked"
    assert _backend_error(sqlite3.IntegrityError("UNIQUE")) == "sqlite: UNIQUE"
    assert status_of(locked) == 503
    assert status_of(RuntimeError("a bug")) == 500 and _backend_error(RuntimeError()) is None


def test_importing_the_core_declares_no_backend() -> None:
    """The declarations come with the adapters: the core alone knows none of the libraries."""
    code = (
        "import sys, statesaga.engine, statesaga.runtime.outage, statesaga.cli\n"
        "print(sorted(m for m in ('sqlite3', 'redis', 'rq') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
