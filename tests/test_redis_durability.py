"""The Redis store refuses a server that would lose every workflow when it restarts, unless
the URL opts out (`?durability=none`); with AOF on, workflows survive a crash of the server."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_redis import RedisServer
from statesaga.adapters.stores.redis import RedisStore
from statesaga.errors import AdapterError
from statesaga.models import WorkflowStatus
from statesaga.plugins import open_store
from statesaga.testing import make_workflow

pytestmark = pytest.mark.redis

NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path, *request.param)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("server", [NO_PERSISTENCE], indirect=True)
def test_a_server_without_persistence_is_refused_in_one_line(server: RedisServer) -> None:
    store = open_store(server.url)
    with pytest.raises(AdapterError) as refused:
        store.initialize()
    message = str(refused.value)
    assert "\n" not in message
    assert f"127.0.0.1:{server.port}/0 has no persistence" in message
    assert "?durability=none" in message and "appendonly yes" in message
    # Not only initialize(): the first read or write is refused too, and nothing is written.
    with pytest.raises(AdapterError, match="no persistence"):
        open_store(server.url).create(make_workflow())
    with pytest.raises(AdapterError, match="no persistence"):
        open_store(server.url).list()
    import redis

    assert redis.Redis.from_url(server.url).dbsize() == 0


@pytest.mark.parametrize("server", [NO_PERSISTENCE], indirect=True)
def test_the_opt_out_accepts_a_server_without_persistence(server: RedisServer) -> None:
    store = open_store(f"{server.url}?durability=none&prefix=x:")
    assert isinstance(store, RedisStore) and store.prefix == "x:"
    store.initialize()
    wf = make_workflow()
    store.create(wf)
    assert store.get(wf.id).id == wf.id


def test_a_bad_durability_value_names_the_option() -> None:
    with pytest.raises(AdapterError, match="durability='maybe': expected one of checked, none"):
        open_store("redis://127.0.0.1:1/0?durability=maybe")


@pytest.mark.parametrize("server", [("--save", "900 1", "--appendonly", "no")], indirect=True)
def test_rdb_snapshots_alone_are_accepted_with_a_warning(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="statesaga.redis_store"):
        open_store(server.url).initialize()
    assert "RDB snapshots only" in caplog.text


@pytest.mark.parametrize(
    "server",
    [
        ("--save", "", "--appendonly", "yes", "--rename-command", "CONFIG", ""),
        ("--save", "", "--appendonly", "no", "--rename-command", "CONFIG", ""),
    ],
    indirect=True,
    ids=["aof", "none"],
)
def test_a_server_with_config_disabled_is_judged_by_info(server: RedisServer) -> None:
    store = open_store(server.url)
    if "yes" in server.args:
        store.initialize()  # INFO persistence says aof_enabled:1
        return
    with pytest.raises(AdapterError, match="cannot read the server's persistence settings"):
        store.initialize()


@pytest.mark.parametrize("server", [NO_PERSISTENCE], indirect=True)
@pytest.mark.parametrize("command", ["list", "recover-every", "worker"])
@pytest.mark.slow
def test_the_cli_refuses_in_one_line_and_exits_1(server: RedisServer, command: str) -> None:
    queue = server.url.replace("redis://", "rq://")
    args = {
        "list": ["list"],
        "recover-every": ["recover", "--every", "1", "--queue", queue],
        "worker": ["worker", "--queue", queue, "--processes", "2"],
    }[command]
    proc = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", *args, "--store", server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "no persistence" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("server", [("--save", "", "--appendonly", "yes")], indirect=True)
def test_with_aof_the_workflows_survive_a_crash_of_the_server(server: RedisServer) -> None:
    store = open_store(server.url)
    wf = make_workflow()
    store.create(wf)
    wf.status = WorkflowStatus.RUNNING
    store.save(wf)
    store.close()
    # appendfsync everysec: a crash loses at most the last second; wait for the fsync.
    import redis

    client = redis.Redis.from_url(server.url)
    client.execute_command("BGREWRITEAOF")
    client.close()
    import time

    time.sleep(1.5)
    server.stop(kill=True)
    server.start()
    again = open_store(server.url)
    assert again.get(wf.id).status is WorkflowStatus.RUNNING
    assert [w.id for w in again.list(status=WorkflowStatus.RUNNING)] == [wf.id]


@pytest.mark.slow
def test_a_one_shot_command_on_an_unreachable_server_says_so_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", "list", "--store", "redis://127.0.0.1:1/0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot reach the store or queue: ConnectionError")
    assert proc.stderr.count("\n") == 1, proc.stderr
