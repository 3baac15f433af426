"""Fixtures shared by the whole test suite: real services, started here when none is given."""

from __future__ import annotations

import contextlib
import os
import signal
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


_register_sibling("process_helpers")
_register_sibling("checkout_helpers")
_register_sibling("diagram_helpers")
_register_sibling("security_helpers")
_register_sibling("ops_redis")
_register_sibling("ops_handlers")
_register_sibling("plan_cluster")
_register_sibling("skew_handlers")
_register_sibling("disk_handlers")
if __import__("importlib.util").util.find_spec("selenium") is not None:
    _register_sibling("browser_helpers")  # imports selenium: only where the test extra is

if TYPE_CHECKING:
    import redis


@pytest.fixture(autouse=True)
def _signal_handlers_left_alone() -> Iterator[None]:
    """No test leaves a SIGTERM / SIGINT handler behind (an in-process RQ worker's would turn
    the next Ctrl+C or SIGTERM to pytest into an INTERNALERROR): put back, and fail the test."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    left = {sig: h for sig, h in before.items() if signal.getsignal(sig) is not h}
    for sig, handler in left.items():
        found = signal.getsignal(sig)
        signal.signal(sig, handler)
        pytest.fail(f"the test left {signal.Signals(sig).name} handled by {found!r}")


def _checkout_metadata() -> list[tuple[str, int]]:
    from checkout_helpers import ROOT

    return sorted((str(p), p.stat().st_mtime_ns) for p in ROOT.glob("*.egg-info/*"))


_METADATA_AT_START = _checkout_metadata()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run if a test rewrote the checkout's package metadata (see source_copy)."""
    if hasattr(session.config, "workerinput"):
        return  # each xdist worker imports this module; the controller checks once
    if _checkout_metadata() != _METADATA_AT_START:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(
            "\nerror: a test rewrote statesaga.egg-info in the checkout: build a copy "
            "(the source_copy fixture)"
        )


@pytest.fixture(scope="session")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's source in a folder of its own, for tests that build or install it (see
    checkout_helpers: a build in the checkout would rewrite what other test processes read)."""
    from checkout_helpers import copy_checkout

    return copy_checkout(tmp_path_factory.mktemp("source") / "statesaga")


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, for a server a test starts."""
    from process_helpers import free_port

    return free_port()


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
    from ops_redis import RedisServer

    # Persistence on (AOF in the session's tmp dir), as on a production server: the Redis
    # store refuses a server that would lose every workflow on a restart.
    server = RedisServer(
        workdir, "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", *extra
    )
    server.start()
    try:
        yield server.port
    finally:
        server.stop(kill=False)


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
