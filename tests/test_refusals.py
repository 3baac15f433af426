"""Bad input, the rest, through the real command line (subprocesses) and the real HTTP API:
one damaged stored document never hides the others and is named without being quoted; a
refused command writes nothing (the store file is the same, byte for byte, or is not made);
one strict JSON check on every way data enters; no traceback reaches a user; no answer of
the dashboard is kept by a cache."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from security_helpers import EXAMPLES, TRIP_INPUT, statesaga
from statesaga.models import WorkflowStatus
from statesaga.plugins import open_store
from statesaga.testing.store_suite import T0, make_workflow

if TYPE_CHECKING:
    from starlette.testclient import TestClient

SECRET = "s3cret-api-key-in-the-input"
EXPENSE_INPUT = {"employee": "bob", "amount": 120}


def one_line(stderr: str) -> str:
    """The one line a refusal prints (and no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


def digest(db: Path) -> str:
    """The database file and what its write-ahead log holds (a write may sit there until a
    checkpoint; an empty or missing log holds nothing)."""
    wal = db.with_name(db.name + "-wal")
    logged = wal.read_bytes() if wal.exists() else b""
    return hashlib.sha256(db.read_bytes() + b"|" + logged).hexdigest()


# -- one damaged document never hides the others -----------------------------------------------
def _damage(url: str, wf_id: str, kind: str) -> None:
    """Damage one stored workflow as a disk, a hand edit or another program could."""
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.text_factory = bytes
            (doc,) = conn.execute("SELECT doc FROM workflows WHERE id = ?", (wf_id,)).fetchone()
            if kind == "bytes":  # as the issue does it: a byte that cannot start a character
                bad = doc.replace(b'"name":"', b'"name":"\xff', 1)
                conn.execute(
                    "UPDATE workflows SET doc = CAST(? AS TEXT) WHERE id = ?", (bad, wf_id)
                )
            elif kind == "schema":
                bad = doc.replace(b'"steps":[]', b'"steps":"' + SECRET.encode() + b'"', 1)
                conn.execute(
                    "UPDATE workflows SET doc = CAST(? AS TEXT) WHERE id = ?", (bad, wf_id)
                )
            elif kind == "heartbeat":  # not a number: it sorts after every number in SQLite
                conn.execute("UPDATE workflows SET heartbeat_at = 'soon' WHERE id = ?", (wf_id,))
            elif kind == "json":  # the name index refuses it at the write: a disk could not
                pytest.skip("SQLite's json_extract index refuses a document that is not JSON")
            else:
                conn.execute("UPDATE workflows SET revision = 'x7' WHERE id = ?", (wf_id,))
        return
    import redis

    client = redis.Redis.from_url(url.split("?")[0])
    key = f"{url.split('prefix=')[1]}wf:{wf_id}"
    doc = client.hget(key, "doc")
    assert isinstance(doc, bytes)
    if kind == "bytes":
        client.hset(key, "doc", doc.replace(b'"name":"', b'"name":"\xff', 1))
    elif kind == "schema":
        client.hset(key, "doc", doc.replace(b'"steps":[]', b'"steps":"' + SECRET.encode() + b'"'))
    elif kind == "json":  # cut short, as a partial write or a hand edit would
        client.hset(key, "doc", doc[: len(doc) // 2] + SECRET.encode())
    elif kind == "heartbeat":
        client.hset(key, "doc", doc.replace(b'"heartbeat_at":"', b'"heartbeat_at":"soon', 1))
    else:
        client.hset(key, "rev", "x7")
    client.close()


def _three_running(url: str) -> list[str]:
    """Three RUNNING workflows whose heartbeat is long stale (recovery takes them)."""
    store = open_store(url)
    store.initialize()
    ids = []
    for i in range(3):
        wf = make_workflow(
            status=WorkflowStatus.RUNNING,
            created_at=T0 + timedelta(seconds=i),
            heartbeat_at=T0,  # long stale: a heartbeat to damage
            input={"api_key": SECRET},
        )
        store.create(wf)
        ids.append(wf.id)
    store.close()
    return ids


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def damaged_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 's.db'}"
    request.getfixturevalue("redis_client")  # flushed before and after
    base: str = request.getfixturevalue("redis_url")
    return f"{base}?prefix=i31-{uuid.uuid4().hex[:8]}:"


@pytest.mark.parametrize("kind", ["bytes", "json", "schema", "revision", "heartbeat"])
@pytest.mark.slow
def test_list_recover_and_status_go_on_past_a_damaged_document_and_name_it(
    damaged_store_url: str, kind: str, tmp_path: Path
) -> None:
    url = damaged_store_url
    first, bad, last = _three_running(url)
    _damage(url, bad, kind)

    listed = statesaga("list", "--store", url, cwd=tmp_path)
    assert listed.returncode == 1
    # newest first (statesaga list)
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [last, first]
    line = one_line(listed.stderr)
    assert line.startswith(f"error: stored workflow {bad} cannot be read: ")
    assert SECRET not in line and "{" not in line  # what is wrong, not the document

    status = statesaga("status", bad, "--store", url, cwd=tmp_path)
    assert status.returncode == 1
    line = one_line(status.stderr)
    assert bad in line and SECRET not in line and "{" not in line

    recovered = statesaga("recover", "--store", url, cwd=tmp_path)
    assert recovered.returncode == 1, recovered.stderr
    assert recovered.stdout.splitlines() == [f"resumed {first}", f"resumed {last}"]
    line = one_line(recovered.stderr)
    assert line.startswith(f"error: stored workflow {bad} cannot be read: ") and SECRET not in line


# -- the dashboard, and what no cache may keep ----------------------------------------------
TOKEN = "t0ken-for-the-refusal-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """The dashboard over an SQLite store, with the expense example startable."""
    pytest.importorskip("starlette", reason="the dashboard needs the ui extra")
    pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")
    with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx works
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    from statesaga.web import ServeSettings, create_app

    url = f"sqlite:///{tmp_path / 'web.db'}"
    definitions = tmp_path / "definitions"
    definitions.mkdir()
    (definitions / "expense.yaml").write_text((EXAMPLES / "expense.yaml").read_text())
    settings = ServeSettings(
        store=url,
        queue="inline://",
        handlers=("statesaga.examples.expense_handlers",),
        definitions=definitions,
        token=TOKEN,
    )
    with TestClient(create_app(settings)) as client:
        yield client, url


def test_the_dashboard_shows_the_others_and_names_a_damaged_document(
    served: tuple[TestClient, str],
) -> None:
    client, url = served
    first, bad, last = _three_running(url)
    _damage(url, bad, "bytes")
    api = client.get("/api/workflows")
    assert api.status_code == 200, api.text
    body = api.json()
    assert [w["id"] for w in body["workflows"]] == [last, first]
    assert list(body["unreadable"]) == [bad] and "UTF-8" in body["unreadable"][bad]
    page = client.get("/")
    assert page.status_code == 200
    assert f"stored workflow {bad} cannot be read" in page.text and last in page.text
    assert SECRET not in api.text + page.text
    assert client.get(f"/api/workflows/{bad}").status_code == 400


def test_no_page_or_api_answer_may_be_cached(served: tuple[TestClient, str]) -> None:
    client, _ = served
    started = client.post(
        "/api/workflows", json={"definition": "expense_claim", "input": EXPENSE_INPUT}, headers=AUTH
    )
    assert started.status_code == 201, started.text
    wf_id = started.json()["id"]
    client.post("/login", data={"user": "alice", "token": TOKEN})  # a session cookie from now
    answers = {
        path: client.get(path, headers=AUTH)
        for path in ("/", f"/workflows/{wf_id}", "/definitions", "/login", "/api/workflows",
                     f"/api/workflows/{wf_id}", "/api/definitions", "/api/openapi.json",
                     "/no/such/page")
    }  # fmt: skip
    answers["signal"] = client.post(
        f"/api/workflows/{wf_id}/signal/nosuch", json={"payload": {}}, headers=AUTH
    )
    for path, answer in answers.items():
        assert answer.headers.get("cache-control") == "no-store", path
    assert "no-store" not in client.get("/static/app.css").headers.get("cache-control", "")


def test_a_payload_json_cannot_carry_is_refused_by_the_api_naming_the_field(
    served: tuple[TestClient, str],
) -> None:
    client, url = served
    started = client.post(
        "/api/workflows", json={"definition": "expense_claim", "input": EXPENSE_INPUT}, headers=AUTH
    )
    wf_id = started.json()["id"]
    store = open_store(url)
    deadline = time.monotonic() + 30
    while not any(
        s["status"] == "WAITING" for s in client.get(f"/api/workflows/{wf_id}").json()["steps"]
    ):
        assert time.monotonic() < deadline, "the expense claim never waited for its approval"
        time.sleep(0.05)
    before = store.get(wf_id).model_dump_json()
    for number in ("1e400", "-1e400", "NaN", "Infinity"):
        body = '{"payload": {"by": "alice", "n": [1, NUMBER]}}'.replace("NUMBER", number)
        r = client.post(f"/api/workflows/{wf_id}/signal/approve", content=body, headers=AUTH)
        assert r.status_code == 400, (number, r.text)
        assert "payload.n[1]" in r.json()["error"] and number in r.json()["error"]
    # The Python API holds a payload to the same check: a float JSON has no number for.
    from statesaga.app import EngineOptions
    from statesaga.errors import InputError

    engine = EngineOptions(url, "inline://", handlers=["statesaga.examples.expense_handlers"],
                           allow="operator").build()  # fmt: skip
    with pytest.raises(InputError, match=r"payload: n: inf is not a finite number"):
        engine.signal(wf_id, "approve", {"n": float("inf")})
    # And an integer it could write but no reader of the store could read back.
    with pytest.raises(InputError, match=r"payload: n\[0\]: an integer of more than 4300 digits"):
        engine.signal(wf_id, "approve", {"n": [10**4300]})
    assert store.get(wf_id).model_dump_json() == before


# -- a refused command writes nothing -----------------------------------------------------------
UNKNOWN_HANDLER = "workflow: w\nsteps:\n  - {name: a, action: nope}\n"
NOT_ALLOWED = "workflow: w\nhandlers: not_allowed_mod\nsteps:\n  - {name: a, action: x}\n"
RAISES = "workflow: b\nhandlers: boom_handlers\nsteps:\n  - {name: a, action: x}\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "unknown.yaml").write_text(UNKNOWN_HANDLER)
    (tmp_path / "not_allowed.yaml").write_text(NOT_ALLOWED)
    (tmp_path / "raises.yaml").write_text(RAISES)
    (tmp_path / "boom_handlers.py").write_text('import os\nraise RuntimeError("boom " + os.sep)\n')
    (tmp_path / "trip.json").write_text(json.dumps(TRIP_INPUT))
    return tmp_path


def _refused_runs(trip: str) -> list[tuple[str, ...]]:
    return [
        ("run", "unknown.yaml"),
        ("run", "not_allowed.yaml"),
        ("run", "unknown.yaml", "--handlers", "missing_mod"),
        ("run", "raises.yaml", "--handlers", "boom_handlers"),
        ("run", trip, "--input", "@trip.json", "--queue", "rq://127.0.0.1:1/0"),
        ("run", trip, "--input", '{"origin": "TPE", "n": 1e400}'),
        ("run", trip, "--input", '{"origin": "TPE"}'),
    ]


@pytest.mark.slow
def test_a_refused_run_makes_no_store(folder: Path) -> None:
    trip = str(EXAMPLES / "trip.yaml")
    for args in _refused_runs(trip):
        done = statesaga(*args, "--store", "sqlite:///x/made.db", cwd=folder)
        assert done.returncode in (1, 2) and "Traceback" not in done.stderr, (args, done.stderr)
        assert not (folder / "x").exists(), args
    raised = statesaga("run", "raises.yaml", "--handlers", "boom_handlers", cwd=folder)
    assert one_line(raised.stderr) == (
        "error: handler module 'boom_handlers' (--handlers) cannot be imported: "
        f"RuntimeError: boom / (line 2 of {folder / 'boom_handlers.py'})"
    )
    acting = [
        ("signal", "WF-20260101-00000000", "approve"),
        ("cancel", "x"),
        ("restart", "x", "--from", "a", "--reason", "r"),
        ("recover", "--once"),
    ]
    for args in acting:
        done = statesaga(*args, "--store", "sqlite:///x/made.db", cwd=folder)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        assert not (folder / "x").exists(), args
        # A path with a typo is refused, never "nothing to recover" with exit 0.
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "made.db" in one_line(done.stderr), (args, done.stderr)


@pytest.mark.slow
def test_every_refused_command_leaves_the_store_byte_identical(folder: Path) -> None:
    db = folder / "s.db"
    store = ("--store", f"sqlite:///{db}")
    trip, expense = str(EXAMPLES / "trip.yaml"), str(EXAMPLES / "expense.yaml")
    done = statesaga("run", trip, "--input", "@trip.json", *store, "--json", cwd=folder)
    assert done.returncode == 0, done.stderr
    completed = json.loads(done.stdout)["id"]
    waits = statesaga("run", expense, "--input", json.dumps(EXPENSE_INPUT), *store, "--json",
                      cwd=folder)  # fmt: skip
    waiting = json.loads(waits.stdout)["id"]
    with sqlite3.connect(db) as conn:  # what the runs left in the log, into the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    refused = [
        *_refused_runs(trip),
        ("signal", waiting, "approve", "--payload", '{"by": "a", "n": 1e400}'),
        ("signal", waiting, "approve", "--payload", '{"by": NaN}'),
        ("signal", waiting, "nosuch"),
        ("signal", completed, "approve"),
        ("signal", "WF-20260101-00000000", "approve"),
        ("signal", waiting, "approve", "--handlers", "missing_mod"),
        ("cancel", completed),
        ("cancel", "../../etc/passwd"),
        ("restart", completed, "--from", "reserve_flight", "--reason", "r"),
        ("restart", waiting, "--from", "pay", "--reason", "r"),
        ("status", "WF-20260101-00000000"),
        ("list", "--status", "bogus"),
        ("recover", "--handlers", "missing_mod"),
    ]
    for args in refused:
        before = digest(db)
        done = statesaga(*args, *store, cwd=folder)
        assert done.returncode in (1, 2), (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        assert digest(db) == before, f"{args} changed the store"


def test_a_payload_json_cannot_carry_is_one_line_naming_the_field(
    folder: Path, sqlite_url: str
) -> None:
    done = statesaga("signal", "WF-20260101-00000000", "go", "--store", sqlite_url,
                     "--payload", '{"by": "a", "n": [1, 1e400]}', cwd=folder)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "Error: Invalid value for --payload: not JSON: "
        "n[1]: 1e400 is not a finite number (too large for a float)"
    )


# -- no traceback reaches a user ----------------------------------------------------------------
@pytest.mark.redis
def test_cancel_of_a_workflow_whose_redis_revision_is_not_a_number_is_one_line(
    redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    url = f"{redis_url}?prefix=i31-{uuid.uuid4().hex[:8]}:"
    wf_id = _three_running(url)[0]
    _damage(url, wf_id, "revision")
    done = statesaga("cancel", wf_id, "--store", url, cwd=tmp_path)
    assert done.returncode == 1
    assert one_line(done.stderr) == (f"stored {wf_id}: [revision] must be a whole number from 1")
    assert redis_client.hget(f"{url.split('prefix=')[1]}wf:{wf_id}", "rev") == b"x7"


def test_serve_on_a_port_that_is_not_one_is_a_usage_error(tmp_path: Path) -> None:
    done = statesaga("serve", "--port", "70000", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "70000 is not in the range 0<=x<=65535" in done.stderr


@pytest.mark.redis
def test_a_worker_given_a_job_for_no_stored_workflow_logs_one_warning_and_goes_on(
    redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    from rq import Queue
    from rq.serializers import JSONSerializer
    from statesaga.ports import Job

    name = f"i31-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, connection=redis_client, serializer=JSONSerializer)
    ids = ["WF-20260101-00000000", "../../etc/passwd", "x\n2026-01-01 INFO forged line"]
    for wf_id in ids:
        queue.enqueue("statesaga.worker.run_job", Job("step", wf_id, "a", 1).to_dict())
    url = redis_url.replace("redis://", "rq://", 1) + f"?queue={name}"
    done = statesaga("worker", "--queue", url, "--store", f"sqlite:///{tmp_path / 's.db'}",
                     "--burst", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = done.stdout + done.stderr
    assert "Traceback" not in log and " ERROR " not in log, log
    warned = [line for line in log.splitlines() if " WARNING " in line]
    assert [w.split(" WARNING ")[1] for w in warned] == [
        f"statesaga.engine: step job for workflow {wf_id!r} ignored: the store holds no such "
        "workflow"
        for wf_id in ids
    ]
    assert len(queue) == 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))


def test_a_document_that_is_not_json_in_a_store_without_the_name_index_is_named(
    tmp_path: Path,
) -> None:
    # A store made before the index on names existed can hold a document that is not JSON
    # (the index refuses one once it is there). Building the index then fails on it: the
    # writer's one line names the document, instead of "sqlite: malformed JSON".
    url = f"sqlite:///{tmp_path / 's.db'}"
    first, bad, last = _three_running(url)
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("DROP INDEX workflows_name")
        (doc,) = conn.execute("SELECT doc FROM workflows WHERE id = ?", (bad,)).fetchone()
        conn.execute("UPDATE workflows SET doc = ? WHERE id = ?", (doc[:100], bad))
    recovered = statesaga("recover", "--store", url, cwd=tmp_path)
    assert recovered.returncode == 1
    line = one_line(recovered.stderr)
    assert bad in line and "is not JSON" in line and "nothing was written" in line
    assert SECRET not in line and first not in line and last not in line
    # The dashboard's listing by definition reads every row without the index: the others
    # are listed (was a 503 "cannot be reached (OperationalError: malformed JSON)").
    pytest.importorskip("starlette", reason="the dashboard needs the ui extra")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    from statesaga.web import ServeSettings, create_app

    with TestClient(create_app(ServeSettings(store=url, queue="inline://"))) as client:
        api = client.get("/api/workflows", params={"name": "conformance"})
        page = client.get("/", params={"name": "conformance"})
    assert api.status_code == 200, api.text
    assert [w["id"] for w in api.json()["workflows"]] == [last, first]
    assert page.status_code == 200 and first in page.text and SECRET not in page.text
