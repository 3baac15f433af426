"""Fixtures shared by the whole test suite: real services, started here when none is given."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest


def _register_sibling(name: str) -> None:
    """Make a helper module next to the tests importable by name (pytest runs with
    --import-mode=importlib, which puts no test folder on sys.path)."""
    import importlib.util
    import sys

    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_register_sibling("diagram_helpers")
_register_sibling("security_helpers")
_register_sibling("ops_redis")
_register_sibling("ops_handlers")

if TYPE_CHECKING:
    import redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, for a server a test starts."""
    return _free_port()


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # up (with a password or not)
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`STATESAGA_TEST_REDIS_URL` if set (a server with persistence on: the Redis store
    checks), else a private redis-server for this session."""
    configured = os.environ.get("STATESAGA_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    with _redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def redis_password_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A second private redis-server that requires a password: (redis URL without the
    password, the password), for tests of a wrong or missing one."""
    password = "s3cr3t-pw-7781"
    with _redis_server(tmp_path_factory.mktemp("redis-pw"), "--requirepass", password) as port:
        yield f"redis://127.0.0.1:{port}/0", password


@contextlib.contextmanager
def _redis_server(workdir: Path, *extra: str) -> Iterator[int]:
    """A redis-server on a free port for as long as the block runs; yields the port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not on PATH: install it (apt-get install -y redis-server) "
            "or set STATESAGA_TEST_REDIS_URL=redis://host:port/db"
        )
    port = _free_port()
    # Persistence on (AOF in the session's tmp dir), as on a production server: the Redis
    # store refuses a server that would lose every workflow on a restart.
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--dir",
            str(workdir),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while not _redis_answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {port} (exit code {proc.poll()})")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test database, flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL for a fresh SQLite file of this test (absolute path: sqlite:////...)."""
    return f"sqlite:///{tmp_path / 'statesaga.db'}"
