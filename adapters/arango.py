"""`arango://`: workflow documents in ArangoDB (python-arango), for many machines.

    arango://user:password@host:8529/dbname?collection_prefix=statesaga_&tls=0&initialize=1
           &connect_retries=0&timeout=5

One document per workflow, keyed by the workflow id (`_key`):

    {"_key": id, "revision": 3, "session_id": ..., "status": "RUNNING",
     "created_at_us": 1770543000123456, "heartbeat_at_us": null,
     "state": "<the whole WorkflowState (steps, compensations, history) as JSON text>"}

so a workflow reads in one round trip. The top-level attributes are what AQL filters, sorts and
checks on (times as integer microseconds since the epoch, UTC, so they compare as instants); the
state is kept as pydantic's JSON text rather than as nested attributes because ArangoDB does not
keep a float with an integral value a float (12.0 comes back as 12, arangodb/arangodb#2438), and
the store contract is an exact round trip of free-form values (params, results, input).

Credentials come from the URL or from STATESAGA_ARANGO_USER / STATESAGA_ARANGO_PASSWORD. The
password is never put in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote, unquote, urlsplit

try:
    import arango.errno as arango_errno
    from arango.client import ArangoClient
    from arango.exceptions import (
        ArangoClientError,
        ArangoServerError,
        CollectionCreateError,
        DatabaseCreateError,
        DocumentInsertError,
    )
    from arango.http import DefaultHTTPClient
    from requests import RequestException
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        f"the arango:// store needs python-arango ({exc}); "
        "install it with: pip install 'statesaga[arango]'"
    ) from exc

from statesaga.errors import AdapterError, ConflictError, DefinitionError, NotFoundError, Problem
from statesaga.models import WorkflowState, WorkflowStatus, readable_documents

__all__ = ["ArangoSettings", "ArangoStore", "QUERIES"]

ENV_USER = "STATESAGA_ARANGO_USER"
ENV_PASSWORD = "STATESAGA_ARANGO_PASSWORD"

# ArangoDB's document-key alphabet (max 254 bytes) less `%`, which python-arango would put
# into a URL path unescaped. Workflow ids (WF-20260208-5b193f0d) fit; anything else is
# refused here rather than turned into a confusing URL or server error.
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-:.@()+,=;$!*']{1,254}$")
# Traditional database and collection names (the ones every ArangoDB version accepts).
_DB_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
_COLLECTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,255}$")
_SYSTEM_FIELDS = frozenset({"_key", "_id", "_rev"})
_STORED_FIELDS = frozenset(
    {"revision", "session_id", "status", "created_at_us", "heartbeat_at_us", "state"}
)
_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_PARAMS = (
    "collection_prefix",
    "tls",
    "tls_verify",
    "tls_ca",
    "initialize",
    "connect_retries",
    "backoff",
    "timeout",
)
_HEARTBEAT_TRIES = 3

# Every query this adapter sends. Values are always bind variables and the collection a
# collection bind parameter (@@coll): nothing a caller passes is ever formatted into AQL.
QUERIES: dict[str, str] = {
    # The revision check and the write are one AQL statement, executed by the server as one
    # transaction: FILTER on our integer revision decides "conflict or not"; REPLACE with
    # ignoreRevs:false additionally compares ArangoDB's _rev of the document the FILTER read,
    # so a writer that committed in between makes the statement fail with error 1200 instead
    # of overwriting (RocksDB reports the same write-write conflict even without it). This
    # needs no _rev bookkeeping between get() and save(), and a losing writer gets either an
    # empty result or error 1200, both ConflictError. REPLACE, not UPDATE: the document is
    # exactly what the model says, no merged leftovers.
    # heartbeat_at_us is merged with MAX (which skips null) so a save carrying an older copy
    # cannot move the heartbeat back.
    "save": (
        "FOR d IN @@coll FILTER d._key == @key AND d.revision == @revision "
        "REPLACE d WITH MERGE(@doc, "
        "{heartbeat_at_us: MAX([d.heartbeat_at_us, @doc.heartbeat_at_us])}) "
        "IN @@coll OPTIONS {ignoreRevs: false} RETURN NEW.revision"
    ),
    # A heartbeat touches one attribute and leaves `revision` alone, so it never makes a
    # concurrent save lose its revision check; it only moves forward, as in the SQLite store.
    "heartbeat": (
        "FOR d IN @@coll FILTER d._key == @key "
        "UPDATE d WITH {heartbeat_at_us: MAX([d.heartbeat_at_us, @at])} IN @@coll "
        "RETURN NEW._key"
    ),
    # The listing variants are fixed strings chosen by which filters are present (not built
    # from values), so each one can use its persistent index. `_key` breaks ties in the order.
    "list": "FOR d IN @@coll SORT d.created_at_us, d._key RETURN d",
    "list_session": (
        "FOR d IN @@coll FILTER d.session_id == @session_id SORT d.created_at_us, d._key RETURN d"
    ),
    "list_status": (
        "FOR d IN @@coll FILTER d.status == @status SORT d.created_at_us, d._key RETURN d"
    ),
    "list_session_status": (
        "FOR d IN @@coll FILTER d.session_id == @session_id AND d.status == @status "
        "SORT d.created_at_us, d._key RETURN d"
    ),
    "stale": (
        "FOR d IN @@coll FILTER d.status IN @statuses "
        "AND (d.heartbeat_at_us == null OR d.heartbeat_at_us < @before) "
        "SORT d.created_at_us, d._key RETURN d"
    ),
}
_LIMIT = " LIMIT @limit"  # inserted before RETURN when a limit is given; @limit is bound

# Persistent indexes: each list query filters on the leading attribute and sorts on the
# creation time, so one index serves filter and sort; [status, heartbeat_at_us] serves
# list_stale. Not sparse: list_stale looks for a null heartbeat too.
INDEXES: tuple[tuple[str, ...], ...] = (
    ("session_id", "created_at_us"),
    ("status", "created_at_us"),
    ("status", "heartbeat_at_us"),
    ("created_at_us",),
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(value: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC, the zone every
    statesaga timestamp is made in (the same rule as the SQLite store)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _flag(name: str, text: str) -> bool:
    try:
        return _BOOL[text.strip().lower()]
    except KeyError:
        raise AdapterError(f"arango URL: {name} must be 0 or 1, not {text!r}") from None


def _number(name: str, text: str, kind: type[int] | type[float]) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise AdapterError(f"arango URL: {name} must be a number, not {text!r}") from None
    if value < 0:
        raise AdapterError(f"arango URL: {name} must not be negative")
    return value


@dataclass(frozen=True)
class ArangoSettings:
    """Where and how to connect; the password is left out of repr()."""

    host: str = "127.0.0.1"
    port: int = 8529
    database: str = "statesaga"
    username: str = "root"
    password: str = field(default="", repr=False)
    collection_prefix: str = "statesaga_"
    tls: bool = False
    tls_verify: bool = True
    tls_ca: str | None = None
    initialize: bool = True
    # Fail fast by default: python-arango's own defaults (3 resolver tries x 3 urllib3 retries
    # with exponential backoff) take ~18 s to report a server that is down.
    connect_retries: int = 0
    backoff: float = 0.5
    timeout: float = 5.0

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None) -> ArangoSettings:
        """Parse `arango://user:password@host:port/db?...`; credentials fall back to the env.

        Error messages are built from the parts, never from `url`, so they cannot echo the
        password.
        """
        env = os.environ if env is None else env
        parts = urlsplit(url)
        if parts.scheme != "arango":
            raise AdapterError(f"not an arango:// URL (scheme {parts.scheme!r})")
        try:
            port = parts.port
        except ValueError:
            raise AdapterError("arango URL: the port must be a number from 0 to 65535") from None
        username = unquote(parts.username) if parts.username else env.get(ENV_USER, "root")
        if parts.password is not None:
            password = unquote(parts.password)
        else:
            password = env.get(ENV_PASSWORD, "")
        database = unquote(parts.path.lstrip("/")) or "statesaga"
        if "/" in database or not _DB_RE.match(database):
            raise AdapterError(
                f"arango URL: {database!r} is not a valid database name "
                "(a letter, then letters, digits, _ or -; at most 64)"
            )
        values: dict[str, Any] = {}
        for key, text in parse_qsl(parts.query, keep_blank_values=True):
            if key not in _PARAMS:
                raise AdapterError(
                    f"arango URL: unknown parameter {key!r} (known: {', '.join(_PARAMS)})"
                )
            if key in ("tls", "initialize"):
                values[key] = _flag(key, text)
            elif key == "tls_verify":
                values[key] = _flag(key, text)
            elif key == "connect_retries":
                values[key] = _number(key, text, int)
            elif key in ("backoff", "timeout"):
                values[key] = _number(key, text, float)
            elif key == "tls_ca":
                values[key] = text or None
            else:
                values[key] = text
        settings = cls(
            host=parts.hostname or "127.0.0.1",
            port=port if port is not None else 8529,
            database=database,
            username=username,
            password=password,
            **values,
        )
        settings.check()
        return settings

    def check(self) -> None:
        if not _COLLECTION_RE.match(self.collection):
            raise AdapterError(
                f"arango: collection_prefix {self.collection_prefix!r} gives an invalid "
                f"collection name {self.collection!r} (a letter, then letters, digits, _ or -)"
            )
        if self.timeout == 0:
            raise AdapterError("arango URL: timeout must be more than 0 seconds")

    @property
    def collection(self) -> str:
        return f"{self.collection_prefix}workflows"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def where(self) -> str:
        """How error messages name the server: host:port and database, no credentials."""
        return f"ArangoDB at {self.address} (database {self.database!r})"

    def redacted_url(self) -> str:
        user = quote(self.username, safe="")
        secret = ":***" if self.password else ""
        query = f"collection_prefix={quote(self.collection_prefix, safe='')}"
        if self.tls:
            query += "&tls=1"
        return f"arango://{user}{secret}@{self.address}/{self.database}?{query}"


class ArangoStore:
    """Store workflow documents in one ArangoDB collection, with optimistic revisions."""

    def __init__(self, settings: ArangoSettings, *, database: Any = None) -> None:
        """`database` is a connected python-arango StandardDatabase; None connects lazily on
        first use (unit tests pass an object that records the calls made on it)."""
        settings.check()
        self.settings = settings
        self._db: Any = database
        self._client: Any = None
        self._initialized = False
        self._lock = threading.Lock()
        #: Documents listings found unreadable (and left out), id -> why, until read again.
        self.unreadable: dict[str, str] = {}

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> ArangoStore:
        """Open `arango://...`; keyword overrides (e.g. collection_prefix=f"run{n}_") win over
        the URL, so a test run can use its own collections in a shared database."""
        settings = ArangoSettings.from_url(url)
        if overrides:
            settings = replace(settings, **overrides)
        return cls(settings)

    def __repr__(self) -> str:
        return f"ArangoStore({self.settings.redacted_url()!r})"

    # -- connection -------------------------------------------------------------------------

    def _client_for(self) -> Any:
        s = self.settings
        # A bounded HTTP client: `connect_retries` urllib3 retries with `backoff`, each request
        # limited to `timeout` seconds. resolver_max_tries=1 because python-arango would
        # otherwise repeat the whole retried request 3 times for a single host.
        http = DefaultHTTPClient(
            request_timeout=s.timeout,
            retry_attempts=s.connect_retries,
            backoff_factor=s.backoff,
        )
        verify: bool | str | None = None
        if s.tls:
            verify = s.tls_ca if s.tls_ca else s.tls_verify
        return ArangoClient(
            hosts=s.endpoint,
            http_client=http,
            resolver_max_tries=1,
            verify_override=verify,
            request_timeout=s.timeout,
        )

    def _connect(self) -> Any:
        s = self.settings
        client = self._client_for()
        self._client = client
        with self._errors("connect"):
            try:
                return client.db(s.database, username=s.username, password=s.password, verify=True)
            except ArangoServerError as exc:
                if exc.error_code != arango_errno.DATABASE_NOT_FOUND:
                    raise
                if not s.initialize:
                    raise AdapterError(
                        f"{s.where}: the database does not exist "
                        "(create it, or allow it with initialize=1)"
                    ) from None
            # Only now is _system needed: a user with access to an existing database does
            # not need the rights to list or create databases.
            with self._errors("create the database"):
                sys_db = client.db("_system", username=s.username, password=s.password)
                if not sys_db.has_database(s.database):
                    try:
                        sys_db.create_database(s.database)
                    except DatabaseCreateError as exc:
                        if exc.error_code != arango_errno.DUPLICATE_NAME:  # lost a race: fine
                            raise
            return client.db(s.database, username=s.username, password=s.password, verify=True)

    def _database(self, schema: bool = True) -> Any:
        """The connected database, connecting on first use; with initialize=1 the collection
        and indexes are made on first use too, so `from_url(url)` alone gives a working store."""
        with self._lock:
            if self._db is None:
                self._db = self._connect()
            if schema and self.settings.initialize and not self._initialized:
                self._create_schema(self._db)
        return self._db

    def _create_schema(self, db: Any) -> None:
        name = self.settings.collection
        with self._errors("initialize"):
            if not db.has_collection(name):
                try:
                    db.create_collection(name)
                except CollectionCreateError as exc:
                    if exc.error_code != arango_errno.DUPLICATE_NAME:  # another process won
                        raise
            coll = db.collection(name)
            for fields in INDEXES:
                # Creating an index that exists with the same definition returns the existing
                # one, so this is safe to repeat. Not sparse: list_stale looks for null too.
                coll.add_index({"type": "persistent", "fields": list(fields)})
        self._initialized = True

    def initialize(self) -> None:
        """Connect; with initialize=1 create the database, the collection and its indexes
        (idempotent); with initialize=0 only check that they exist."""
        db = self._database()
        if not self.settings.initialize:
            with self._errors("initialize"):
                exists = db.has_collection(self.settings.collection)
            if not exists:
                raise AdapterError(
                    f"{self.settings.where}: collection {self.settings.collection!r} does not "
                    "exist (create it, or allow it with initialize=1)"
                )

    def close(self) -> None:
        with self._lock:
            client, self._client, self._db = self._client, None, None
            self._initialized = False
        if client is not None:
            client.close()

    def drop(self) -> None:
        """Delete this store's collection and close the store (teardown for test runs that
        use their own collection_prefix); works after close() too."""
        db = self._database(schema=False)
        with self._errors("drop"):
            db.delete_collection(self.settings.collection, ignore_missing=True)
        self.close()

    # -- errors -----------------------------------------------------------------------------

    @contextmanager
    def _errors(self, op: str, workflow_id: str | None = None) -> Iterator[None]:
        """Translate python-arango and transport errors into statesaga's errors.

        Raised `from None`: the message names the server, the operation and the cause in one
        line, and the suppressed chain keeps python-arango's request objects (the requests
        library's prepared request holds the Authorization header) out of tracebacks.
        """
        s = self.settings
        try:
            yield
        except (AdapterError, ConflictError, NotFoundError, DefinitionError):
            raise
        except ArangoServerError as exc:
            self._raise_server_error(exc, op, workflow_id)
        except ArangoClientError as exc:
            # client.db(verify=True) wraps a refused or timed-out connection this way.
            raise AdapterError(
                f"cannot reach {s.where} to {op}{self._budget()}: {self._scrub(exc.message)}"
            ) from None
        except (RequestException, OSError) as exc:
            # After connecting, python-arango lets these through: ConnectionAbortedError when
            # its host tries are used up, requests' ReadTimeout when a reply is too slow.
            raise AdapterError(
                f"cannot reach {s.where} to {op}{self._budget()}: "
                f"{type(exc).__name__}: {self._scrub(str(exc))}"
            ) from None

    def _raise_server_error(
        self, exc: ArangoServerError, op: str, workflow_id: str | None
    ) -> NoReturn:
        # Called from the except clause of _errors, hence `from None` (see there).
        s = self.settings
        code, http = exc.error_code, exc.http_code
        if http == 401:
            raise AdapterError(
                f"{s.where}: authentication failed for user {s.username!r} "
                f"(check the URL or {ENV_USER} / {ENV_PASSWORD})"
            ) from None
        if http == 403 or code == arango_errno.FORBIDDEN:
            raise AdapterError(f"{s.where}: user {s.username!r} is not allowed to {op}") from None
        if code == arango_errno.CONFLICT and workflow_id is not None:
            raise ConflictError(workflow_id, None, None) from None
        if code == arango_errno.DOCUMENT_NOT_FOUND and workflow_id is not None:
            raise NotFoundError(workflow_id) from None
        if code == arango_errno.DATABASE_NOT_FOUND:
            raise AdapterError(
                f"{s.where}: the database does not exist (initialize=1 creates it)"
            ) from None
        if code == arango_errno.DATA_SOURCE_NOT_FOUND:
            raise AdapterError(
                f"{s.where}: collection {s.collection!r} does not exist "
                "(call initialize(), or set initialize=1)"
            ) from None
        raise AdapterError(f"{s.where}: {op} failed: {self._scrub(exc.message)}") from None

    def _budget(self) -> str:
        # python-arango reports a refused connection only as "can't connect within limit";
        # saying what the limit was tells the reader whether to raise it.
        s = self.settings
        return f" (timeout {s.timeout:g} s, connect_retries={s.connect_retries})"

    def _scrub(self, text: str) -> str:
        # python-arango's messages do not contain the password today; this keeps it that way
        # if a server or library ever echoes it.
        secret = self.settings.password
        if secret:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
        return text

    # -- mapping ----------------------------------------------------------------------------

    def _source(self, key: str) -> str:
        return f"arango:{self.settings.database}/{self.settings.collection}/{key}"

    @staticmethod
    def to_document(wf: WorkflowState, revision: int) -> dict[str, Any]:
        """The stored form of `wf` at `revision` (without `_key`; see the module docstring)."""
        state = wf.model_copy(update={"revision": revision})
        return {
            "revision": revision,
            "session_id": wf.session_id,
            "status": WorkflowStatus(wf.status).value,
            "created_at_us": _micros(wf.created_at),
            "heartbeat_at_us": None if wf.heartbeat_at is None else _micros(wf.heartbeat_at),
            "state": state.to_json(),
        }

    def from_document(self, doc: Mapping[str, Any]) -> WorkflowState:
        """Validate a stored document; unknown or invalid fields raise DefinitionError."""
        key = str(doc.get("_key", "?"))
        source = self._source(key)
        unknown = sorted(set(doc) - _SYSTEM_FIELDS - _STORED_FIELDS)
        problems = [Problem("unknown attribute", source, None, name) for name in unknown]
        state, revision, heartbeat = (
            doc.get("state"),
            doc.get("revision"),
            doc.get("heartbeat_at_us"),
        )
        if not isinstance(state, str):
            problems.append(Problem("must be the workflow's JSON text", source, None, "state"))
        if not isinstance(revision, int) or isinstance(revision, bool):
            problems.append(Problem("must be an integer", source, None, "revision"))
        if heartbeat is not None and (
            not isinstance(heartbeat, int) or isinstance(heartbeat, bool)
        ):
            problems.append(Problem("must be an integer or null", source, None, "heartbeat_at_us"))
        if problems:
            raise DefinitionError(problems)
        assert isinstance(state, str) and isinstance(revision, int)  # checked just above
        wf = WorkflowState.from_json(state, source=source)
        # The top-level attributes are authoritative: a heartbeat updates only
        # heartbeat_at_us, and the revision is what the save's check compared.
        wf.revision = revision
        if heartbeat is not None and (
            wf.heartbeat_at is None or _micros(wf.heartbeat_at) < heartbeat
        ):
            wf.heartbeat_at = _from_micros(heartbeat)
        return wf

    # -- the Store protocol -----------------------------------------------------------------

    def _bind(self, **values: Any) -> dict[str, Any]:
        return {"@coll": self.settings.collection, **values}

    def _run(self, query: str, bind_vars: dict[str, Any], op: str, wid: str | None) -> Any:
        db = self._database()
        with self._errors(op, wid):
            return [row for row in db.aql.execute(query, bind_vars=bind_vars)]

    def create(self, wf: WorkflowState) -> None:
        if not _KEY_RE.match(wf.id):
            raise AdapterError(
                f"{self.settings.where}: workflow id {wf.id!r} is not a valid ArangoDB key "
                "(letters, digits and _-:.@()+,=;$!*' only, at most 254)"
            )
        doc = {"_key": wf.id, **self.to_document(wf, 1)}
        db = self._database()
        duplicate = False
        with self._errors("create", wf.id):
            try:
                db.collection(self.settings.collection).insert(doc, silent=True)
            except DocumentInsertError as exc:
                if exc.error_code != arango_errno.UNIQUE_CONSTRAINT_VIOLATED:
                    raise
                duplicate = True
        if duplicate:
            raise ConflictError(wf.id, None, self._stored_revision(wf.id))
        wf.revision = 1

    def _fetch(self, workflow_id: str) -> dict[str, Any] | None:
        if not _KEY_RE.match(workflow_id):
            return None  # cannot be stored under this id, so it is not there
        db = self._database()
        with self._errors("get", workflow_id):
            doc: dict[str, Any] | None = db.collection(self.settings.collection).get(workflow_id)
        return doc

    def _stored_revision(self, workflow_id: str) -> int | None:
        """The stored revision, for a conflict's fields only (read after the fact)."""
        try:
            doc = self._fetch(workflow_id)
        except AdapterError:
            return None
        rev = doc.get("revision") if doc else None
        return rev if isinstance(rev, int) else None

    def get(self, workflow_id: str) -> WorkflowState:
        doc = self._fetch(workflow_id)
        if doc is None:
            raise NotFoundError(workflow_id)
        return self.from_document(doc)

    def save(self, wf: WorkflowState) -> None:
        if not _KEY_RE.match(wf.id):
            raise NotFoundError(wf.id)
        binds = self._bind(
            key=wf.id, revision=wf.revision, doc=self.to_document(wf, wf.revision + 1)
        )
        try:
            saved = self._run(QUERIES["save"], binds, "save", wf.id)
        except ConflictError:
            raise ConflictError(wf.id, wf.revision, self._stored_revision(wf.id)) from None
        if not saved:
            # Nothing matched: no such document, or another revision. One more read tells
            # which; it is only paid on this failure path.
            doc = self._fetch(wf.id)
            if doc is None:
                raise NotFoundError(wf.id)
            rev = doc.get("revision")
            raise ConflictError(wf.id, wf.revision, rev if isinstance(rev, int) else None)
        wf.revision += 1

    def heartbeat(self, workflow_id: str, at: datetime) -> None:
        if not _KEY_RE.match(workflow_id):
            raise NotFoundError(workflow_id)
        binds = self._bind(key=workflow_id, at=_micros(at))
        for attempt in range(1, _HEARTBEAT_TRIES + 1):
            try:
                touched = self._run(QUERIES["heartbeat"], binds, "heartbeat", workflow_id)
            except ConflictError:
                # A concurrent save wrote the document first (error 1200); a heartbeat has no
                # revision to defend, so writing it again is correct.
                if attempt == _HEARTBEAT_TRIES:
                    raise
                continue
            if not touched:
                raise NotFoundError(workflow_id)
            return

    def list_stale(
        self, before: datetime, statuses: Iterable[WorkflowStatus]
    ) -> list[WorkflowState]:
        wanted = sorted({WorkflowStatus(s).value for s in statuses})
        if not wanted:
            return []
        binds = self._bind(statuses=wanted, before=_micros(before))
        return self._readable(self._run(QUERIES["stale"], binds, "list", None))

    def _readable(self, docs: Iterable[dict[str, Any]]) -> list[WorkflowState]:
        """Listings leave out a document that cannot be read (named in `unreadable`)."""
        read: list[WorkflowState] = readable_documents(
            ((str(d.get("_key", "?")), partial(self.from_document, d)) for d in docs),
            self.unreadable,
        )
        return read

    def write_raw(self, workflow_id: str, text: str) -> None:
        """Replace the stored JSON text of an existing workflow, bypassing validation.

        For tests only (the conformance suite's `write_raw` hook): it shows what reading a
        document written by another program or version does.
        """
        db = self._database()
        with self._errors("write_raw", workflow_id):
            db.collection(self.settings.collection).update(
                {"_key": workflow_id, "state": text}, check_rev=False, silent=True
            )

    # Last in the class: below this, `list` would name this method in annotations.
    def list(
        self,
        *,
        session_id: str | None = None,
        status: WorkflowStatus | None = None,
        limit: int | None = None,
    ) -> list[WorkflowState]:
        name = "list"
        binds = self._bind()
        if session_id is not None:
            name, binds["session_id"] = "list_session", session_id
        if status is not None:
            name = "list_session_status" if session_id is not None else "list_status"
            binds["status"] = WorkflowStatus(status).value
        query = QUERIES[name]
        if limit is not None:
            query = query.replace(" RETURN d", _LIMIT + " RETURN d")
            binds["limit"] = max(int(limit), 0)
        return self._readable(self._run(query, binds, "list", None))
