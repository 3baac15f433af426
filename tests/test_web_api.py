"""The dashboard's JSON API and its security, against a real SQLite store; the server's own
job thread runs the sagas (inline queue). Every endpoint, and every refusal: no token, a wrong
token, a read-only server, an unknown id, a definition outside --definitions, bad JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the dashboard needs the ui extra")
pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")
with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
from statesaga.models import WorkflowState  # noqa: E402
from statesaga.plugins import open_store  # noqa: E402
from statesaga.web import ServeSettings, create_app  # noqa: E402

TESTS = Path(__file__).parent
TOKEN = "t0ken-for-the-tests-8f2c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 30.0  # seconds: a safeguard against a hung test, not a measurement


def _register(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, TESTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_register("web_handlers")  # the test saga's handler module, named in web_order.yaml


def definitions_dir(tmp_path: Path) -> Path:
    root = tmp_path / "definitions"
    root.mkdir()
    shutil.copy(TESTS / "web_order.yaml", root)
    shutil.copy(str(files("statesaga.examples") / "expense.yaml"), root)
    (root / "broken.yaml").write_text("workflow: broken\nsteps: []\nbogus: 1\n")
    return root


@pytest.fixture
def sqlite_store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'web.db'}"


@pytest.fixture
def client(tmp_path: Path, sqlite_store_url: str) -> Iterator[TestClient]:
    settings = ServeSettings(
        store=sqlite_store_url,
        queue="inline://",
        handlers=("web_handlers",),  # the operator allows the test saga's handler module
        definitions=definitions_dir(tmp_path),
        token=TOKEN,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def wait_for(
    client: TestClient, wf_id: str, *statuses: str, waiting: bool = False
) -> dict[str, Any]:
    deadline = time.monotonic() + LIMIT
    while True:
        doc: dict[str, Any] = client.get(f"/api/workflows/{wf_id}").json()
        if doc["status"] in statuses and (
            not waiting or any(s["status"] == "WAITING" for s in doc["steps"])
        ):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"{wf_id} never reached {statuses}: {doc['status']}")
        time.sleep(0.05)


def start(client: TestClient, name: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    r = client.post(
        "/api/workflows", json={"definition": name, "input": data, **extra}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    return doc


def test_start_runs_the_saga_and_records_who_started_it(client: TestClient) -> None:
    doc = start(client, "web_order", {}, session_id="s-1", by="robot")
    final = wait_for(client, doc["id"], "COMPLETED")
    assert [s["status"] for s in final["steps"]] == ["COMPLETED"] * 4
    assert final["session_id"] == "s-1"
    assert final["history"][0]["trigger"] == "start"
    assert final["history"][0]["by"] == "api:robot"


def test_list_filters_pages_newest_first_and_counts(client: TestClient) -> None:
    ids = [start(client, "web_order", {}, session_id=f"s{i % 2}")["id"] for i in range(5)]
    failed = start(client, "web_order", {"fail_at": "reserve"})["id"]
    for wf_id in ids:
        wait_for(client, wf_id, "COMPLETED")
    wait_for(client, failed, "COMPENSATED")

    r = client.get("/api/workflows")
    body = r.json()
    assert r.status_code == 200
    assert [w["id"] for w in body["workflows"]] == [failed, *reversed(ids)]
    assert body["counts"] == {"COMPLETED": 5, "COMPENSATED": 1}
    assert body["next_cursor"] is None

    only = client.get("/api/workflows", params={"status": "compensated"}).json()
    assert [w["id"] for w in only["workflows"]] == [failed]
    assert only["counts"] == {"COMPLETED": 5, "COMPENSATED": 1}  # counts ignore the status

    s0 = client.get("/api/workflows", params={"session": "s0"}).json()
    assert [w["id"] for w in s0["workflows"]] == [ids[4], ids[2], ids[0]]
    assert s0["counts"] == {"COMPLETED": 3}
    assert client.get("/api/workflows", params={"name": "expense_claim"}).json() == {
        "workflows": [],
        "next_cursor": None,
        "counts": {},
    }

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"before": cursor} if cursor else {})}
        page = client.get("/api/workflows", params=params).json()
        seen += [w["id"] for w in page["workflows"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [failed, *reversed(ids)]

    bad = client.get("/api/workflows", params={"status": "SLEEPY"})
    assert bad.status_code == 400 and "SLEEPY" in bad.json()["error"]
    assert client.get("/api/workflows", params={"before": "%%%"}).status_code == 400


def test_get_one_and_unknown_ids(client: TestClient) -> None:
    doc = start(client, "web_order", {})
    got = client.get(f"/api/workflows/{doc['id']}")
    assert got.status_code == 200
    WorkflowState.model_validate(got.json())  # the stored document, as it is
    assert client.get("/api/workflows/WF-nope").status_code == 404
    for path in ("signal/approve", "cancel", "restart"):
        r = client.post(
            f"/api/workflows/WF-nope/{path}", json={"from_step": "a", "reason": "b"}, headers=AUTH
        )
        assert r.status_code == 404, (path, r.text)
        assert "WF-nope" in r.json()["error"]


def test_signal_approves_a_waiting_expense_and_keeps_who(client: TestClient) -> None:
    doc = start(client, "expense_claim", {"employee": "bob", "amount": 120})
    wait_for(client, doc["id"], "RUNNING", waiting=True)

    wrong = client.post(f"/api/workflows/{doc['id']}/signal/reject", json={}, headers=AUTH)
    assert wrong.status_code == 409 and "approve" in wrong.json()["error"]
    r = client.post(
        f"/api/workflows/{doc['id']}/signal/approve",
        json={"payload": {"by": "alice"}, "by": "alice"},
        headers=AUTH,
    )
    assert r.status_code == 202, r.text
    final = wait_for(client, doc["id"], "COMPLETED")
    assert final["results"]["pay"]["approved_by"] == "alice"
    sent = [h for h in final["history"] if h["trigger"] == "signal"]
    assert sent and sent[0]["by"] == "api:alice"
    again = client.post(f"/api/workflows/{doc['id']}/signal/approve", json={}, headers=AUTH)
    assert again.status_code == 409


def test_force_cancel_and_graceful_cancel(client: TestClient) -> None:
    waiting = start(client, "expense_claim", {"employee": "bob", "amount": 5})
    wait_for(client, waiting["id"], "RUNNING", waiting=True)
    r = client.post(f"/api/workflows/{waiting['id']}/cancel?force=true", headers=AUTH)
    assert r.status_code == 202, r.text
    final = wait_for(client, waiting["id"], "COMPENSATED")  # cancelled, and its steps undone
    assert final["steps"][0]["status"] == "COMPENSATED"  # the recorded claim was withdrawn
    forced = [h for h in final["history"] if h["trigger"] == "force_cancel"]
    assert forced and forced[0]["by"] == "api"
    ended = client.post(f"/api/workflows/{waiting['id']}/cancel", headers=AUTH)
    assert ended.status_code == 409 and "COMPENSATED" in ended.json()["error"]

    other = start(client, "expense_claim", {"employee": "eve", "amount": 5})
    wait_for(client, other["id"], "RUNNING", waiting=True)
    r = client.post(f"/api/workflows/{other['id']}/cancel", headers=AUTH)
    assert r.status_code == 202
    cancelled = wait_for(client, other["id"], "COMPENSATED")
    assert [h["by"] for h in cancelled["history"] if h["trigger"] == "cancel"] == ["api"]


def test_restart_a_halted_saga_from_a_step(client: TestClient, tmp_path: Path) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    doc = start(client, "web_order", {"fail_at": "notify", "fail_file": str(flag)})
    halted = wait_for(client, doc["id"], "FAILED")  # after the pivot: halted, not undone
    assert halted["steps"][3]["status"] == "FAILED"

    early = client.post(
        f"/api/workflows/{doc['id']}/restart",
        json={"from_step": "nope", "reason": "x"},
        headers=AUTH,
    )
    assert early.status_code == 409 and "nope" in early.json()["error"]
    assert (
        client.post(
            f"/api/workflows/{doc['id']}/restart", json={"from_step": "notify"}, headers=AUTH
        ).status_code
        == 400
    )
    flag.unlink()  # the fix
    r = client.post(
        f"/api/workflows/{doc['id']}/restart",
        json={"from_step": "notify", "reason": "warehouse fixed", "by": "ops"},
        headers=AUTH,
    )
    assert r.status_code == 202, r.text
    final = wait_for(client, doc["id"], "COMPLETED")
    entry = next(h for h in final["history"] if h["trigger"] == "restart")
    assert entry["by"] == "api:ops" and "warehouse fixed" in entry["detail"]
    # The page of the saga that completed in the end still tells why it was restarted.
    story = client.get(f"/workflows/{doc['id']}").text.split('id="story"')[1].split("</section>")[0]
    assert (
        "api:ops restarted it from notify: warehouse fixed — after notify failed "
        "(notify: the warehouse refused the order)" in story
    ), story
    running = start(client, "expense_claim", {"employee": "x", "amount": 1})
    not_failed = client.post(
        f"/api/workflows/{running['id']}/restart",
        json={"from_step": "submit", "reason": "x"},
        headers=AUTH,
    )
    assert not_failed.status_code == 409


def test_refusals_change_nothing(client: TestClient, sqlite_store_url: str) -> None:
    doc = start(client, "expense_claim", {"employee": "bob", "amount": 1})
    wf_id = doc["id"]
    wait_for(client, wf_id, "RUNNING", waiting=True)
    store = open_store(sqlite_store_url)
    before = store.get(wf_id).revision
    changes = [
        ("/api/workflows", {"definition": "web_order"}),
        (f"/api/workflows/{wf_id}/signal/approve", {"payload": {"by": "mallory"}}),
        (f"/api/workflows/{wf_id}/cancel?force=true", {}),
        (f"/api/workflows/{wf_id}/restart", {"from_step": "submit", "reason": "x"}),
    ]
    for path, body in changes:
        none = client.post(path, json=body)
        assert none.status_code == 401, (path, none.text)
        assert none.headers["www-authenticate"] == "Bearer"
        wrong = client.post(path, json=body, headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 403, (path, wrong.text)
        basic = client.post(path, json=body, headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
        bad_json = client.post(path, content=b"{not json", headers=AUTH)
        assert bad_json.status_code == 400 and "not JSON" in bad_json.json()["error"], path
    array = client.post("/api/workflows", json=["web_order"], headers=AUTH)
    assert array.status_code == 400
    for name in ("trip_booking", "../expense", "/etc/passwd", "broken"):
        outside = client.post("/api/workflows", json={"definition": name}, headers=AUTH)
        assert outside.status_code == 404, (name, outside.text)
    not_object = client.post(
        "/api/workflows", json={"definition": "web_order", "input": [1]}, headers=AUTH
    )
    assert not_object.status_code == 400
    assert store.get(wf_id).revision == before
    assert [w.id for w in store.list()] == [wf_id]


def test_a_read_only_server_refuses_every_change(tmp_path: Path, sqlite_store_url: str) -> None:
    settings = ServeSettings(sqlite_store_url, "inline://", definitions=definitions_dir(tmp_path))
    with TestClient(create_app(settings)) as c:
        r = c.post("/api/workflows", json={"definition": "web_order"}, headers=AUTH)
        assert r.status_code == 403 and "read-only" in r.json()["error"]
        assert c.get("/api/workflows").status_code == 200
        login = c.post("/login", data={"user": "alice", "token": TOKEN})
        assert login.status_code == 403
        assert "read-only" in c.get("/").text
    assert open_store(sqlite_store_url).list() == []


def test_definitions_and_openapi(client: TestClient) -> None:
    defs = {d["name"]: d for d in client.get("/api/definitions").json()}
    assert defs["web_order"]["steps"] == ["reserve", "pack", "charge", "notify"]
    assert defs["expense_claim"]["version"] == "1"
    assert defs["broken"]["error"].startswith("broken.yaml:2: [steps]")
    spec = client.get("/api/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {
        "/api/workflows",
        "/api/workflows/{id}",
        "/api/workflows/{id}/signal/{name}",
        "/api/workflows/{id}/cancel",
        "/api/workflows/{id}/restart",
        "/api/workflows/{id}/health",
        "/api/definitions",
        "/api/definitions/schema",
        "/api/workers",
        "/api/queues",
        "/api/jobs/{job}/requeue",
        "/metrics",
        # agents' plans (statesaga.web.plans)
        "/api/tools",
        "/api/plans",
        "/api/plans/{id}",
        "/api/plans/{id}/revise",
        "/api/plans/{id}/approve/{item}",
        "/api/plans/{id}/reject/{item}",
    }
    schema = client.get("/api/definitions/schema").json()
    assert schema["title"] == "statesaga workflow definition" and "steps" in schema["properties"]
    assert spec["paths"]["/api/workflows"]["post"]["security"] == [{"bearer": []}]
    assert client.get("/api/nothing").status_code == 404


def test_the_openapi_document_validates_and_the_docs_page_shows_it(client: TestClient) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    spec = client.get("/api/openapi.json").json()
    validator.validate(spec)  # raises on any malformed operation (a docstring's YAML)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op["summary"] and op["responses"], (method, path)
            for code, answer in op["responses"].items():
                assert set(answer) == {"description"}, (method, path, code, answer)
    page = client.get("/api/docs")
    assert page.status_code == 200
    text = page.text
    # Nothing from elsewhere: every script and style is the package's own.
    assert 'src="http' not in text and 'href="http' not in text and "//cdn" not in text
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert f'id="{method}-{path.strip("/").replace("/", "-")}"' in text, path
            assert op["summary"].replace("'", "&#39;") in text
    assert "wrong token, or a read-only server" in text


def test_pages_need_a_session_and_the_csrf_value(client: TestClient) -> None:
    doc = start(client, "expense_claim", {"employee": "bob", "amount": 1})
    wf_id = doc["id"]
    wait_for(client, wf_id, "RUNNING", waiting=True)
    form = {"name": "approve", "payload": "{}", "csrf": "x"}
    anonymous = client.post(f"/workflows/{wf_id}/signal", data=form, follow_redirects=False)
    # Back, after the login, to the page the form was on (the form's URL takes only POSTs).
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == f"/login?next=%2Fworkflows%2F{wf_id}"
    starting = client.post("/definitions/web_order/start", data={}, follow_redirects=False)
    assert starting.headers["location"] == "/login?next=%2Fdefinitions"

    bad = client.post("/login", data={"user": "alice", "token": "nope"})
    assert bad.status_code == 401 and "nope" not in bad.text
    ok = client.post(
        "/login",
        data={"user": "alice", "token": TOKEN, "next": "//evil.example"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie

    forged = client.post(f"/workflows/{wf_id}/signal", data=form, follow_redirects=False)
    assert forged.status_code == 403 and "CSRF" in forged.text
    odd = client.post(f"/workflows/{wf_id}/signal", data={**form, "csrf": "é"})
    assert odd.status_code == 403
    for target in ("//evil.example/x", "/\\evil.example", "https://evil.example", "/ok?x=1"):
        moved = client.post(
            "/login",
            data={"user": "alice", "token": TOKEN, "next": target},
            follow_redirects=False,
        )
        assert moved.headers["location"] == ("/ok?x=1" if target == "/ok?x=1" else "/"), target
    page = client.get(f"/workflows/{wf_id}").text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    sent = client.post(
        f"/workflows/{wf_id}/signal",
        data={"name": "approve", "payload": '{"by": "alice"}', "csrf": csrf},
        follow_redirects=False,
    )
    assert sent.status_code == 303, sent.text
    final = wait_for(client, wf_id, "COMPLETED")
    signals = [h["by"] for h in final["history"] if h["trigger"] == "signal" and not h["step"]]
    assert signals == ["web:alice"]


def test_the_token_never_leaves_the_server(client: TestClient) -> None:
    doc = start(client, "expense_claim", {"employee": "bob", "amount": 1})
    client.post("/login", data={"user": "alice", "token": TOKEN})
    bodies = [
        client.get(p).text
        for p in (
            "/",
            f"/workflows/{doc['id']}",
            "/definitions",
            "/login",
            "/api/openapi.json",
            f"/workflows/{doc['id']}/cancel?force=1",
            "/workflows/WF-x",
        )
    ]
    bodies.append(client.post("/api/workflows", json={"definition": TOKEN}, headers=AUTH).text)
    bodies.append(client.post(f"/api/workflows/{doc['id']}/signal/{TOKEN}", headers=AUTH).text)
    spoof = client.get(f"/workflows/{doc['id']}", params={"done": "Call 555-0100 now"}).text
    assert "555-0100" not in spoof  # the flash after an action says only what the server says
    for body in bodies:
        assert TOKEN not in body
    assert "***" in client.post("/api/workflows", json={"definition": TOKEN}, headers=AUTH).text
    assert repr(ServeSettings("sqlite:///x.db", "inline://", token=TOKEN)).count(TOKEN) == 0


@pytest.mark.parametrize(
    "store, queue",
    [
        ("redis://:s3cret-pw@127.0.0.1:1/0", "rq://:s3cret-pw@127.0.0.1:1/0"),
        ("arango://root:s3cret-pw@127.0.0.1:1/x", "inline://"),
        # redis-py takes the password as a query option too
        (
            "redis://127.0.0.1:1/0?password=s3cret-pw",
            "rq://127.0.0.1:1/0?queue=q&password=s3cret-pw",
        ),
    ],
)
def test_store_passwords_never_reach_a_page(store: str, queue: str) -> None:
    settings = ServeSettings(store, queue, token=TOKEN)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        for path in ("/definitions", "/login", "/", "/api/workflows", "/workflows/WF-1"):
            body = c.get(path).text
            assert "s3cret-pw" not in body, path
        assert "127.0.0.1:1" in c.get("/definitions").text  # where it is stays readable


def test_diagrams_inline_no_markup_from_names_or_errors() -> None:
    from statesaga.models import SagaStep, StepError, StepStatus
    from statesaga.web.views import Pictures

    step = SagaStep(
        id="s1",
        name='a"><script>alert(2)</script>',
        action_type="h",
        status=StepStatus.FAILED,
        error=StepError(type="E<img src=x onerror=alert(3)>", message="<script>alert(4)</script>"),
    )
    wf = WorkflowState(name="x<script>alert(1)</script>", steps=[step])
    pictures = Pictures()
    for view in ("steps", "workflow", "step"):
        svg = pictures.instance(wf, None, view, step=step.name if view == "step" else None).svg
        if svg is None:
            pytest.skip("graphviz `dot` is not installed")
        assert "<script" not in svg and "<img" not in svg and "&lt;script" in svg


def test_the_indexed_and_the_scanned_browse_agree(tmp_path: Path) -> None:
    """SQLite answers the list with its indexes; any other store through Store.list. Both
    give the same pages, ties on created_at included (the id breaks them)."""
    from datetime import UTC, datetime, timedelta

    from statesaga.models import WorkflowStatus
    from statesaga.ports import Browsable
    from statesaga.web.query import Filters, browse

    sqlite = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    memory = open_store("memory://")
    assert isinstance(sqlite, Browsable) and not isinstance(memory, Browsable)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    statuses = list(WorkflowStatus)
    for i in range(57):
        wf = WorkflowState(
            id=f"WF-20260301-{i:08x}",
            name=("trip", "expense")[i % 2],
            session_id=f"s{i % 3}",
            status=statuses[i % len(statuses)],
            created_at=at + timedelta(seconds=i // 4),  # four at a time share an instant
        )
        sqlite.create(wf.model_copy())
        memory.create(wf.model_copy())
    for filters in (
        Filters(),
        Filters(status=WorkflowStatus.COMPLETED),
        Filters(name="expense"),
        Filters(session_id="s1", name="trip"),
    ):
        pages: list[list[list[str]]] = []
        for store in (sqlite, memory):
            ids, cursor = [], None
            while True:
                page = browse(store, filters, cursor, limit=5)
                ids.append([w.id for w in page.workflows])
                cursor = page.next_cursor
                if cursor is None:
                    break
            pages.append(ids)
            assert browse(store, filters).counts == browse(sqlite, filters).counts
        assert pages[0] == pages[1], filters
        flat = [i for page in pages[0] for i in page]
        assert flat == sorted(flat, reverse=True) and len(flat) == len(set(flat))


def test_a_loopback_server_answers_only_loopback_host_names(
    tmp_path: Path, sqlite_store_url: str
) -> None:
    settings = ServeSettings(
        sqlite_store_url, "inline://", allowed_hosts=("127.0.0.1", "localhost")
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8080") as c:
        assert c.get("/api/workflows").status_code == 200
        rebound = c.get("/api/workflows", headers={"Host": "evil.example:8080"})
        assert rebound.status_code == 400


def test_an_unreachable_store_shows_no_password(caplog: pytest.LogCaptureFixture) -> None:
    secret = "hunter2-in-the-url"
    port = 1  # nothing listens there
    settings = ServeSettings(
        f"redis://:{secret}@127.0.0.1:{port}/0", f"rq://:{secret}@127.0.0.1:{port}/0", token=TOKEN
    )
    with (
        caplog.at_level("INFO"),
        TestClient(create_app(settings), raise_server_exceptions=False) as c,
    ):
        for path in ("/", "/api/workflows", "/workflows/WF-1", "/api/workflows/WF-1"):
            r = c.get(path)
            # Not "the server failed": the store is down, and the page says so.
            assert r.status_code == 503, path
            assert "cannot be reached" in r.text and "Connection" in r.text, path
            assert secret not in r.text
        assert "redis://:***@127.0.0.1" in c.get("/definitions").text
    assert caplog.records and secret not in caplog.text


@pytest.mark.slow
def test_serve_command_refusals(tmp_path: Path) -> None:
    import subprocess

    script = Path(sys.executable).with_name("statesaga")
    short = subprocess.run(
        [str(script), "serve", "--token", "short"], capture_output=True, text=True, check=False
    )
    assert short.returncode == 1 and "at least 12 characters" in short.stderr
    typo = tmp_path / "typo.db"
    absent = subprocess.run(
        [str(script), "serve", "--store", f"sqlite:///{typo}", "--queue", "inline://"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert absent.returncode == 1, absent.stderr
    errors = [line for line in absent.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "nothing has been stored" in errors[0]
    assert "Traceback" not in absent.stderr and not typo.exists()  # refused, not made
    assert "short" not in short.stderr.replace("--token must", "")
    missing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['starlette'] = None\n"
            "from statesaga.cli import main; main(['serve'])",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1
    assert "pip install 'statesaga[ui]'" in missing.stderr and "starlette" in missing.stderr


@pytest.mark.slow
def test_the_wheel_ships_every_template_and_asset(tmp_path: Path, source_copy: Path) -> None:
    """No CDN: the pages work offline only if every file they load is in the package."""
    import subprocess
    import zipfile

    root = source_copy  # never build in the checkout: see the fixture
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("statesaga-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    web = root / "framework" / "web"
    shipped = {
        f"statesaga/web/{p.relative_to(web).as_posix()}"
        for sub in ("templates", "static")
        for p in (web / sub).iterdir()
    }
    assert shipped and shipped <= names, sorted(shipped - names)
    for page in (web / "templates").glob("*.html"):
        text = page.read_text()
        assert "http://" not in text and "https://" not in text, page.name  # nothing remote


@pytest.mark.slow
def test_importing_the_cli_loads_no_web_framework() -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", "import sys, statesaga.cli; print('starlette' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_a_long_history_is_cut_on_the_page_not_in_the_json(
    client: TestClient, sqlite_store_url: str
) -> None:
    from datetime import UTC, datetime

    from statesaga.models import HistoryEntry

    store = open_store(sqlite_store_url)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    wf = WorkflowState(
        name="long",
        history=[
            HistoryEntry(at=at, chart="workflow", trigger=f"t{i}", source="A", dest="B")
            for i in range(1200)
        ],
    )
    store.create(wf)
    page = client.get(f"/workflows/{wf.id}").text
    assert "The 700 oldest entries are left out" in page
    assert "<code>t1199</code>" in page and "<code>t699</code>" not in page
    assert len(client.get(f"/api/workflows/{wf.id}").json()["history"]) == 1200


def test_a_saga_on_a_nested_step_lifecycle_shows_its_sub_states(
    tmp_path: Path, sqlite_store_url: str
) -> None:
    root = tmp_path / "agents"
    root.mkdir()
    for name in ("agent_task.yaml", "agent_step.yaml"):
        shutil.copy(str(files("statesaga.examples") / name), root)
    settings = ServeSettings(sqlite_store_url, "inline://", definitions=root, token=TOKEN)
    with TestClient(create_app(settings)) as c:
        doc = start(c, "agent_task", {"topic": "sagas", "flaky_tool": True})
        final = wait_for(c, doc["id"], "COMPLETED")
        research = final["steps"][0]
        assert research["attempts"] == 2  # the flaky tool failed the first attempt
        trail = [h["dest"] for h in final["history"] if h["step"] == "research"]
        assert "EXECUTING.CALLING_MODEL" in trail
        page = c.get(f"/workflows/{doc['id']}", params={"step": "research"}).text
        assert "Step research: its lifecycle" in page
        assert "CALLING_MODEL" in page and "WAITING_FOR_TOOL" in page  # the nested states


@pytest.mark.parametrize(
    "body, says",
    [
        (b'{"definition": "web_order", "input": {"n": NaN}}', "NaN is not JSON"),
        (b'{"definition": "web_order", "input": {"n": -Infinity}}', "-Infinity is not JSON"),
        (
            b'{"definition": "web_order", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "nested too deeply",
        ),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"definition": "web_order", "by": {"name": "x"}}', "`by` must be a string"),
        # a name with a line break would forge a line of the server's log
        (b'{"definition": "web_order", "by": "x\\n2026-11-29 INFO fake"}', "`by` must be"),
    ],
)
def test_bad_json_is_a_clear_400_and_starts_nothing(
    client: TestClient, body: bytes, says: str
) -> None:
    r = client.post("/api/workflows", content=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert says in r.json()["error"]
    assert client.get("/api/workflows").json()["workflows"] == []


def test_a_form_payload_is_held_to_the_same_json(client: TestClient) -> None:
    doc = start(client, "expense_claim", {"employee": "bob", "amount": 1})
    wait_for(client, doc["id"], "RUNNING", waiting=True)
    client.post("/login", data={"user": "alice", "token": TOKEN})
    csrf = client.get(f"/workflows/{doc['id']}").text.split('name="csrf" value="')[1].split('"')[0]
    r = client.post(
        f"/workflows/{doc['id']}/signal",
        data={"csrf": csrf, "name": "approve", "payload": '{"by": NaN}'},
    )
    assert r.status_code == 400 and "NaN is not JSON" in r.text
    assert client.get(f"/api/workflows/{doc['id']}").json()["status"] == "RUNNING"


def test_a_huge_body_is_refused_before_it_is_read(client: TestClient) -> None:
    big = {"definition": "web_order", "input": {"blob": "x" * (2 << 20)}}
    r = client.post("/api/workflows", json=big, headers=AUTH)
    assert r.status_code == 413 and "1 MiB" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"definition": "web_order", "input": {"blob": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}}'

    r = client.post("/api/workflows", content=chunks(), headers=AUTH)
    assert r.status_code == 413, r.text
    # A form is refused too, before the session is even looked at.
    r = client.post("/workflows/WF-1/cancel", data={"confirm": "yes", "pad": "x" * (2 << 20)})
    assert r.status_code == 413 and "1 MiB" in r.text
    assert client.get("/api/workflows").json()["workflows"] == []


def test_refusals_name_what_was_wrong(client: TestClient) -> None:
    r = client.get("/api/workflows/WF-nope")
    assert r.status_code == 404 and r.json()["error"] == "no workflow 'WF-nope' in the store"
    r = client.get("/api/workflows", params={"limit": "abc"})
    assert r.status_code == 400 and r.json()["error"].startswith("limit must be a whole number")


@dataclass
class Served:
    base: str
    stderr: str = ""

    def call(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, headers=AUTH)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read() if path == "/metrics" else json.loads(r.read())

    def finish(self, wf_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + LIMIT
        while (doc := self.call(f"/api/workflows/{wf_id}"))["status"] not in ENDED:
            assert time.monotonic() < deadline, doc["status"]
            time.sleep(0.05)
        return dict(doc)


ENDED = ("COMPLETED", "COMPENSATED", "CANCELLED", "FAILED")


@contextmanager
def serving(port: int, tmp_path: Path, defs: Path, *options: str) -> Iterator[Served]:
    """A real `statesaga serve` process (inline queue, SQLite), stopped afterwards; its
    stderr is in `.stderr` once the block has ended."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STATESAGA_"))}
    env.update(PYTHONPATH=str(TESTS), STATESAGA_TOKEN=TOKEN)
    cmd = [str(Path(sys.executable).with_name("statesaga")), *options, "serve",
           "--port", str(port), "--store", f"sqlite:///{tmp_path / 'm.db'}",
           "--queue", "inline://", "--handlers", "web_handlers", "--create",
           "--definitions", str(defs)]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    served = Served(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + LIMIT
        while True:
            try:
                served.call("/api/workflows")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.1)
        yield served
    finally:
        server.terminate()
        served.stderr = server.communicate(timeout=20)[1]


@pytest.mark.slow
def test_metrics_serves_the_counts_the_history_holds(tmp_path: Path, free_port: int) -> None:
    """The CLI installs the Prometheus reader of the real SDK for `serve`."""
    pytest.importorskip("opentelemetry.exporter.prometheus", reason="the otel extra")
    from prometheus_client.parser import text_string_to_metric_families

    defs = definitions_dir(tmp_path)
    order = (defs / "web_order.yaml").read_text()
    assert "non_retryable: [OrderError]" in order
    (defs / "web_order.yaml").write_text(order.replace("non_retryable: [OrderError]", ""))
    with serving(free_port, tmp_path, defs) as server:
        ids = [
            server.call("/api/workflows", {"definition": "web_order", "input": data})["id"]
            for data in ({}, {"fail_at": "pack"}, {"fail_at": "reserve"})
        ]
        docs = [server.finish(wf_id) for wf_id in ids]
        text = server.call("/metrics").decode()
    assert [d["status"] for d in docs] == ["COMPLETED", "COMPENSATED", "COMPENSATED"]

    got: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("statesaga_workflow_name") != "web_order":
                continue
            if sample.name.endswith("_total"):
                key = labels.get("statesaga_step") or labels.get("statesaga_state", "")
                got[(sample.name, key)] += int(sample.value)
    want: Counter[tuple[str, str]] = Counter()
    for doc in docs:
        want[("statesaga_workflows_ended_total", doc["status"])] += 1
        for h in doc["history"]:
            step, dest = h["step"], h["dest"].split(".")[0]
            if step is None:
                continue
            if h["trigger"] == "dispatch":
                want[("statesaga_steps_started_total", step)] += 1
            elif h["source"].startswith("EXECUTING") and dest in (
                "COMPLETED",
                "RETRYING",
                "FAILED",
            ):
                name = {"COMPLETED": "completed", "RETRYING": "retried", "FAILED": "failed"}[dest]
                want[(f"statesaga_steps_{name}_total", step)] += 1
            elif h["trigger"] == "compensated":
                want[("statesaga_compensations_total", step)] += 1
    stored = {
        s.labels["statesaga_state"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "statesaga_workflows_stored"
    }
    assert stored == {"COMPLETED": 1, "COMPENSATED": 2}  # read from the store
    assert want[("statesaga_steps_retried_total", "pack")] == 1  # the saga did retry
    assert want[("statesaga_compensations_total", "reserve")] == 1  # and undo
    assert got == want


def test_metrics_without_the_otel_extra_says_what_to_install(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    r = client.get("/metrics")
    assert r.status_code == 501 and "pip install 'statesaga[otel]'" in r.text


@pytest.mark.slow
def test_the_server_logs_in_the_format_asked_for(tmp_path: Path, free_port: int) -> None:
    """uvicorn's own lines (start-up, access) too: a log collector reads one format."""
    defs = definitions_dir(tmp_path)
    with serving(free_port, tmp_path, defs, "--log-format", "json") as server:
        wf_id = server.call("/api/workflows", {"definition": "web_order", "input": {}})["id"]
        server.finish(wf_id)
    lines = server.stderr.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(records) == len(lines), server.stderr[-2000:]
    loggers = {r["logger"] for r in records}
    assert {"uvicorn.error", "uvicorn.access", "statesaga.web"} <= loggers, loggers
    assert any(f"started {wf_id}" in r["message"] for r in records)
    assert TOKEN not in server.stderr


class WorkerDied(BaseException):
    """Stands for a worker process dying mid-step (its outcome never saved)."""


@pytest.mark.slow
def test_the_page_tells_which_attempts_were_lost_with_their_worker(tmp_path: Path) -> None:
    from statesaga import Engine, load_definition
    from statesaga.adapters.queues.inline import InlineQueue
    from statesaga.registry import Registry
    from statesaga.runtime.recovery import Recovery

    reg = Registry()
    reg.register_handler("pay", lambda ctx: {"paid": ctx.attempt})
    definition = load_definition(
        {"workflow": "lost_pay", "steps": [{"name": "pay", "action": "pay"}]}
    )

    def die(boundary: str, job: Any) -> None:
        if boundary == "after_action" and job.attempt < 3:
            raise WorkerDied()

    store = open_store(f"sqlite:///{tmp_path / 'lost.db'}")
    doomed = Engine(store, InlineQueue(), reg, heartbeat_interval=0, probe=die, worker="w1")
    wf = doomed.start(definition, {})
    with pytest.raises(WorkerDied):
        doomed.wait(wf.id, timeout=10)
    # The next worker dies on attempt 2 as well; attempt 3 goes through.
    rescuer = Engine(store, InlineQueue(), reg, heartbeat_interval=0, probe=die, worker="w2")
    assert Recovery(rescuer, timeout=0).run_once().resumed == [wf.id]
    with pytest.raises(WorkerDied):
        rescuer.wait(wf.id, timeout=10)
    assert Recovery(rescuer, timeout=0).run_once().resumed == [wf.id]
    assert rescuer.wait(wf.id, timeout=10).status.value == "COMPLETED"

    settings = ServeSettings(f"sqlite:///{tmp_path / 'lost.db'}", "inline://")
    with TestClient(create_app(settings)) as c:
        page = c.get(f"/workflows/{wf.id}").text
    story = page.split('id="story"')[1].split("</section>")[0]
    assert "Step pay: attempts 1, 2 timed out (worker lost" in story, story


def test_the_cancel_page_of_an_ended_saga_offers_no_cancel(client: TestClient) -> None:
    done = wait_for(client, start(client, "web_order", {})["id"], "COMPLETED")
    client.post("/login", data={"user": "alice", "token": TOKEN})
    for query in ("", "?force=1"):
        page = client.get(f"/workflows/{done['id']}/cancel{query}").text
        assert "there is nothing to cancel" in page and 'id="confirm"' not in page
    running = start(client, "expense_claim", {"employee": "bob", "amount": 1})
    wait_for(client, running["id"], "RUNNING", waiting=True)
    assert 'id="confirm"' in client.get(f"/workflows/{running['id']}/cancel?force=1").text


@pytest.mark.slow
def test_the_stored_gauge_of_an_unreachable_store_is_one_warning() -> None:
    """In a fresh interpreter: the SDK's global meter provider is set once per process."""
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra")
    code = (
        "import logging\n"
        "from opentelemetry import metrics\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from opentelemetry.sdk.metrics.export import InMemoryMetricReader\n"
        "from statesaga.web import ServeSettings, create_app\n"
        "from statesaga.web.app import watch_store\n"
        "logging.basicConfig()\n"
        "reader = InMemoryMetricReader()\n"
        "metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))\n"
        "url = 'redis://:pw-in-url@127.0.0.1:1/0'\n"
        "watch_store(create_app(ServeSettings(url, 'inline://')))\n"
        "reader.get_metrics_data()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "WARNING:statesaga.web:the stored workflows could not be counted: ConnectionError: "
        "Error 111 connecting to 127.0.0.1:1. Connection refused."
    ]


def test_only_a_store_or_queue_out_of_reach_is_a_503() -> None:
    import sqlite3

    from statesaga.web.http import status_of as _status_of

    assert _status_of(ConnectionRefusedError(111, "refused")) == 503
    assert _status_of(TimeoutError()) == 503
    assert _status_of(sqlite3.OperationalError("database is locked")) == 503
    assert _status_of(FileNotFoundError("definitions/x.yaml")) == 500  # the server's own


# -- the operator's view: a saga's timeline, times and reasons; the list; workers on inline://


def _login_csrf(client: TestClient) -> None:
    client.post("/login", data={"user": "olga", "token": TOKEN}, follow_redirects=False)


def _rows(html: str, table: str) -> list[dict[str, str]]:
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    return [
        dict(re.findall(r'data-(\w+)="([^"]*)"', tr)) for tr in re.findall(r"<tr data-[^>]*>", body)
    ]


def test_the_timeline_of_a_compensated_saga_shows_every_attempt_and_undo_in_order(
    client: TestClient,
) -> None:
    doc = start(client, "web_order", {"fail_at": "charge", "card_token": "tok_live_123"})
    final = wait_for(client, doc["id"], "COMPENSATED")
    page = client.get(f"/workflows/{final['id']}").text
    phases = [(r["step"], r["phase"], r["ended"]) for r in _rows(page, "timeline")]
    work = [p for p in phases if p[1] not in ("queued",)]
    # charge fails for good (OrderError is never retried): pack, then reserve, are undone.
    assert work == [
        ("reserve", "attempt 1", "succeed"),
        ("pack", "attempt 1", "succeed"),
        ("charge", "attempt 1", "fail"),
        ("pack", "undo", "compensated"),
        ("reserve", "undo", "compensated"),
    ]
    history = [h for h in final["history"] if h["step"]]
    claims = [h["step"] for h in history if h["trigger"] == "dispatch"]
    assert [p[0] for p in work[:3]] == claims  # the same order the history holds
    assert 'id="timeline-chart"' in page and page.count('class="ph ph-') >= len(work)
    # times, masked input, reasons in words beside the diagrams
    assert 'id="ended"' in page and "not yet" not in page.split('id="ended"', 1)[1][:40]
    assert "tok_live_123" not in page and '"card_token": "***"' in page
    reasons = page.split('id="reasons"', 1)[1].split("</aside>", 1)[0]
    assert "charge" in reasons and "OrderError: charge: the warehouse refused the order" in reasons
    assert "⏸" not in page and "⏱" not in page


def test_the_list_refreshes_itself_and_a_bulk_cancel_says_what_it_will_do(
    client: TestClient,
) -> None:
    waiting = [start(client, "expense_claim", {"employee": f"e{i}", "amount": 5}) for i in range(2)]
    done = start(client, "web_order", {})
    for d in waiting:
        wait_for(client, d["id"], "RUNNING", waiting=True)
    wait_for(client, done["id"], "COMPLETED")
    fragment = client.get("/", params={"fragment": "rows"}).json()
    assert [r["id"] for r in _rows("<x id=\"w\">" + fragment["rows"] + "</table>", "w")] == [
        done["id"], waiting[1]["id"], waiting[0]["id"]
    ]  # fmt: skip
    assert "RUNNING" in fragment["counts"]

    _login_csrf(client)
    ids = [waiting[0]["id"], done["id"]]
    confirm = client.get("/bulk", params=[("action", "cancel"), *[("id", i) for i in ids]])
    assert confirm.status_code == 200
    csrf = confirm.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    plan = {r["id"]: r for r in _rows(confirm.text, "plan")}
    assert "Cancel 1 of 2 selected workflows?" in confirm.text
    assert "left alone:" in confirm.text and "has ended (COMPLETED)" in confirm.text
    assert set(plan) == set(ids)
    # nothing happened yet: a confirmation page changes nothing
    assert client.get(f"/api/workflows/{waiting[0]['id']}").json()["status"] == "RUNNING"
    unconfirmed = client.post("/bulk", data={"csrf": csrf, "action": "cancel", "id": ids})
    assert unconfirmed.status_code == 400
    result = client.post(
        "/bulk", data={"csrf": csrf, "action": "cancel", "id": ids, "confirm": "yes"}
    )
    assert result.status_code == 200 and "cancel requested" in result.text
    wait_for(client, waiting[0]["id"], "CANCELLED", "COMPENSATED")
    assert client.get(f"/api/workflows/{waiting[1]['id']}").json()["status"] == "RUNNING"
    cancelled = client.get(f"/api/workflows/{waiting[0]['id']}").json()
    assert any(h["by"] == "web:olga" and h["trigger"] == "cancel" for h in cancelled["history"])


def test_the_workers_page_of_an_inline_server_says_what_applies(client: TestClient) -> None:
    page = client.get("/workers")
    assert page.status_code == 200 and "runs the jobs itself (inline://)" in page.text
    assert client.get("/api/workers").json() == {
        "kind": "inline",
        "note": client.get("/api/queues").json()["note"],
        "workers": [],
    }
    refused = client.post("/api/jobs/ss-1/requeue", headers=AUTH)
    assert refused.status_code == 409 and "no failed jobs" in refused.json()["error"]
