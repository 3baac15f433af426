"""Unit tests of the arango:// store that need no ArangoDB server.

They check what the adapter *sends* (AQL text, bind variables, documents, index definitions)
through `Recorder`, an object put where python-arango's StandardDatabase goes: it writes down
each call and hands back the answer the test scripted. It is not a server and decides nothing;
behaviour against a real server is the conformance suite's job (tests/test_store_conformance.py,
`arango` row, needs STATESAGA_ARANGO_URL). Error translation is checked with python-arango's own
exception classes, built the way python-arango builds them from a response; connection failures
with a real python-arango client against a real closed port.
"""

from __future__ import annotations

import inspect
import json
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from arango.aql import AQL
from arango.client import ArangoClient
from arango.collection import StandardCollection
from arango.cursor import Cursor
from arango.database import StandardDatabase
from arango.exceptions import (
    AQLQueryExecuteError,
    ArangoClientError,
    CollectionCreateError,
    DatabaseListError,
    DocumentGetError,
    DocumentInsertError,
    ServerConnectionError,
)
from arango.request import Request
from arango.response import Response
from requests.exceptions import ReadTimeout
from statesaga.adapters.stores.arango import (
    ENV_PASSWORD,
    ENV_USER,
    INDEXES,
    QUERIES,
    ArangoSettings,
    ArangoStore,
)
from statesaga.adapters.stores.arango.client import ArangoUnavailable
from statesaga.errors import AdapterError, ConflictError, DefinitionError, NotFoundError
from statesaga.models import WorkflowState, WorkflowStatus
from statesaga.runtime.outage import is_outage
from statesaga.testing import make_workflow, rich_workflow

SECRET = "s3cr:t/p@ss%word"
SECRET_URL = "s3cr%3At%2Fp%40ss%25word"  # the same, percent-encoded for the URL
COLL = "statesaga_workflows"
T0 = datetime(2026, 2, 8, 9, 30, 0, 123456, tzinfo=UTC)
T0_US = 1770543000123456
WID = "WF-20260208-5b193f0d"


# -- what python-arango would raise -----------------------------------------------------------


def server_error(
    cls: type[Exception],
    http: int,
    errno: int | None,
    message: str = "",
    method: str = "post",
    msg: str | None = None,
) -> Exception:
    """A python-arango server exception, built as its response handlers build them: from a
    Response filled in as Connection.prep_response fills it from ArangoDB's error body
    (`msg` overrides the message, as python-arango's ping does for 401/403)."""
    body = {"error": True, "code": http, "errorNum": errno, "errorMessage": message}
    resp = Response(
        method=method,
        url="http://127.0.0.1:8529/_db/statesaga/_api/cursor",
        headers={},
        status_code=http,
        status_text="error",
        raw_body=json.dumps(body),
    )
    resp.body = body
    resp.error_code = errno
    resp.error_message = message or None
    resp.is_success = False
    return cls(resp, Request(method=method, endpoint="/_api/cursor"), *([msg] if msg else []))


# -- the recording stand-in for python-arango's database object --------------------------------


def bound(real: Any, *args: Any, **kw: Any) -> dict[str, Any]:
    """The arguments as python-arango's own method `real` receives them, its defaults filled
    in: a misspelled or missing argument raises TypeError here as it would there (what
    mock.create_autospec checks), and a default the store leaves alone is seen (such as
    create_collection's `sync=False`, sent to the server as an explicit "waitForSync": false)."""
    call = inspect.signature(real).bind(None, *args, **kw)
    call.apply_defaults()
    arguments = dict(call.arguments)
    arguments.pop("self")
    return arguments


class ScriptedConnection:
    """Where a real python-arango Cursor sends its later requests: each batch fetch (POST
    /_api/cursor/<id>[/<batch>]) is answered with the next scripted batch, as arangod's body,
    and the close (DELETE) with 202. Records each (method, endpoint)."""

    def __init__(self, batches: list[list[Any]], retryable: bool) -> None:
        self.batches = deque(batches)
        self.retryable = retryable
        self.sent: list[tuple[str, str]] = []
        self.number = 1

    def first(self) -> dict[str, Any]:
        return self._body(201)

    def _body(self, code: int) -> dict[str, Any]:
        rows = self.batches.popleft() if self.batches else []
        body: dict[str, Any] = {"error": False, "code": code, "result": rows, "cached": False}
        body["hasMore"] = bool(self.batches)
        if self.batches or self.number > 1:
            body["id"] = "4711"
        if self.batches and self.retryable:
            self.number += 1
            body["nextBatchId"] = str(self.number)
        return body

    def send_request(self, request: Request) -> Response:
        self.sent.append((request.method, request.endpoint))
        code = 202 if request.method == "delete" else 200
        body = {"error": False, "code": 202, "id": "4711"} if code == 202 else self._body(200)
        resp = Response(request.method, "http://scripted", {}, code, "OK", json.dumps(body))
        resp.body, resp.is_success = body, True
        return resp


@dataclass
class Batches:
    """An AQL answer paged in several batches (each a list of rows)."""

    rows: list[list[Any]]


@dataclass
class RecordingCollection:
    name: str
    log: list[tuple[Any, ...]]
    answers: deque[Any]
    recorder: Recorder

    def _answer(self) -> Any:
        answer = self.answers.popleft() if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer

    def insert(self, document: dict[str, Any], *args: Any, **kw: Any) -> Any:
        call = bound(StandardCollection.insert, document, *args, **kw)
        self.log.append(("insert", self.name, document, kw))
        self.recorder.calls.append(("insert", call))
        return self._answer()

    def get(self, key: str, *args: Any, **kw: Any) -> Any:
        bound(StandardCollection.get, key, *args, **kw)
        self.log.append(("get", self.name, key))
        return self._answer()

    def update(self, document: dict[str, Any], *args: Any, **kw: Any) -> Any:
        bound(StandardCollection.update, document, *args, **kw)
        self.log.append(("update", self.name, document, kw))
        return self._answer()

    def add_index(self, data: dict[str, Any], *args: Any, **kw: Any) -> Any:
        bound(StandardCollection.add_index, data, *args, **kw)
        self.log.append(("add_index", self.name, data))
        self.recorder.options.append((kw, self.recorder.timeout_probe()))
        return {"isNewlyCreated": True}

    def properties(self) -> dict[str, Any]:
        bound(StandardCollection.properties)
        self.log.append(("properties", self.name))
        return dict(self.recorder.properties)

    def configure(self, *args: Any, **kw: Any) -> dict[str, Any]:
        bound(StandardCollection.configure, *args, **kw)
        self.log.append(("configure", self.name, kw))
        return {}


@dataclass
class Recorder:
    """Stands where python-arango's StandardDatabase goes; records calls, replays answers.

    Each method takes exactly the arguments python-arango's own takes (`bound`). `aql_answers`
    are what successive AQL queries return: rows (one batch), `Batches` (paged by a real
    python-arango Cursor over a ScriptedConnection), or an exception to raise; `doc_answers`
    are what successive collection calls (insert/get/update) return.
    """

    aql_answers: list[Any] = field(default_factory=list)
    doc_answers: list[Any] = field(default_factory=list)
    collections: set[str] = field(default_factory=set)
    log: list[tuple[Any, ...]] = field(default_factory=list)
    # For each AQL query: its keyword options (max_runtime) and the read timeout in force.
    options: list[tuple[dict[str, Any], float | None]] = field(default_factory=list)
    timeout_probe: Any = lambda: None
    # What has_database() sees on _system: the names, or the error it raises.
    databases: set[str] | Exception = field(default_factory=set)
    # What the collection's properties() returns (python-arango's formatted names).
    properties: dict[str, Any] = field(default_factory=lambda: {"sync": True})
    # Every call with all its arguments, defaults included: (method, arguments).
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    cursors: list[ScriptedConnection] = field(default_factory=list)
    # What create_database raises, if anything.
    refuse_create: Exception | None = None

    def __post_init__(self) -> None:
        self._aql = deque(self.aql_answers)
        self._docs = deque(self.doc_answers)
        self.aql = self  # db.aql.execute(...) lands on self.execute

    def execute(self, query: str, *args: Any, **kw: Any) -> Cursor:
        call = bound(AQL.execute, query, *args, **kw)
        self.calls.append(("execute", call))
        self.log.append(("aql", query, call["bind_vars"]))
        options = {k: v for k, v in kw.items() if k not in ("bind_vars", "allow_retry")}
        options = {k: v for k, v in options.items() if v is not None}
        self.options.append((options, self.timeout_probe()))
        answer = self._aql.popleft()
        if isinstance(answer, Exception):
            raise answer
        pages = answer.rows if isinstance(answer, Batches) else [answer]
        conn = ScriptedConnection(pages, retryable=call["allow_retry"])
        self.cursors.append(conn)
        return Cursor(conn, conn.first(), allow_retry=call["allow_retry"])  # type: ignore[arg-type]

    def collection(self, name: str) -> RecordingCollection:
        bound(StandardDatabase.collection, name)
        return RecordingCollection(name, self.log, self._docs, self)

    def has_collection(self, name: str) -> bool:
        bound(StandardDatabase.has_collection, name)
        self.log.append(("has_collection", name))
        return name in self.collections

    def create_collection(self, name: str, *args: Any, **kw: Any) -> Any:
        call = bound(StandardDatabase.create_collection, name, *args, **kw)
        self.calls.append(("create_collection", call))
        self.log.append(("create_collection", name))
        if name in self.collections:
            raise server_error(CollectionCreateError, 409, 1207, "duplicate name")
        self.collections.add(name)
        # What the server then reports (python-arango's names; a single server leaves out
        # the cluster's two).
        self.properties["sync"] = call["sync"]
        return self.collection(name)

    def has_database(self, name: str) -> bool:
        bound(StandardDatabase.has_database, name)
        self.log.append(("has_database", name))
        if isinstance(self.databases, Exception):
            raise self.databases
        return name in self.databases

    def create_database(self, name: str, *args: Any, **kw: Any) -> bool:
        call = bound(StandardDatabase.create_database, name, *args, **kw)
        self.calls.append(("create_database", call))
        self.log.append(("create_database", name))
        if self.refuse_create is not None:
            raise self.refuse_create
        return True

    def delete_collection(self, name: str, *args: Any, **kw: Any) -> bool:
        call = bound(StandardDatabase.delete_collection, name, *args, **kw)
        self.log.append(("delete_collection", name, call["ignore_missing"]))
        return True

    @property
    def queries(self) -> list[tuple[str, dict[str, Any]]]:
        return [(q, b) for kind, q, b in (e for e in self.log if e[0] == "aql")]

    def called(self, method: str) -> list[dict[str, Any]]:
        return [arguments for name, arguments in self.calls if name == method]


def store_with(
    recorder: Recorder, url: str = "arango://root@db.example:8529/statesaga"
) -> ArangoStore:
    """A store whose database is the recorder; initialize=0 so only the call under test is
    recorded (the schema calls have their own tests)."""
    settings = ArangoSettings.from_url(url + ("&" if "?" in url else "?") + "initialize=0")
    store = ArangoStore(settings, database=recorder)
    recorder.timeout_probe = lambda: store._http.read_timeout.get(None)
    return store


def stored(wf: WorkflowState, revision: int = 1, **extra: Any) -> dict[str, Any]:
    """A document as python-arango returns it from the server."""
    doc = {
        "_key": wf.id,
        "_id": f"{COLL}/{wf.id}",
        "_rev": "_hXyz---",
        **ArangoStore.to_document(wf, revision),
    }
    doc.update(extra)
    return doc


def test_the_stand_ins_have_only_python_arangos_methods() -> None:
    # Each stand-in method binds its arguments to python-arango's method of the same name
    # (`bound`); none may exist that python-arango's classes do not have.
    helpers = {"called", "queries", "timeout_probe"}
    for fake, real in (
        (Recorder, {*dir(StandardDatabase), *dir(AQL)}),
        (RecordingCollection, set(dir(StandardCollection))),
        (RecordingClient, set(dir(ArangoClient))),
    ):
        own = {n for n, v in vars(fake).items() if callable(v) and not n.startswith("_")}
        assert own - helpers <= real, fake


# -- URL parsing ------------------------------------------------------------------------------


def test_url_with_everything() -> None:
    s = ArangoSettings.from_url(
        f"arango://alice:{SECRET_URL}@db.example:8530/orders?collection_prefix=run7_&tls=1"
        "&initialize=0&connect_retries=2&timeout=2.5&backoff=0.1",
        env={},
    )
    assert (s.username, s.password, s.host, s.port, s.database) == (
        "alice",
        SECRET,
        "db.example",
        8530,
        "orders",
    )
    assert (s.collection_prefix, s.collection, s.tls, s.initialize) == (
        "run7_",
        "run7_workflows",
        True,
        False,
    )
    assert (s.connect_retries, s.timeout, s.backoff) == (2, 2.5, 0.1)
    assert s.endpoint == "https://db.example:8530"


def test_url_defaults_fail_fast() -> None:
    s = ArangoSettings.from_url("arango://localhost", env={})
    assert (s.username, s.password, s.port, s.database) == ("root", "", 8529, "statesaga")
    assert (s.collection, s.tls, s.initialize) == ("statesaga_workflows", False, True)
    assert (s.connect_retries, s.timeout) == (0, 5.0)
    assert s.endpoint == "http://localhost:8529"


def test_credentials_fall_back_to_the_environment() -> None:
    env = {ENV_USER: "svc", ENV_PASSWORD: SECRET}
    s = ArangoSettings.from_url("arango://db.example/statesaga", env=env)
    assert (s.username, s.password) == ("svc", SECRET)
    # Whatever the URL says wins over the environment.
    s = ArangoSettings.from_url("arango://bob:pw@db.example/statesaga", env=env)
    assert (s.username, s.password) == ("bob", "pw")
    s = ArangoSettings.from_url("arango://bob@db.example/statesaga", env=env)
    assert (s.username, s.password) == ("bob", SECRET)


def test_ipv6_host() -> None:
    s = ArangoSettings.from_url("arango://[::1]:8529/statesaga", env={})
    assert s.endpoint == "http://[::1]:8529"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (f"redis://root:{SECRET_URL}@h/db", "not an arango:// URL"),
        (f"arango://root:{SECRET_URL}@h:notaport/db", "port"),
        (f"arango://root:{SECRET_URL}@h/9db", "not a valid database name"),
        (
            f"arango://root:{SECRET_URL}@h/db?colection_prefix=x_",
            "unknown parameter 'colection_prefix'",
        ),
        (f"arango://root:{SECRET_URL}@h/db?tls=maybe", "tls must be 0 or 1"),
        (f"arango://root:{SECRET_URL}@h/db?connect_retries=-1", "must not be negative"),
        (f"arango://root:{SECRET_URL}@h/db?timeout=soon", "timeout must be a number"),
        (f"arango://root:{SECRET_URL}@h/db?timeout=0", "more than 0"),
        (f"arango://root:{SECRET_URL}@h/db?collection_prefix=1st", "invalid collection name"),
    ],
)
def test_bad_urls_are_adapter_errors_without_the_password(url: str, fragment: str) -> None:
    with pytest.raises(AdapterError) as caught:
        ArangoSettings.from_url(url, env={})
    assert fragment in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET_URL not in str(caught.value)


def test_repr_hides_the_password() -> None:
    store = ArangoStore.from_url(f"arango://alice:{SECRET_URL}@db.example:8529/orders")
    assert repr(store) == (
        "ArangoStore('arango://alice:***@db.example:8529/orders?collection_prefix=statesaga_')"
    )
    for text in (repr(store), repr(store.settings), str(store.settings)):
        assert SECRET not in text and SECRET_URL not in text


def test_from_url_overrides_give_a_run_its_own_collection() -> None:
    store = ArangoStore.from_url("arango://root@h/db", collection_prefix="run42_")
    assert store.settings.collection == "run42_workflows"
    with pytest.raises(AdapterError):
        ArangoStore.from_url("arango://root@h/db", collection_prefix="bad prefix")


def test_the_plugin_entry_point_opens_without_connecting() -> None:
    from statesaga.plugins import open_store

    # Port 1 is closed: opening must not touch the network (connection is lazy).
    store = open_store("arango://root@127.0.0.1:1/statesaga")
    assert isinstance(store, ArangoStore)


def test_import_statesaga_does_not_import_python_arango() -> None:
    code = "import sys, statesaga, statesaga.plugins; print('arango' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- document <-> model -----------------------------------------------------------------------


def test_to_document_keeps_the_model_as_exact_json_text() -> None:
    wf = make_workflow(session_id="S1", status=WorkflowStatus.RUNNING, created_at=T0)
    wf.heartbeat_at = T0 + timedelta(seconds=1)
    doc = ArangoStore.to_document(wf, 4)
    assert doc == {
        "revision": 4,
        "session_id": "S1",
        "status": "RUNNING",
        "created_at_us": T0_US,
        "heartbeat_at_us": T0_US + 1_000_000,
        "state": wf.model_copy(update={"revision": 4}).to_json(),
    }
    assert wf.revision == 0, "mapping must not change the caller's model"


def test_times_are_instants_whatever_the_zone() -> None:
    paris = timezone(timedelta(hours=1))
    naive = T0.replace(tzinfo=None)  # taken as UTC
    for when in (T0, T0.astimezone(paris), naive):
        wf = make_workflow(created_at=when)
        assert ArangoStore.to_document(wf, 1)["created_at_us"] == T0_US


def test_rich_document_round_trips_exactly() -> None:
    store = store_with(Recorder())
    wf = rich_workflow()
    got = store.from_document(stored(wf, revision=7))
    assert got.revision == 7
    assert got.to_json() == wf.model_copy(update={"revision": 7}).to_json()


def test_a_newer_heartbeat_attribute_wins_over_the_json_text() -> None:
    store = store_with(Recorder())
    wf = make_workflow(heartbeat_at=T0)
    later = T0_US + 5_000_000
    assert store.from_document(stored(wf, heartbeat_at_us=later)).heartbeat_at == T0 + timedelta(
        seconds=5
    )
    assert store.from_document(stored(wf, heartbeat_at_us=T0_US - 1)).heartbeat_at == T0


def test_unknown_attributes_are_definition_errors() -> None:
    store = store_with(Recorder())
    wf = make_workflow()
    with pytest.raises(DefinitionError) as caught:
        store.from_document(stored(wf, surprise=1))
    assert [p.field for p in caught.value.problems] == ["surprise"]
    assert caught.value.problems[0].file == f"arango:statesaga/{COLL}/{wf.id}"

    text = json.loads(wf.to_json()) | {"surprise": "new in a later version"}
    with pytest.raises(DefinitionError) as caught:
        store.from_document(stored(wf, state=json.dumps(text)))
    assert any(p.field == "surprise" for p in caught.value.problems)


def test_a_malformed_document_is_a_definition_error() -> None:
    store = store_with(Recorder())
    with pytest.raises(DefinitionError) as caught:
        store.from_document({"_key": WID, "revision": "3", "state": {"id": WID}})
    assert {p.field for p in caught.value.problems} == {"revision", "state"}


# -- what each operation sends ----------------------------------------------------------------


def test_create_inserts_the_document_under_the_workflow_id() -> None:
    rec = Recorder()
    store = store_with(rec)
    wf = make_workflow(created_at=T0)
    store.create(wf)
    assert wf.revision == 1
    (call,) = rec.log
    assert call == (
        "insert",
        COLL,
        {"_key": wf.id, **ArangoStore.to_document(wf, 1)},
        {"silent": True, "sync": True},
    )


def test_create_of_an_existing_id_is_a_conflict() -> None:
    wf = make_workflow()
    duplicate = server_error(DocumentInsertError, 409, 1210, "unique constraint violated")
    rec = Recorder(doc_answers=[duplicate, stored(wf, revision=3)])
    store = store_with(rec)
    with pytest.raises(ConflictError) as caught:
        store.create(wf)
    assert (caught.value.workflow_id, caught.value.actual) == (wf.id, 3)
    assert wf.revision == 0


def test_create_that_meets_a_concurrent_write_runs_again() -> None:
    # Error 1200 aborts the insert; run again, it finds the id taken (1210) and reads back.
    wf = make_workflow()
    rec = Recorder(
        doc_answers=[
            server_error(DocumentInsertError, 409, 1200, "write-write conflict"),
            server_error(DocumentInsertError, 409, 1210, "unique constraint violated"),
            stored(another_writers(wf), revision=1),
        ]
    )
    with pytest.raises(ConflictError):
        store_with(rec).create(wf)
    assert [e[0] for e in rec.log] == ["insert", "insert", "get"]


def test_a_create_without_an_answer_that_is_not_stored_is_unknown() -> None:
    wf = make_workflow()
    rec = Recorder(doc_answers=[real_read_timeout(), None])
    with pytest.raises(AdapterError) as caught:
        store_with(rec).create(wf)
    assert "got no answer within 5 s, so its outcome is unknown" in str(caught.value)
    assert is_outage(caught.value) and wf.revision == 0


def test_create_refuses_an_id_arango_cannot_key() -> None:
    rec = Recorder()
    wf = make_workflow()
    wf.id = "WF/with a slash"
    with pytest.raises(AdapterError, match="not a valid ArangoDB key"):
        store_with(rec).create(wf)
    assert rec.log == []


def test_get_reads_one_document_by_key() -> None:
    wf = make_workflow()
    rec = Recorder(doc_answers=[stored(wf, revision=2), None])
    store = store_with(rec)
    assert store.get(wf.id).revision == 2
    with pytest.raises(NotFoundError):
        store.get("WF-20260208-00000000")
    assert rec.log == [("get", COLL, wf.id), ("get", COLL, "WF-20260208-00000000")]
    with pytest.raises(NotFoundError):
        store.get("../_system/users")  # not a key: answered without asking the server
    assert len(rec.log) == 2


def test_save_is_one_conditional_replace() -> None:
    wf = make_workflow(status=WorkflowStatus.RUNNING)
    wf.revision = 3
    rec = Recorder(aql_answers=[[4]])
    store_with(rec).save(wf)
    assert wf.revision == 4
    ((query, binds),) = rec.queries
    assert query == (
        "FOR d IN @@coll FILTER d._key == @key AND d.revision == @revision "
        "REPLACE d WITH MERGE(@doc, "
        "{heartbeat_at_us: MAX([d.heartbeat_at_us, @doc.heartbeat_at_us])}) "
        "IN @@coll OPTIONS {ignoreRevs: false, waitForSync: true} RETURN NEW.revision"
    )
    assert binds == {
        "@coll": COLL,
        "key": wf.id,
        "revision": 3,
        "doc": ArangoStore.to_document(wf, 4),
    }
    assert json.loads(binds["doc"]["state"])["revision"] == 4
    # A one-document request: `timeout` to answer (no long_timeout in force), and the server
    # stops the statement when the client would have stopped waiting.
    assert rec.options == [({"max_runtime": 5.0}, None)]


def another_writers(wf: WorkflowState) -> WorkflowState:
    """The same workflow as another writer saved it (its JSON text differs from ours)."""
    other = wf.model_copy(deep=True)
    other.reason = "saved by another worker"
    return other


def test_save_that_matches_nothing_is_a_conflict_or_not_found() -> None:
    wf = make_workflow()
    wf.revision = 1
    rec = Recorder(
        aql_answers=[[], []], doc_answers=[stored(another_writers(wf), revision=2), None]
    )
    store = store_with(rec)
    with pytest.raises(ConflictError) as caught:
        store.save(wf)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert wf.revision == 1, "a failed save must not change the caller's revision"
    with pytest.raises(NotFoundError):
        store.save(wf)


def test_a_replayed_save_that_finds_its_own_write_succeeded() -> None:
    # The request was sent again after its connection broke (ArangoHTTPClient), and the first
    # send had committed: the replay matches nothing, and reading back finds our document.
    wf = make_workflow()
    wf.revision = 1
    ours = {"_key": wf.id, "_rev": "_hXyz---", **ArangoStore.to_document(wf, 2)}
    ours["heartbeat_at_us"] = T0_US  # a heartbeat since then does not make it someone else's
    rec = Recorder(aql_answers=[[]], doc_answers=[ours])
    store_with(rec).save(wf)
    assert wf.revision == 2


# Error 1200 as ArangoDB 3.11+ reports a write that cannot lock the document's key, and as
# older versions (and RocksDB's snapshot check) report it; both HTTP 409.
LOCKED = "timeout waiting to lock key - in index primary of type primary over '_key'"


def write_conflict(message: str = "write-write conflict") -> Exception:
    return server_error(AQLQueryExecuteError, 409, 1200, message)


def test_a_heartbeat_between_snapshot_and_write_does_not_fail_the_save() -> None:
    # A heartbeat changed _rev after the statement's snapshot: ArangoDB aborts the statement
    # with 1200. The save runs the same statement again; its revision FILTER still matches.
    wf = make_workflow()
    wf.revision = 3
    rec = Recorder(aql_answers=[write_conflict(), write_conflict(LOCKED), [4]])
    store_with(rec).save(wf)
    assert wf.revision == 4
    first, second, third = rec.queries
    assert first == second == third
    assert first[0] == QUERIES["save"] and first[1]["revision"] == 3
    assert rec.log == [e for e in rec.log if e[0] == "aql"], "no read-back when it succeeds"


def test_a_1200_then_a_taken_revision_is_a_conflict() -> None:
    wf = make_workflow()
    wf.revision = 1
    rec = Recorder(
        aql_answers=[write_conflict(), []], doc_answers=[stored(another_writers(wf), revision=2)]
    )
    with pytest.raises(ConflictError) as caught:
        store_with(rec).save(wf)
    assert (caught.value.workflow_id, caught.value.expected, caught.value.actual) == (wf.id, 1, 2)
    assert wf.revision == 1


def test_a_write_that_keeps_meeting_1200_says_so() -> None:
    wf = make_workflow()
    wf.revision = 1
    rec = Recorder(aql_answers=[write_conflict() for _ in range(8)])
    with pytest.raises(AdapterError, match=r"save of .* \(error 1200\) 8 times in a row"):
        store_with(rec).save(wf)
    assert len(rec.queries) == 8 and wf.revision == 1


# -- a save whose answer never came: re-read to decide ----------------------------------------
# python-arango lets requests' ReadTimeout through (Connection.process_request catches only
# ConnectionError), which is what the recorder raises here: a real one, cause chain included.


def test_a_timed_out_save_that_committed_is_a_success() -> None:
    wf = make_workflow()
    wf.revision = 2
    ours = {"_key": wf.id, **ArangoStore.to_document(wf, 3)}
    rec = Recorder(aql_answers=[real_read_timeout()], doc_answers=[ours])
    store_with(rec).save(wf)
    assert wf.revision == 3
    assert [e[0] for e in rec.log] == ["aql", "get"]


def test_a_timed_out_save_overtaken_by_another_writer_is_a_conflict() -> None:
    wf = make_workflow()
    wf.revision = 2
    rec = Recorder(
        aql_answers=[real_read_timeout()],
        doc_answers=[stored(another_writers(wf), revision=3)],
    )
    with pytest.raises(ConflictError) as caught:
        store_with(rec).save(wf)
    assert (caught.value.expected, caught.value.actual) == (2, 3)
    assert wf.revision == 2


def test_a_timed_out_save_not_applied_yet_is_unknown_not_failed() -> None:
    wf = make_workflow()
    wf.revision = 2
    rec = Recorder(aql_answers=[real_read_timeout()], doc_answers=[stored(wf, revision=2)])
    with pytest.raises(AdapterError) as caught:
        store_with(rec).save(wf)
    text = str(caught.value)
    assert f"save of {wf.id} at revision 2 got no answer within 5 s" in text
    assert "outcome is unknown" in text and "still has revision 2" in text
    assert "may yet apply" in text
    assert wf.revision == 2


def test_a_timed_out_save_whose_read_back_fails_is_unknown() -> None:
    wf = make_workflow()
    wf.revision = 2
    rec = Recorder(aql_answers=[real_read_timeout()], doc_answers=[real_read_timeout()])
    with pytest.raises(AdapterError, match="outcome is unknown; reading it back failed too"):
        store_with(rec).save(wf)


def test_heartbeat_updates_one_attribute_and_only_forwards() -> None:
    rec = Recorder(aql_answers=[[WID]])
    store_with(rec).heartbeat(WID, T0)
    ((query, binds),) = rec.queries
    assert query == (
        "FOR d IN @@coll FILTER d._key == @key "
        "UPDATE d WITH {heartbeat_at_us: MAX([d.heartbeat_at_us, @at])} IN @@coll "
        "OPTIONS {ignoreRevs: false, waitForSync: true} RETURN NEW._key"
    )
    assert binds == {"@coll": COLL, "key": WID, "at": T0_US}
    assert "revision" not in query


def test_heartbeat_of_an_unknown_id_and_a_retried_conflict() -> None:
    conflict = server_error(AQLQueryExecuteError, 409, 1200, "write-write conflict")
    rec = Recorder(aql_answers=[[], conflict, [WID]])
    store = store_with(rec)
    with pytest.raises(NotFoundError):
        store.heartbeat(WID, T0)
    store.heartbeat(WID, T0)  # the conflict is retried: a heartbeat has no revision to defend
    assert len(rec.queries) == 3


LIST_CASES = [
    ({}, "FOR d IN @@coll SORT d.created_at_us, d._key RETURN d", {}),
    (
        {"session_id": "S1"},
        "FOR d IN @@coll FILTER d.session_id == @session_id SORT d.created_at_us, d._key RETURN d",
        {"session_id": "S1"},
    ),
    (
        {"status": WorkflowStatus.RUNNING},
        "FOR d IN @@coll FILTER d.status == @status SORT d.created_at_us, d._key RETURN d",
        {"status": "RUNNING"},
    ),
    (
        {"session_id": "S1", "status": WorkflowStatus.FAILED, "limit": 2},
        "FOR d IN @@coll FILTER d.session_id == @session_id AND d.status == @status "
        "SORT d.created_at_us, d._key LIMIT @limit RETURN d",
        {"session_id": "S1", "status": "FAILED", "limit": 2},
    ),
    (
        {"limit": 5},
        "FOR d IN @@coll SORT d.created_at_us, d._key LIMIT @limit RETURN d",
        {"limit": 5},
    ),
]


@pytest.mark.parametrize(("kwargs", "query", "binds"), LIST_CASES)
def test_list_queries(kwargs: dict[str, Any], query: str, binds: dict[str, Any]) -> None:
    wf = make_workflow(session_id="S1")
    rec = Recorder(aql_answers=[[stored(wf)]])
    (got,) = store_with(rec).list(**kwargs)
    assert got.id == wf.id
    assert rec.queries == [(query, {"@coll": COLL, **binds})]
    # A listing grows with the collection: long_timeout (300 s), not the 5 s of one document.
    assert rec.options == [({"max_runtime": 300.0}, 300.0)]


def test_each_list_query_has_an_index_that_serves_its_filter_and_sort() -> None:
    # The optimizer serves FILTER a == x SORT b, c from a persistent index [a, b, c] (equality
    # on the leading attribute, the rest in index order); ArangoDB's explain on a real server
    # checks the plan (tests/test_arango_server.py).
    serving = {
        "list": ("created_at_us", "_key"),
        "list_session": ("session_id", "created_at_us", "_key"),
        "list_status": ("status", "created_at_us", "_key"),
        "list_session_status": ("session_id", "created_at_us", "_key"),
    }
    for name, index in serving.items():
        assert index in INDEXES
        assert QUERIES[name].endswith(" SORT d.created_at_us, d._key RETURN d")
        for attribute in index[:-2]:
            assert f"d.{attribute} == @{attribute}" in QUERIES[name]
    assert ("status", "heartbeat_at_us") in INDEXES  # the stale scan's range


def test_list_stale_query() -> None:
    rec = Recorder(aql_answers=[[]])
    store = store_with(rec)
    assert store.list_stale(T0, iter([WorkflowStatus.RUNNING, WorkflowStatus.COMPENSATING])) == []
    assert rec.queries == [
        (
            "FOR d IN @@coll FILTER d.status IN @statuses AND d.heartbeat_at_us < @before "
            "SORT d.created_at_us, d._key RETURN d",
            {"@coll": COLL, "statuses": ["COMPENSATING", "RUNNING"], "before": T0_US},
        )
    ]
    assert rec.options == [({"max_runtime": 300.0}, 300.0)]
    assert store.list_stale(T0, []) == []
    assert len(rec.queries) == 1, "no statuses: nothing to ask"


def test_values_never_reach_the_query_text() -> None:
    hostile = '" OR true RETURN d //'
    rec = Recorder(aql_answers=[[], [WID], []])
    store = store_with(rec, "arango://root@h/statesaga?collection_prefix=other_")
    store.list(session_id=hostile)
    store.heartbeat(WID, T0)
    store.list_stale(T0, [WorkflowStatus.RUNNING])
    known = set(QUERIES.values())
    for query, binds in rec.queries:
        assert query in known
        assert hostile not in query and "other_" not in query
        assert binds["@coll"] == "other_workflows"


def test_write_raw_replaces_the_json_text_only() -> None:
    rec = Recorder()
    store_with(rec).write_raw(WID, '{"id": "x"}')
    assert rec.log == [
        (
            "update",
            COLL,
            {"_key": WID, "state": '{"id": "x"}'},
            {"check_rev": False, "silent": True, "sync": True},
        )
    ]


# -- initialize -------------------------------------------------------------------------------


def test_initialize_creates_the_collection_and_indexes() -> None:
    rec = Recorder(properties={})
    store = ArangoStore(ArangoSettings.from_url("arango://root@h/statesaga"), database=rec)
    rec.timeout_probe = lambda: store._http.read_timeout.get(None)
    store.initialize()
    store.initialize()  # idempotent, and done once per connection
    # Index builds on a populated collection take long: each gets long_timeout.
    assert rec.options == [({}, 300.0)] * 4
    assert rec.log == [
        ("has_collection", COLL),
        ("create_collection", COLL),
        ("properties", COLL),
        *[
            ("add_index", COLL, {"type": "persistent", "fields": fields, "inBackground": True})
            for fields in (
                ["session_id", "created_at_us", "_key"],
                ["status", "created_at_us", "_key"],
                ["created_at_us", "_key"],
                ["status", "heartbeat_at_us"],
            )
        ],
    ]


def test_a_new_collection_syncs_every_write_to_disk() -> None:
    # python-arango's create_collection sends "waitForSync": false unless told otherwise,
    # which overrides the server's --database.wait-for-sync (issue 30, finding 1).
    rec = Recorder(properties={})
    ArangoStore(ArangoSettings.from_url("arango://root@h/statesaga"), database=rec).initialize()
    (call,) = rec.called("create_collection")
    assert call["sync"] is True
    assert (call["replication_factor"], call["write_concern"]) == (None, None)
    assert [e for e in rec.log if e[0] == "configure"] == []


def test_an_existing_collection_is_made_to_sync_and_a_cluster_gets_its_copies() -> None:
    # A collection created by an older version (waitForSync false, one copy per shard).
    rec = Recorder(
        collections={COLL},
        properties={"sync": False, "replication_factor": 1, "write_concern": 1},
    )
    url = "arango://root@h/statesaga?replication_factor=3&write_concern=2"
    ArangoStore(ArangoSettings.from_url(url), database=rec).initialize()
    assert ("configure", COLL, {"sync": True, "replication_factor": 3, "write_concern": 2}) in (
        rec.log
    )
    # A single server reports neither setting: only sync is changed there.
    rec = Recorder(collections={COLL}, properties={"sync": False})
    ArangoStore(ArangoSettings.from_url(url), database=rec).initialize()
    assert [e for e in rec.log if e[0] == "configure"] == [("configure", COLL, {"sync": True})]


def test_a_cluster_collection_is_created_with_the_urls_copies() -> None:
    rec = Recorder(properties={})
    url = "arango://root@h/statesaga?replication_factor=3&write_concern=2"
    ArangoStore(ArangoSettings.from_url(url), database=rec).initialize()
    (call,) = rec.called("create_collection")
    assert (call["sync"], call["replication_factor"], call["write_concern"]) == (True, 3, 2)


def test_first_use_initializes_when_allowed() -> None:
    wf = make_workflow()
    rec = Recorder(collections={COLL}, doc_answers=[stored(wf)])
    store = ArangoStore(ArangoSettings.from_url("arango://root@h/statesaga"), database=rec)
    store.get(wf.id)
    assert [e[0] for e in rec.log] == (
        ["has_collection", "properties"] + ["add_index"] * len(INDEXES) + ["get"]
    )


def test_initialize_off_only_checks() -> None:
    rec = Recorder()
    with pytest.raises(AdapterError, match="collection 'statesaga_workflows' does not exist"):
        store_with(rec).initialize()
    assert rec.log == [("has_collection", COLL)]


def test_drop_deletes_the_collection() -> None:
    rec = Recorder()
    store_with(rec, "arango://root@h/statesaga?collection_prefix=t1_").drop()
    assert rec.log == [("delete_collection", "t1_workflows", True)]


# -- error translation ------------------------------------------------------------------------


def failing_get(exc: Exception) -> BaseException:
    store = store_with(
        Recorder(doc_answers=[exc]), f"arango://alice:{SECRET_URL}@db.example:8529/orders"
    )
    with pytest.raises(Exception) as caught:
        store.get(WID)
    text = str(caught.value)
    assert SECRET not in text and SECRET_URL not in text
    # python-arango's exceptions (their requests hold the Authorization header) are not shown
    # in a traceback: the shown cause is none, or an ArangoUnavailable, which holds a message.
    cause = caught.value.__cause__
    assert cause is None or (type(cause) is ArangoUnavailable and not vars(cause))
    assert caught.value.__suppress_context__
    return caught.value


def real_read_timeout() -> ReadTimeout:
    """requests' ReadTimeout as the real stack raises it, cause chain included (urllib3's
    ReadTimeoutError, then the socket's TimeoutError): a request to a listener that accepts
    and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        try:
            requests.get(f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=(1, 0.05))
        except ReadTimeout as exc:
            return exc
    raise AssertionError("the request was answered")


@pytest.mark.parametrize(
    ("exc", "kind", "fragment", "outage"),
    [
        (
            # arangod answers a wrong password, and a database the user has no grant on,
            # with 401 and errorNum 11 (CommTask::prepareExecution).
            server_error(
                ServerConnectionError, 401, 11, "not authorized to execute this request", "get"
            ),
            AdapterError,
            "authentication failed or no access to database 'orders' for user 'alice'",
            False,
        ),
        (
            server_error(DocumentGetError, 403, 11, "forbidden", "get"),
            AdapterError,
            "user 'alice' is not allowed to get",
            False,
        ),
        (
            server_error(DocumentGetError, 404, 1228, "database not found", "get"),
            AdapterError,
            "the database does not exist",
            False,
        ),
        (
            server_error(DocumentGetError, 404, 1203, "collection or view not found", "get"),
            AdapterError,
            "collection 'statesaga_workflows' does not exist",
            False,
        ),
        (
            # No server echoes the password today; _scrub keeps it so if one ever does.
            server_error(DocumentGetError, 500, 4, f"internal error near {SECRET}", "get"),
            AdapterError,
            "get failed: [HTTP 500][ERR 4] internal error near ***",
            False,
        ),
        (
            # python-arango's ping wraps what the connection raised; raised as it raises it.
            "client.db(verify=True) of a closed port",
            AdapterError,
            "cannot reach",
            True,
        ),
        (
            ConnectionAbortedError("Can't connect to host(s) within limit (1)"),
            AdapterError,
            "cannot reach",
            True,
        ),
        ("a real ReadTimeout", AdapterError, "no answer to get within 5 s", True),
    ],
)
def test_errors_are_translated(
    exc: Exception | str, kind: type[Exception], fragment: str, outage: bool
) -> None:
    if exc == "a real ReadTimeout":
        exc = real_read_timeout()
    elif isinstance(exc, str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = ArangoClient(hosts=f"http://127.0.0.1:{port}", resolver_max_tries=1)
        client._http._retry_attempts = 0  # type: ignore[attr-defined]
        try:
            client.db("orders", verify=True)
        except ArangoClientError as raised:
            exc = raised
        client.close()
    assert isinstance(exc, Exception)
    err = failing_get(exc)
    assert type(err) is kind
    assert fragment in str(err)
    if kind is AdapterError:
        assert "ArangoDB at db.example:8529 (database 'orders')" in str(err)
    # Only what says "not reachable now" is an outage a loop waits out.
    assert is_outage(err) is outage


def test_a_missing_document_is_none_from_python_arango_and_not_found_here() -> None:
    # python-arango's StandardCollection.get answers 1202 with None (never raises it).
    rec = Recorder(doc_answers=[None])
    with pytest.raises(NotFoundError):
        store_with(rec).get(WID)


# -- connecting: a missing database, no grant, a wrong password ------------------------------


@dataclass
class RecordingClient:
    """Stands where python-arango's ArangoClient goes: `db(name, ..., verify)` hands back the
    next scripted answer for that database (a Recorder, or the exception python-arango raises
    from the verifying ping). Without verify, python-arango sends nothing, so neither does
    this."""

    answers: dict[str, list[Any]]
    log: list[tuple[Any, ...]] = field(default_factory=list)

    def db(
        self, name: str, username: str = "root", password: str = "", verify: bool = False
    ) -> Any:
        bound(ArangoClient.db, name, username, password, verify)
        self.log.append(("db", name, verify))
        answer = self.answers[name][0] if not verify else self.answers[name].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.log.append(("close",))


# What the verifying ping (GET /_api/collection) raises, as python-arango's BaseConnection.ping
# builds it from arangod's answers (CommTask::prepareExecution): to a user without a grant on
# the name, a missing database looks exactly like a wrong password.
NO_ACCESS = server_error(
    ServerConnectionError,
    401,
    11,
    "not authorized to execute this request",
    "get",
    msg="bad username/password or token is expired",
)
NOT_FOUND_DB = server_error(ServerConnectionError, 404, 1228, "database not found", "get")
SYSTEM_DENIED = server_error(
    DatabaseListError, 401, 11, "not authorized to execute this request", "get"
)


def connecting_store(client: RecordingClient, query: str = "") -> ArangoStore:
    store = ArangoStore.from_url(f"arango://alice:{SECRET_URL}@db.example:8529/orders{query}")
    store._conn.client_for = lambda: client  # type: ignore[method-assign]
    return store


def test_no_grant_or_missing_database_is_worded_as_either() -> None:
    client = RecordingClient(
        {"orders": [NO_ACCESS], "_system": [Recorder(databases=SYSTEM_DENIED)]}
    )
    with pytest.raises(AdapterError) as caught:
        connecting_store(client).initialize()
    assert str(caught.value).startswith(
        "ArangoDB at db.example:8529 (database 'orders'): authentication failed or no access "
        "to database 'orders' for user 'alice'"
    )
    assert SECRET not in str(caught.value)
    assert client.log == [("db", "orders", True), ("db", "_system", False)]


def test_a_401_for_a_missing_database_creates_it_when_allowed() -> None:
    # A user who may read _system but has no grant on a database that does not exist yet:
    # arangod answers 401, not 1228. has_database() tells, and initialize=1 creates it.
    system, orders = Recorder(databases={"_system"}), Recorder()
    client = RecordingClient({"orders": [NO_ACCESS, orders], "_system": [system]})
    connecting_store(client).initialize()
    assert system.log == [("has_database", "orders"), ("create_database", "orders")]
    assert client.log == [
        ("db", "orders", True),
        ("db", "_system", False),
        ("db", "_system", False),
        ("db", "orders", True),
    ]
    assert orders.log[:2] == [("has_collection", COLL), ("create_collection", COLL)]


def test_a_401_for_an_existing_database_is_never_a_create() -> None:
    system = Recorder(databases={"_system", "orders"})
    client = RecordingClient({"orders": [NO_ACCESS], "_system": [system]})
    with pytest.raises(AdapterError, match="authentication failed or no access"):
        connecting_store(client).initialize()
    assert system.log == [("has_database", "orders")]


def test_a_database_created_meanwhile_is_connected_not_created() -> None:
    system, orders = Recorder(databases={"_system", "orders"}), Recorder(collections={COLL})
    client = RecordingClient({"orders": [NOT_FOUND_DB, orders], "_system": [system]})
    connecting_store(client, "?initialize=0").initialize()
    assert system.log == [("has_database", "orders")]
    assert client.log == [("db", "orders", True), ("db", "_system", False), ("db", "orders", True)]


def test_a_missing_database_with_initialize_off_is_named() -> None:
    system = Recorder(databases={"_system"})
    client = RecordingClient({"orders": [NOT_FOUND_DB], "_system": [system]})
    with pytest.raises(AdapterError, match="the database does not exist .*initialize=1"):
        connecting_store(client, "?initialize=0").initialize()
    assert system.log == [("has_database", "orders")]


def test_drop_does_not_create_a_missing_database() -> None:
    system = Recorder(databases={"_system"})
    client = RecordingClient({"orders": [NOT_FOUND_DB], "_system": [system]})
    store = connecting_store(client)
    store.drop()
    assert system.log == [("has_database", "orders")]
    assert ("create_database", "orders") not in system.log
    assert client.log[-1] == ("close",)


def test_a_1228_is_certain_even_when_system_cannot_be_read() -> None:
    # 404 with 1228 names a missing database; a user who may not read _system cannot have
    # that confirmed, and needs no confirmation (issue 30, finding 4).
    client = RecordingClient(
        {"orders": [NOT_FOUND_DB], "_system": [Recorder(databases=SYSTEM_DENIED)]}
    )
    with pytest.raises(AdapterError) as caught:
        connecting_store(client, "?initialize=0").initialize()
    assert str(caught.value).endswith(
        "the database does not exist (create it, or allow it with initialize=1)"
    )


def test_drop_of_a_missing_database_does_not_raise_whoever_asks() -> None:
    client = RecordingClient(
        {"orders": [NOT_FOUND_DB], "_system": [Recorder(databases=SYSTEM_DENIED)]}
    )
    connecting_store(client).drop()
    assert client.log[-1] == ("close",)


def test_a_missing_database_the_user_may_not_create_is_named() -> None:
    system = Recorder(databases=SYSTEM_DENIED, refuse_create=SYSTEM_DENIED)
    client = RecordingClient({"orders": [NOT_FOUND_DB], "_system": [system]})
    with pytest.raises(AdapterError) as caught:
        connecting_store(client).initialize()
    assert "the database does not exist, and user 'alice' may not create it" in str(caught.value)


def test_a_new_database_gets_the_urls_copies() -> None:
    system, orders = Recorder(databases={"_system"}), Recorder(properties={})
    client = RecordingClient({"orders": [NOT_FOUND_DB, orders], "_system": [system]})
    connecting_store(client, "?replication_factor=3&write_concern=2").initialize()
    (call,) = system.called("create_database")
    assert (call["replication_factor"], call["write_concern"]) == (3, 2)


# -- the HTTP layer over real sockets ---------------------------------------------------------


class ScriptedHTTP:
    """A local TCP listener for testing statesaga's HTTP client (ArangoHTTPClient) over real
    sockets: for each request it reads, it does the next scripted thing: answer with a status
    and a JSON body (bodies as arangod writes them, cited where used), answer late, or close
    the connection without answering. It is not ArangoDB and decides nothing; it speaks just
    enough HTTP/1.1 (keep-alive, Content-Length) for requests' connection pool."""

    def __init__(self, script: list[tuple[Any, ...]], respond: Any = None) -> None:
        """`respond(method, path, body)` answers once `script` is used up (as arangod would
        answer that request), for servers that answer any number of requests."""
        self.script = deque(script)
        self.respond = respond
        self.seen: list[tuple[int, str, str]] = []  # (connection number, method, path)
        self.bodies: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        number = 0
        while True:  # until close(): a request past the script is answered, never left waiting
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            number += 1
            threading.Thread(target=self._talk, args=(conn, number), daemon=True).start()

    def _talk(self, conn: socket.socket, number: int) -> None:
        with conn:
            reader = conn.makefile("rb")
            while True:
                line = reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                length = 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                body = reader.read(length)
                self.bodies.append(body)
                self.seen.append((number, method, path))
                if self.script:
                    action = self.script.popleft()
                elif self.respond is not None:
                    action = self.respond(method, path, json.loads(body) if body else None)
                else:
                    # Past the script: a 500 at once, so a client that sends more than the
                    # test expects fails the test now instead of waiting out its timeout.
                    action = answer(500, error_body(500, 4, f"unscripted {method} {path}"))
                if action[0] == "drop":
                    return  # closed with the request read and no answer
                _, status, body, delay = action
                time.sleep(delay)
                data = json.dumps(body).encode()
                conn.sendall(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: Keep-Alive\r\n\r\n".encode()
                    + data
                )

    def close(self) -> None:
        self.sock.close()


def answer(status: int, body: dict[str, Any], delay: float = 0.0) -> tuple[Any, ...]:
    return ("answer", status, body, delay)


# GET /_api/collection as arangod answers it (docs: HTTP API, "List all collections").
COLLECTIONS = {"error": False, "code": 200, "result": [{"name": COLL, "type": 2, "status": 3}]}


@pytest.fixture
def scripted() -> Iterator[Any]:
    servers: list[ScriptedHTTP] = []

    def start(*script: tuple[Any, ...], respond: Any = None) -> ScriptedHTTP:
        servers.append(ScriptedHTTP(list(script), respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize(
    ("errno", "message", "expected"),
    [
        # arangod's answer while it shuts down (CommTask::prepareExecution, step 1).
        # python-arango's own client retries a 5xx to a GET and then raises requests'
        # RetryError, which read as "cannot reach"; this store's client hands it over, once.
        (
            30,
            "shutdown in progress",
            "the server answered connect with [HTTP 503][ERR 30] shutdown in progress "
            "(unavailable for now: restarting, failing over or overloaded; try again later)",
        ),
        # While it starts, arangod answers basic-auth requests 503 with errorNum 503 (same
        # function). python-arango takes exactly that pair for a host to fail over from
        # (BaseConnection.prep_response) and raises its own "Can't connect to host(s)"; the
        # store still says what the server answered.
        (
            503,
            "service unavailable due to startup",
            "the server answered connect with HTTP 503: service unavailable due to startup "
            "(starting up or in maintenance mode; try again later)",
        ),
    ],
)
def test_a_server_answer_is_never_reported_as_unreachable(
    scripted: Any, errno: int, message: str, expected: str
) -> None:
    body = {"error": True, "code": 503, "errorNum": errno, "errorMessage": message}
    server = scripted(answer(503, body))
    store = ArangoStore.from_url(f"arango://root@127.0.0.1:{server.port}/orders?initialize=0")
    with pytest.raises(AdapterError) as caught:
        store.initialize()
    assert (
        str(caught.value) == f"ArangoDB at 127.0.0.1:{server.port} (database 'orders'): {expected}"
    )
    assert server.seen == [(1, "GET", "/_db/orders/_api/collection")]
    assert is_outage(caught.value), "a loop such as recover --every must wait it out"


def test_a_dropped_keep_alive_connection_is_retried_once(scripted: Any) -> None:
    # The ping is answered on connection 1; the next request on that pooled connection meets
    # a server that closed it; it is sent once more, on connection 2.
    server = scripted(answer(200, COLLECTIONS), ("drop",), answer(200, COLLECTIONS))
    store = ArangoStore.from_url(f"arango://root@127.0.0.1:{server.port}/orders?initialize=0")
    store.initialize()
    path = "/_db/orders/_api/collection"
    assert server.seen == [(1, "GET", path), (1, "GET", path), (2, "GET", path)]
    store.close()


def test_a_connection_dropped_twice_is_an_error(scripted: Any) -> None:
    server = scripted(answer(200, COLLECTIONS), ("drop",), ("drop",))
    store = ArangoStore.from_url(f"arango://root@127.0.0.1:{server.port}/orders?initialize=0")
    with pytest.raises(AdapterError, match="cannot reach .* to initialize"):
        store.initialize()
    assert len(server.seen) == 3


def test_one_document_gets_timeout_and_a_listing_gets_long_timeout(scripted: Any) -> None:
    # Both answers come 0.6 s late: too late for a get (timeout=0.3), in time for a listing
    # (long_timeout=3). The cursor body is POST /_api/cursor's answer (docs: HTTP API, AQL).
    cursor = {"error": False, "code": 201, "result": [], "hasMore": False, "cached": False}
    server = scripted(
        answer(200, COLLECTIONS),
        answer(200, {"error": False, "code": 200, "_key": WID}, delay=0.6),
        answer(201, cursor, delay=0.6),
    )
    store = ArangoStore.from_url(
        f"arango://root@127.0.0.1:{server.port}/orders?initialize=0&timeout=0.3&long_timeout=3"
    )
    with pytest.raises(AdapterError) as caught:
        store.get(WID)
    assert str(caught.value).endswith("no answer to get within 0.3 s (timeout=0.3, long_timeout=3)")
    assert store.list() == []
    assert [(m, p) for _, m, p in server.seen][1:] == [
        ("GET", f"/_db/orders/_api/document/{COLL}/{WID}"),
        ("POST", "/_db/orders/_api/cursor"),
    ]
    store.close()


def test_a_save_over_the_wire_runs_again_after_1200(scripted: Any) -> None:
    # POST /_api/cursor answered as arangod answers a statement aborted by a write-write
    # conflict (HTTP 409, errorNum 1200), then as it answers the statement's result.
    conflict = {
        "code": 409,
        "error": True,
        "errorMessage": "write-write conflict",
        "errorNum": 1200,
    }
    result = {"error": False, "code": 201, "result": [4], "hasMore": False, "cached": False}
    server = scripted(answer(200, COLLECTIONS), answer(409, conflict), answer(201, result))
    store = ArangoStore.from_url(f"arango://root@127.0.0.1:{server.port}/orders?initialize=0")
    wf = make_workflow()
    wf.revision = 3
    store.save(wf)
    assert wf.revision == 4
    sent = [json.loads(body) for body in server.bodies[1:]]
    assert sent[0] == sent[1]
    assert sent[0]["query"] == QUERIES["save"]
    assert sent[0]["bindVars"]["revision"] == 3 and sent[0]["bindVars"]["@coll"] == COLL
    assert sent[0]["options"]["maxRuntime"] == 5.0
    store.close()


def cursor_body(rows: list[Any], **extra: Any) -> dict[str, Any]:
    """POST /_api/cursor's answer as arangod writes it (docs: HTTP API, AQL queries)."""
    return {"error": False, "code": 201, "result": rows, "hasMore": False, "cached": False, **extra}


def error_body(status: int, errno: int, message: str) -> dict[str, Any]:
    return {"error": True, "code": status, "errorNum": errno, "errorMessage": message}


def sent_queries(server: ScriptedHTTP) -> list[dict[str, Any]]:
    return [
        json.loads(body)
        for (_, method, path), body in zip(server.seen, server.bodies, strict=True)
        if (method, path) == ("POST", "/_db/orders/_api/cursor")
    ]


def open_store(server: ScriptedHTTP, query: str = "") -> ArangoStore:
    return ArangoStore.from_url(f"arango://root@127.0.0.1:{server.port}/orders?initialize=0{query}")


# -- finding 1: every write waits for the disk -------------------------------------------------


def test_every_write_asks_the_server_to_sync(scripted: Any) -> None:
    # Over the wire, through python-arango: the insert's query string, the save's and the
    # heartbeat's AQL options. A server-wide --database.wait-for-sync is not enough: a
    # collection created by python-arango says "waitForSync": false.
    wf = make_workflow()
    server = scripted(
        answer(200, COLLECTIONS),
        answer(202, {"error": False, "_key": wf.id}),
        answer(201, cursor_body([2])),
        answer(201, cursor_body([wf.id])),
    )
    store = open_store(server)
    store.create(wf)
    store.save(wf)
    store.heartbeat(wf.id, T0)
    insert = [p for _, m, p in server.seen if m == "POST" and "/_api/document/" in p]
    (path,) = insert
    assert dict(parse_qsl(urlsplit(path).query))["waitForSync"] in ("1", "true")
    save, beat = sent_queries(server)
    for statement in (save, beat):
        assert "waitForSync: true" in statement["query"]
    store.close()


def test_initialize_creates_a_synced_collection_over_the_wire(scripted: Any) -> None:
    # python-arango's create_collection sends an explicit "waitForSync": false by default.
    props = {"error": False, "code": 200, "name": COLL, "waitForSync": True, "type": 2}

    def respond(method: str, path: str, body: Any) -> tuple[Any, ...]:
        if (method, path) == ("GET", "/_db/orders/_api/collection"):
            return answer(200, {"error": False, "code": 200, "result": []})
        if (method, path) == ("POST", "/_db/orders/_api/collection"):
            return answer(200, props)
        if path.endswith("/properties"):
            return answer(200, props)
        return answer(201, {"error": False, "code": 201, "id": "1", "isNewlyCreated": True})

    server = scripted(respond=respond)
    url = f"arango://root@127.0.0.1:{server.port}/orders?replication_factor=3&write_concern=2"
    store = ArangoStore.from_url(url)
    store.initialize()
    (created,) = [
        json.loads(body)
        for (_, method, path), body in zip(server.seen, server.bodies, strict=True)
        if (method, path) == ("POST", "/_db/orders/_api/collection")
    ]
    assert created["waitForSync"] is True
    assert (created["replicationFactor"], created["writeConcern"]) == (3, 2)
    store.close()


# -- finding 2: outages are ridden out, an answer that cannot tell is read back ---------------

OUTAGE_ANSWERS = [
    # A gateway or load balancer in front of the server (their bodies are not arangod's).
    (502, "<html>502 Bad Gateway</html>"),
    (503, "<html>503 Service Unavailable</html>"),
    (504, "<html>504 Gateway Time-out</html>"),
    # arangod while it shuts down (CommTask::prepareExecution).
    (503, error_body(503, 30, "shutdown in progress")),
    # A cluster in trouble: the errno decides, whatever the status (500, the least telling);
    # a coordinator passing on a DB server that shuts down carries errno 30 the same way.
    (500, error_body(500, 30, "shutdown in progress")),
    (500, error_body(500, 1457, "timeout in cluster operation")),
    (
        500,
        error_body(
            500, 1478, "A cluster backend which was required for the operation could not be reached"
        ),
    ),
    (500, error_body(500, 1495, "leadership challenge is ongoing")),
    (500, error_body(500, 1496, "not a leader")),
]


@pytest.mark.parametrize(("status", "body"), OUTAGE_ANSWERS)
def test_an_unavailable_server_is_an_outage(scripted: Any, status: int, body: Any) -> None:
    server = scripted(answer(200, COLLECTIONS), answer(status, body))
    store = open_store(server)
    with pytest.raises(AdapterError) as caught:
        store.get(WID)
    assert "unavailable for now" in str(caught.value) and f"[HTTP {status}]" in str(caught.value)
    assert is_outage(caught.value)
    store.close()


def test_a_plain_refusal_is_not_an_outage(scripted: Any) -> None:
    server = scripted(answer(200, COLLECTIONS), answer(400, error_body(400, 1501, "syntax")))
    with pytest.raises(AdapterError) as caught:
        open_store(server).list()
    assert not is_outage(caught.value)


def test_recover_every_rides_out_a_server_restart(scripted: Any) -> None:
    # While arangod restarts it answers 503 with errorNum 30; a cluster failing over answers
    # 1496. The recovery loop must wait both out, not exit (issue 30, finding 2).
    from statesaga.adapters.queues.inline import InlineQueue
    from statesaga.engine import Engine
    from statesaga.runtime.recovery import Recovery, recover_every

    down = deque(
        [
            answer(503, error_body(503, 30, "shutdown in progress")),
            answer(503, error_body(503, 1496, "not a leader")),
        ]
    )

    def respond(method: str, path: str, body: Any) -> tuple[Any, ...]:
        if path == "/_db/orders/_api/collection":
            return answer(200, COLLECTIONS)
        return down.popleft() if down else answer(201, cursor_body([]))

    server = scripted(respond=respond)
    store = open_store(server)
    recovery = Recovery(Engine(store, InlineQueue()), timeout=0.01)
    stop, scans = threading.Event(), []

    def scan_once() -> None:
        scans.append(recovery.run_once())
        if len(scans) == 2:
            stop.set()

    recover_every(recovery, scan_once, 0.01, stop=stop)
    assert len(scans) == 2 and not down
    store.close()


def test_a_save_answered_1457_is_read_back(scripted: Any) -> None:
    # 1457: the coordinator stopped waiting for the DB server, which may still apply the
    # save. Reading back decides: our document is there, so the save succeeded.
    wf = make_workflow()
    wf.revision = 1
    ours = {"_key": wf.id, "_id": f"{COLL}/{wf.id}", "_rev": "_x", **ArangoStore.to_document(wf, 2)}
    server = scripted(
        answer(200, COLLECTIONS),
        answer(500, error_body(500, 1457, "timeout in cluster operation")),
        answer(200, ours),
    )
    store = open_store(server)
    store.save(wf)
    assert wf.revision == 2
    assert [(m, p.split("?")[0]) for _, m, p in server.seen][1:] == [
        ("POST", "/_db/orders/_api/cursor"),
        ("GET", f"/_db/orders/_api/document/{COLL}/{wf.id}"),
    ]
    store.close()


def test_a_save_answered_1457_and_not_there_yet_is_unknown_and_an_outage(scripted: Any) -> None:
    wf = make_workflow()
    wf.revision = 1
    old = {"_key": wf.id, "_rev": "_x", **ArangoStore.to_document(another_writers(wf), 1)}
    server = scripted(
        answer(200, COLLECTIONS),
        answer(500, error_body(500, 1457, "timeout in cluster operation")),
        answer(200, old),
    )
    store = open_store(server)
    with pytest.raises(AdapterError) as caught:
        store.save(wf)
    text = str(caught.value)
    assert "was answered [HTTP 500][ERR 1457]" in text and "outcome is unknown" in text
    assert "still has revision 1" in text and wf.revision == 1
    assert is_outage(caught.value)
    store.close()


def test_a_create_without_an_answer_is_read_back(scripted: Any) -> None:
    # The insert's answer never comes (timeout 0.3 s); its document is found: created.
    wf = make_workflow()
    ours = {"_key": wf.id, "_rev": "_x", **ArangoStore.to_document(wf, 1)}
    server = scripted(
        answer(200, COLLECTIONS),
        answer(202, {"error": False, "_key": wf.id}, delay=0.6),
        answer(200, ours),
    )
    store = open_store(server, "&timeout=0.3")
    store.create(wf)
    assert wf.revision == 1
    store.close()


def test_a_save_whose_connection_broke_twice_is_read_back(scripted: Any) -> None:
    # Sent, the connection broke; sent again, it broke again: either send may have applied.
    # The stored document decides (here: ours, so saved), not "cannot reach".
    wf = make_workflow()
    wf.revision = 1
    ours = {"_key": wf.id, "_id": f"{COLL}/{wf.id}", "_rev": "_x", **ArangoStore.to_document(wf, 2)}
    server = scripted(answer(200, COLLECTIONS), ("drop",), ("drop",), answer(200, ours))
    store = open_store(server)
    store.save(wf)
    assert wf.revision == 2
    assert [m for _, m, _ in server.seen] == ["GET", "POST", "POST", "GET"]
    store.close()


def test_a_heartbeat_whose_connection_broke_is_an_outage(scripted: Any) -> None:
    server = scripted(answer(200, COLLECTIONS), ("drop",), ("drop",))
    with pytest.raises(AdapterError) as caught:
        open_store(server).heartbeat(WID, T0)
    assert "heartbeat of WF-20260208-5b193f0d got no answer (" in str(caught.value)
    assert is_outage(caught.value)


# -- finding 3: a listing never silently loses a batch -----------------------------------------

DOCS = [stored(make_workflow(created_at=T0 + timedelta(seconds=i))) for i in range(3)]


def test_a_listing_asks_for_a_retryable_cursor_and_refetches_a_lost_batch(scripted: Any) -> None:
    # ArangoDB 3.11+: with allowRetry each answer names the next batch; a fetch whose
    # connection broke is sent again for that same batch, then the cursor is deleted (the
    # server keeps a retryable cursor's last batch until then).
    server = scripted(
        answer(200, COLLECTIONS),
        answer(201, cursor_body(DOCS[:1], hasMore=True, id="77", nextBatchId="2")),
        ("drop",),
        answer(200, cursor_body(DOCS[1:2], hasMore=True, id="77", nextBatchId="3")),
        answer(200, cursor_body(DOCS[2:], id="77")),
        answer(202, {"error": False, "code": 202, "id": "77"}),
    )
    store = open_store(server)
    assert [w.id for w in store.list()] == [d["_key"] for d in DOCS]
    assert sent_queries(server)[0]["options"]["allowRetry"] is True
    assert [(m, p) for _, m, p in server.seen][2:] == [
        ("POST", "/_db/orders/_api/cursor/77/2"),
        ("POST", "/_db/orders/_api/cursor/77/2"),
        ("POST", "/_db/orders/_api/cursor/77/3"),
        ("DELETE", "/_db/orders/_api/cursor/77"),
    ]
    store.close()


def test_a_lost_batch_without_batch_ids_is_an_error_not_a_short_list(scripted: Any) -> None:
    # A server before 3.11 ignores allowRetry and names no batches: the fetch moves the
    # cursor on. Its connection breaks after the server sent batch 2, so sending it again
    # would get batch 3 and list 2 of 3 workflows with no error. It is not sent again.
    server = scripted(
        answer(200, COLLECTIONS),
        answer(201, cursor_body(DOCS[:1], hasMore=True, id="77")),
        ("drop",),
        answer(200, cursor_body(DOCS[2:], id="77")),  # what a second send would get
    )
    store = open_store(server)
    with pytest.raises(AdapterError) as caught:
        store.list()
    assert "connection broke while fetching the next batch of a list" in str(caught.value)
    assert is_outage(caught.value)
    assert [(m, p) for _, m, p in server.seen][1:] == [
        ("POST", "/_db/orders/_api/cursor"),
        ("POST", "/_db/orders/_api/cursor/77"),
    ]
    store.close()


def test_later_batches_are_paged_by_a_real_cursor() -> None:
    rec = Recorder(aql_answers=[Batches([DOCS[:2], DOCS[2:]])])
    got = store_with(rec).list()
    assert [w.id for w in got] == [d["_key"] for d in DOCS]
    (conn,) = rec.cursors
    assert conn.sent == [("post", "/_api/cursor/4711/2"), ("delete", "/_api/cursor/4711")]
    assert rec.called("execute")[0]["allow_retry"] is True


# -- finding 5: a heartbeat never writes over a newer one --------------------------------------


def test_the_heartbeat_writes_only_over_the_version_it_read(scripted: Any) -> None:
    # MAX() is computed from the version the statement read; ignoreRevs:false makes the
    # UPDATE fail with 1200 (and run again) if another heartbeat wrote a newer one meanwhile.
    server = scripted(answer(200, COLLECTIONS), answer(201, cursor_body([WID])))
    store = open_store(server)
    store.heartbeat(WID, T0)
    (statement,) = sent_queries(server)
    assert "UPDATE d WITH" in statement["query"]
    assert "ignoreRevs: false" in statement["query"]
    store.close()


# -- TLS and the client's settings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("tls=1&tls_verify=0&tls_ca={ca}", "tls_ca and tls_verify=0 contradict"),
        ("tls_verify=0", "apply to https only"),
        ("tls_ca={ca}", "apply to https only"),
        ("tls=1&tls_ca={ca}.missing", "tls_ca '{ca}.missing' does not exist"),
        ("long_timeout=0", "long_timeout must be more than 0"),
        ("long_timeout=soon", "long_timeout must be a number"),
        ("replication_factor=0", "replication_factor must be at least 1"),
        ("write_concern=two", "write_concern must be a number"),
        ("replication_factor=2&write_concern=3", "write_concern (3) cannot be more than"),
    ],
)
def test_contradictory_settings_are_refused(query: str, fragment: str, tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(AdapterError) as caught:
        ArangoSettings.from_url(f"arango://root@h/db?{query.format(ca=ca)}", env={})
    assert fragment.format(ca=ca) in str(caught.value)


def test_tls_settings_reach_the_sessions(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    for query, verify in (
        ("tls=1", True),
        ("tls=1&tls_verify=0", False),
        (f"tls=1&tls_ca={ca}", str(ca)),
    ):
        client = ArangoStore.from_url(f"arango://root@h/db?{query}")._conn.client_for()
        assert [session.verify for session in client._sessions] == [verify]
        client.close()


def test_the_environment_replaces_neither_the_ca_nor_tls_verify(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests merges REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE over a session's `verify` in every
    # request (Session.merge_environment_settings) unless the session does not trust the
    # environment: asked here exactly as Session.request asks it (issue 30, finding 6).
    ca, other = tmp_path / "ca.pem", tmp_path / "system.pem"
    for path in (ca, other):
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    url = "https://db.example:8529/_db/statesaga/_api/collection"
    for query, verify in (
        (f"tls=1&tls_ca={ca}", str(ca)),
        ("tls=1&tls_verify=0", False),
        ("tls=1", str(other)),  # no choice in the URL: requests' convention stands
    ):
        client = ArangoStore.from_url(f"arango://root@db.example/statesaga?{query}")._conn
        (session,) = client.client_for()._sessions
        merged = session.merge_environment_settings(url, {}, None, None, None)
        assert merged["verify"] == verify, query
        assert merged["proxies"] == {}, "an environment proxy was applied"


def test_an_environment_proxy_is_not_used(scripted: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real request through the real client: with HTTP_PROXY pointing at a closed port, it
    # still reaches the server directly.
    server = scripted(answer(200, COLLECTIONS), answer(200, COLLECTIONS))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("NO_PROXY", "")
    store = ArangoStore.from_url(f"arango://root@127.0.0.1:{server.port}/orders?initialize=0")
    store.initialize()
    assert server.seen == [(1, "GET", "/_db/orders/_api/collection")] * 2
    store.close()


# -- a real client against a real closed port -------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port with nothing listening (bound once to pick it, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    yield port


def test_a_server_that_is_down_fails_fast_with_a_clear_message(closed_port: int) -> None:
    store = ArangoStore.from_url(f"arango://alice:{SECRET_URL}@127.0.0.1:{closed_port}/orders")
    started = time.monotonic()
    with pytest.raises(AdapterError) as caught:
        store.get(WID)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"took {elapsed:.1f}s; python-arango's defaults take ~18s"
    text = str(caught.value)
    assert f"cannot reach ArangoDB at 127.0.0.1:{closed_port} (database 'orders')" in text
    assert "connect_retries=0" in text
    assert SECRET not in text and SECRET_URL not in text and SECRET not in repr(store)


def test_connect_retries_and_backoff_reach_the_http_client(closed_port: int) -> None:
    url = f"arango://root@127.0.0.1:{closed_port}/orders?connect_retries=3&backoff=0.2&timeout=1"
    store = ArangoStore.from_url(url)
    client = store._conn.client_for()
    try:
        assert client._host_resolver.max_tries == 1
        # The store's own HTTP client carries the timeout (ArangoClient ignores its
        # request_timeout argument once an HTTP client is passed, so none is passed).
        assert client._http is store._http and client.request_timeout == 1.0
        (session,) = client._sessions
        retry = session.get_adapter("http://127.0.0.1").max_retries
        # Connect failures only: no read retries, no status retries, answers handed over.
        assert (retry.total, retry.connect, retry.read, retry.status) == (None, 3, False, 0)
        assert not retry.status_forcelist and not retry.raise_on_status
        assert retry.backoff_factor == 0.2
    finally:
        client.close()
    # urllib3 sleeps backoff * 2**(n-1) before retry n>1: 0 + 0.4 + 0.8 s for three retries.
    started = time.monotonic()
    with pytest.raises(AdapterError, match="connect_retries=3"):
        store.initialize()
    assert 1.0 <= time.monotonic() - started < 5.0
