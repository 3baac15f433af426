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

import pytest
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
from statesaga.adapters.arango import (
    ENV_PASSWORD,
    ENV_USER,
    INDEXES,
    QUERIES,
    ArangoSettings,
    ArangoStore,
)
from statesaga.errors import AdapterError, ConflictError, DefinitionError, NotFoundError
from statesaga.models import WorkflowState, WorkflowStatus
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

    def insert(self, document: dict[str, Any], **kw: Any) -> Any:
        self.log.append(("insert", self.name, document, kw))
        return self._answer()

    def get(self, key: str, **kw: Any) -> Any:
        self.log.append(("get", self.name, key))
        return self._answer()

    def update(self, document: dict[str, Any], **kw: Any) -> Any:
        self.log.append(("update", self.name, document, kw))
        return self._answer()

    def add_index(self, data: dict[str, Any], **kw: Any) -> Any:
        self.log.append(("add_index", self.name, data))
        self.recorder.options.append((kw, self.recorder.timeout_probe()))
        return {"isNewlyCreated": True}


@dataclass
class Recorder:
    """Stands where python-arango's StandardDatabase goes; records calls, replays answers.

    `aql_answers` are what successive AQL queries return (a list of rows, or an exception to
    raise); `doc_answers` are what successive collection calls (insert/get/update) return.
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

    def __post_init__(self) -> None:
        self._aql = deque(self.aql_answers)
        self._docs = deque(self.doc_answers)
        self.aql = self  # db.aql.execute(...) lands on self.execute

    def execute(self, query: str, bind_vars: dict[str, Any] | None = None, **kw: Any) -> Any:
        self.log.append(("aql", query, bind_vars))
        self.options.append((kw, self.timeout_probe()))
        answer = self._aql.popleft()
        if isinstance(answer, Exception):
            raise answer
        return iter(answer)

    def collection(self, name: str) -> RecordingCollection:
        return RecordingCollection(name, self.log, self._docs, self)

    def has_collection(self, name: str) -> bool:
        self.log.append(("has_collection", name))
        return name in self.collections

    def create_collection(self, name: str, **kw: Any) -> Any:
        self.log.append(("create_collection", name))
        if name in self.collections:
            raise server_error(CollectionCreateError, 409, 1207, "duplicate name")
        self.collections.add(name)
        return self.collection(name)

    def has_database(self, name: str) -> bool:
        self.log.append(("has_database", name))
        if isinstance(self.databases, Exception):
            raise self.databases
        return name in self.databases

    def create_database(self, name: str, **kw: Any) -> bool:
        self.log.append(("create_database", name))
        return True

    def delete_collection(self, name: str, ignore_missing: bool = False) -> bool:
        self.log.append(("delete_collection", name, ignore_missing))
        return True

    @property
    def queries(self) -> list[tuple[str, dict[str, Any]]]:
        return [(q, b) for kind, q, b in (e for e in self.log if e[0] == "aql")]


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
        {"silent": True},
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
        "IN @@coll OPTIONS {ignoreRevs: false} RETURN NEW.revision"
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
# ConnectionError), which is what the recorder raises here.


def test_a_timed_out_save_that_committed_is_a_success() -> None:
    wf = make_workflow()
    wf.revision = 2
    ours = {"_key": wf.id, **ArangoStore.to_document(wf, 3)}
    rec = Recorder(aql_answers=[ReadTimeout("read timed out")], doc_answers=[ours])
    store_with(rec).save(wf)
    assert wf.revision == 3
    assert [e[0] for e in rec.log] == ["aql", "get"]


def test_a_timed_out_save_overtaken_by_another_writer_is_a_conflict() -> None:
    wf = make_workflow()
    wf.revision = 2
    rec = Recorder(
        aql_answers=[ReadTimeout("read timed out")],
        doc_answers=[stored(another_writers(wf), revision=3)],
    )
    with pytest.raises(ConflictError) as caught:
        store_with(rec).save(wf)
    assert (caught.value.expected, caught.value.actual) == (2, 3)
    assert wf.revision == 2


def test_a_timed_out_save_not_applied_yet_is_unknown_not_failed() -> None:
    wf = make_workflow()
    wf.revision = 2
    rec = Recorder(
        aql_answers=[ReadTimeout("read timed out")], doc_answers=[stored(wf, revision=2)]
    )
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
    rec = Recorder(
        aql_answers=[ReadTimeout("read timed out")], doc_answers=[ReadTimeout("read timed out")]
    )
    with pytest.raises(AdapterError, match="outcome is unknown; reading it back failed too"):
        store_with(rec).save(wf)


def test_heartbeat_updates_one_attribute_and_only_forwards() -> None:
    rec = Recorder(aql_answers=[[WID]])
    store_with(rec).heartbeat(WID, T0)
    ((query, binds),) = rec.queries
    assert query == (
        "FOR d IN @@coll FILTER d._key == @key "
        "UPDATE d WITH {heartbeat_at_us: MAX([d.heartbeat_at_us, @at])} IN @@coll "
        "RETURN NEW._key"
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
            {"check_rev": False, "silent": True},
        )
    ]


# -- initialize -------------------------------------------------------------------------------


def test_initialize_creates_the_collection_and_indexes() -> None:
    rec = Recorder()
    store = ArangoStore(ArangoSettings.from_url("arango://root@h/statesaga"), database=rec)
    rec.timeout_probe = lambda: store._http.read_timeout.get(None)
    store.initialize()
    store.initialize()  # idempotent, and done once per connection
    # Index builds on a populated collection take long: each gets long_timeout.
    assert rec.options == [({}, 300.0)] * 4
    assert rec.log == [
        ("has_collection", COLL),
        ("create_collection", COLL),
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


def test_first_use_initializes_when_allowed() -> None:
    wf = make_workflow()
    rec = Recorder(collections={COLL}, doc_answers=[stored(wf)])
    store = ArangoStore(ArangoSettings.from_url("arango://root@h/statesaga"), database=rec)
    store.get(wf.id)
    assert [e[0] for e in rec.log] == ["has_collection"] + ["add_index"] * len(INDEXES) + ["get"]


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
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    return caught.value


@pytest.mark.parametrize(
    ("exc", "kind", "fragment"),
    [
        (
            # arangod answers a wrong password, and a database the user has no grant on,
            # with 401 and errorNum 11 (CommTask::prepareExecution).
            server_error(
                ServerConnectionError, 401, 11, "not authorized to execute this request", "get"
            ),
            AdapterError,
            "authentication failed or no access to database 'orders' for user 'alice'",
        ),
        (
            server_error(DocumentGetError, 403, 11, "forbidden", "get"),
            AdapterError,
            "user 'alice' is not allowed to get",
        ),
        (
            server_error(DocumentGetError, 404, 1228, "database not found", "get"),
            AdapterError,
            "the database does not exist",
        ),
        (
            server_error(DocumentGetError, 404, 1203, "collection or view not found", "get"),
            AdapterError,
            "collection 'statesaga_workflows' does not exist",
        ),
        (
            server_error(DocumentGetError, 404, 1202, "document not found", "get"),
            NotFoundError,
            WID,
        ),
        (
            # arangod's answer while it shuts down (CommTask::prepareExecution, step 1).
            server_error(DocumentGetError, 503, 30, "shutdown in progress", "get"),
            AdapterError,
            "get failed: [HTTP 503][ERR 30] shutdown in progress",
        ),
        (
            # No server echoes the password today; _scrub keeps it so if one ever does.
            server_error(DocumentGetError, 500, 4, f"internal error near {SECRET}", "get"),
            AdapterError,
            "get failed: [HTTP 500][ERR 4] internal error near ***",
        ),
        (ArangoClientError("bad connection: refused"), AdapterError, "cannot reach"),
        (
            ConnectionAbortedError("Can't connect to host(s) within limit (1)"),
            AdapterError,
            "cannot reach",
        ),
        (ReadTimeout("read timed out"), AdapterError, "no answer to get within 5 s"),
    ],
)
def test_errors_are_translated(exc: Exception, kind: type[Exception], fragment: str) -> None:
    err = failing_get(exc)
    assert type(err) is kind
    assert fragment in str(err)
    if kind is AdapterError:
        assert "ArangoDB at db.example:8529 (database 'orders')" in str(err)


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
    store._client_for = lambda: client  # type: ignore[method-assign]
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


# -- the HTTP layer over real sockets ---------------------------------------------------------


class ScriptedHTTP:
    """A local TCP listener for testing statesaga's HTTP client (ArangoHTTPClient) over real
    sockets: for each request it reads, it does the next scripted thing: answer with a status
    and a JSON body (bodies as arangod writes them, cited where used), answer late, or close
    the connection without answering. It is not ArangoDB and decides nothing; it speaks just
    enough HTTP/1.1 (keep-alive, Content-Length) for requests' connection pool."""

    def __init__(self, script: list[tuple[Any, ...]]) -> None:
        self.script = deque(script)
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
        while self.script:
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
                self.bodies.append(reader.read(length))
                self.seen.append((number, method, path))
                action = self.script.popleft()
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

    def start(*script: tuple[Any, ...]) -> ScriptedHTTP:
        servers.append(ScriptedHTTP(list(script)))
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
        (30, "shutdown in progress", "connect failed: [HTTP 503][ERR 30] shutdown in progress"),
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
    ],
)
def test_contradictory_settings_are_refused(query: str, fragment: str, tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(AdapterError) as caught:
        ArangoSettings.from_url(f"arango://root@h/db?{query.format(ca=ca)}", env={})
    assert fragment.format(ca=ca) in str(caught.value)


def test_tls_settings_reach_the_sessions(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    for query, verify in (
        ("tls=1", True),
        ("tls=1&tls_verify=0", False),
        (f"tls=1&tls_ca={ca}", str(ca)),
    ):
        client = ArangoStore.from_url(f"arango://root@h/db?{query}")._client_for()
        assert [session.verify for session in client._sessions] == [verify]
        client.close()


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
    client = store._client_for()
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
