"""`arango://`: workflow documents in ArangoDB (python-arango), for many machines.

    arango://user:password@host:8529/dbname?collection_prefix=statesaga_&tls=0&initialize=1
           &connect_retries=0&timeout=5&long_timeout=300

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

import json
import os
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
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
    from arango.response import Response
    from requests import ConnectionError as RequestsConnectionError
    from requests import ReadTimeout, RequestException, Session
    from requests.adapters import HTTPAdapter
    from urllib3.exceptions import ProtocolError
    from urllib3.util.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        f"the arango:// store needs python-arango ({exc}); "
        "install it with: pip install 'statesaga[arango]'"
    ) from exc

from statesaga.errors import AdapterError, ConflictError, DefinitionError, NotFoundError, Problem
from statesaga.models import WorkflowState, WorkflowStatus

from ._store import (  # noqa: TID251 (relative, so mypy reads the base class)
    MISSING,
    WRITTEN,
    DocumentStore,
    Outcome,
    Record,
    Stored,
    taken,
)

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
    "long_timeout",
)
# How often a one-document write runs again after meeting a concurrent write (error 1200), and
# the longest pause between two runs (doubled from 1 ms, with jitter).
_WRITE_TRIES = 8
_WRITE_PAUSE_MAX = 0.05

# Every query this adapter sends. Values are always bind variables and the collection a
# collection bind parameter (@@coll): nothing a caller passes is ever formatted into AQL.
QUERIES: dict[str, str] = {
    # The revision check and the write are one AQL statement, one transaction on the server.
    # The integer FILTER on `revision` alone decides "conflict or not":
    #
    # - No match: another save took the revision (or the document is gone); save() reads the
    #   document back to say which.
    # - Error 1200 only says "the document changed after this statement's snapshot": by a
    #   save, or by a heartbeat, which changes `_rev` but not `revision`. ignoreRevs:false
    #   makes the REPLACE apply only to the very version the FILTER read (same `_rev`), and
    #   RocksDB's snapshot check reports a document written after the snapshot the same way
    #   (ArangoDB begins every transaction with set_snapshot: RocksDBTrxBaseMethods::
    #   createTransaction; docs, "Locking and isolation": snapshot isolation, write-write
    #   conflicts fail with 1200). So a 1200 is never taken as a conflict by itself: _write
    #   runs the statement again, on a new snapshot, and the FILTER decides.
    #
    # Why not drop the `_rev` comparison instead: a heartbeat would still fail the save with
    # 1200 through the snapshot check, and "no lost update" would rest on how the engine
    # validates writes against the snapshot (which changed in 3.11, when writes to one
    # document became serialized on key locks). Keeping it costs nothing.
    #
    # REPLACE, not UPDATE: the document is exactly what the model says, no merged leftovers.
    # heartbeat_at_us is merged with MAX (which skips null) so a save carrying an older copy
    # cannot move the heartbeat back.
    "save": (
        "FOR d IN @@coll FILTER d._key == @key AND d.revision == @revision "
        "REPLACE d WITH MERGE(@doc, "
        "{heartbeat_at_us: MAX([d.heartbeat_at_us, @doc.heartbeat_at_us])}) "
        "IN @@coll OPTIONS {ignoreRevs: false} RETURN NEW.revision"
    ),
    # A heartbeat touches one attribute and leaves `revision` alone, so a save's FILTER never
    # fails because of it (a save that meets it mid-flight gets 1200 and runs again); it
    # only moves forward, as in the SQLite store.
    "heartbeat": (
        "FOR d IN @@coll FILTER d._key == @key "
        "UPDATE d WITH {heartbeat_at_us: MAX([d.heartbeat_at_us, @at])} IN @@coll "
        "RETURN NEW._key"
    ),
    # The listing variants are fixed strings chosen by which filters are present (not built
    # from values), so each one reads its persistent index in order: equality on the leading
    # attribute, then (created_at_us, _key) already sorted, and a LIMIT stops the scan early.
    # `_key` breaks ties in the order.
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
    # AQL orders null before every number, so `< @before` also matches a heartbeat that is
    # null or missing (never beaten); written as one range, [status, heartbeat_at_us] serves
    # it as one index lookup per status. Its result (the stale ones only) is sorted in memory.
    "stale": (
        "FOR d IN @@coll FILTER d.status IN @statuses AND d.heartbeat_at_us < @before "
        "SORT d.created_at_us, d._key RETURN d"
    ),
}
_LIMIT = " LIMIT @limit"  # inserted before RETURN when a limit is given; @limit is bound

# Persistent indexes. The first three serve the list queries' filter *and* sort (equality on
# the leading attribute leaves the rest in index order; indexing `_key` is allowed, only
# `_id` is not); [status, heartbeat_at_us] serves list_stale. Not sparse: list_stale looks for
# a null heartbeat too. Built in the background, so initialize() on a populated collection
# does not hold the collection's write lock while the index is built.
INDEXES: tuple[tuple[str, ...], ...] = (
    ("session_id", "created_at_us", "_key"),
    ("status", "created_at_us", "_key"),
    ("created_at_us", "_key"),
    ("status", "heartbeat_at_us"),
)


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
    # `timeout` bounds connecting and every one-document request (get, create, save,
    # heartbeat); `long_timeout` bounds what grows with the collection: index builds,
    # listings, creating or dropping the collection or database.
    timeout: float = 5.0
    long_timeout: float = 300.0

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
            elif key in ("backoff", "timeout", "long_timeout"):
                values[key] = _number(key, text, float)
            elif key == "tls_ca":
                values[key] = text or None
            else:
                values[key] = text
        ca = values.get("tls_ca")
        if ca and not os.path.exists(ca):
            raise AdapterError(f"arango URL: tls_ca {ca!r} does not exist")
        if not values.get("tls", False) and ("tls_verify" in values or "tls_ca" in values):
            raise AdapterError(
                "arango URL: tls_verify and tls_ca apply to https only; add tls=1 (or drop them)"
            )
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
        for name in ("timeout", "long_timeout"):
            if getattr(self, name) <= 0:
                raise AdapterError(f"arango URL: {name} must be more than 0 seconds")
        if self.tls_ca and not self.tls_verify:
            # requests would verify against the CA and ignore tls_verify=0: say so instead.
            raise AdapterError(
                "arango URL: tls_ca and tls_verify=0 contradict each other (a CA is for "
                "verifying); keep one"
            )

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


class _OutcomeUnknown(Exception):
    """A write was sent but no answer came within its timeout: it may or may not apply."""


class _Busy(Exception):
    """A one-document write met a concurrent write (error 1200); run it again."""


def _dropped_connection(exc: RequestsConnectionError) -> bool:
    """True when a connection broke after it was made (a pooled keep-alive connection the
    server had closed, a reset mid-request): requests wraps urllib3's ProtocolError ("Connection
    aborted.") directly. Refused or timed-out connects come wrapped in MaxRetryError instead."""
    return bool(exc.args) and isinstance(exc.args[0], ProtocolError)


def _error_message(body: str) -> str:
    """The errorMessage of an ArangoDB error body, or the start of the text."""
    try:
        message = json.loads(body).get("errorMessage")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else body[:200]


class ArangoHTTPClient(DefaultHTTPClient):
    """python-arango's HTTP client with statesaga's retry and timeout rules.

    - Connecting fails fast: `connect_retries` retries (default 0) with `backoff`, and only for
      connection failures (urllib3 `connect`); no retry on reads, no retry on status codes.
      Every answer the server gives, 429 and 5xx included, is handed to python-arango, which
      raises it as a server error (python-arango's client would turn a 429/5xx to a GET into
      requests' RetryError once its retries are spent, reported as "cannot reach").
    - A request whose connection broke after it was made (typically a keep-alive connection
      the server closed while it sat in the pool) is sent once more on a new connection.
      Every request this store makes tolerates one replay: reads and index creation are
      idempotent, a heartbeat only moves forward, and a replayed create or save finds its
      own write when it reads back (see ArangoStore.create / save).
    - The read timeout is per operation: `timeout` unless a caller set `read_timeout` for the
      current thread (ArangoStore does so for long operations); connecting is always bounded
      by `timeout`.

    `request_timeout` stays set as python-arango's ArangoClient.request_timeout reports it;
    ArangoClient's own `request_timeout` argument is ignored once an HTTP client is passed.
    """

    def __init__(self, settings: ArangoSettings) -> None:
        super().__init__(
            request_timeout=settings.timeout,
            retry_attempts=settings.connect_retries,
            backoff_factor=settings.backoff,
        )
        self.connect_timeout = settings.timeout
        # A ContextVar, so one thread's long listing does not lengthen another's save.
        self.read_timeout: ContextVar[float] = ContextVar("arango_read_timeout")
        # The status and text of the error answer this thread last received, None after a
        # request that got no answer or a good one: python-arango turns a 503 whose errorNum
        # is 503 (arangod starting up or in maintenance) into a connection error of its own,
        # and this tells the two apart.
        self.last_answer: ContextVar[tuple[int, str] | None] = ContextVar("arango_last_answer")

    def create_session(self, host: str) -> Session:
        retry = Retry(
            total=None,
            connect=self._retry_attempts,
            read=False,
            redirect=False,
            status=0,
            other=0,
            backoff_factor=self._backoff_factor,
            status_forcelist=(),
            raise_on_status=False,
        )
        adapter = HTTPAdapter(
            max_retries=retry,
            pool_connections=self._pool_connections,
            pool_maxsize=self._pool_maxsize,
        )
        session = Session()
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def send_request(
        self,
        session: Session,
        method: str,
        url: str,
        headers: MutableMapping[str, str] | None = None,
        params: MutableMapping[str, str] | None = None,
        data: Any = None,
        auth: tuple[str, str] | None = None,
    ) -> Response:
        timeout = (self.connect_timeout, self.read_timeout.get(self.connect_timeout))
        self.last_answer.set(None)
        for attempt in (1, 2):
            try:
                response = session.request(
                    method=method,
                    url=url,
                    params=params,
                    data=data,
                    headers=headers,
                    auth=auth,
                    timeout=timeout,
                )
                break
            except RequestsConnectionError as exc:
                if attempt == 2 or not _dropped_connection(exc):
                    raise
        if response.status_code >= 400:  # error bodies are small; results are not kept
            self.last_answer.set((response.status_code, response.text))
        return Response(
            method=method,
            url=response.url,
            headers=response.headers,
            status_code=response.status_code,
            status_text=response.reason,
            raw_body=response.text,
        )


class ArangoStore(DocumentStore):
    """Store workflow documents in one ArangoDB collection, with optimistic revisions."""

    def __init__(self, settings: ArangoSettings, *, database: Any = None) -> None:
        """`database` is a connected python-arango StandardDatabase; None connects lazily on
        first use (unit tests pass an object that records the calls made on it)."""
        super().__init__()
        settings.check()
        self.settings = settings
        self._db: Any = database
        self._client: Any = None
        self._initialized = False
        self._lock = threading.Lock()
        self._http = ArangoHTTPClient(settings)

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
        verify: bool | str | None = None
        if s.tls:
            verify = s.tls_ca or s.tls_verify  # check() refuses tls_ca with tls_verify=0
        # resolver_max_tries=1: python-arango would otherwise send a request again on every
        # connection error, up to 3 times for one host; ArangoHTTPClient decides instead.
        return ArangoClient(
            hosts=s.endpoint,
            http_client=self._http,
            resolver_max_tries=1,
            verify_override=verify,
        )

    @contextmanager
    def _long(self) -> Iterator[None]:
        """Requests made inside get `long_timeout` to answer instead of `timeout`."""
        token = self._http.read_timeout.set(self.settings.long_timeout)
        try:
            yield
        finally:
            self._http.read_timeout.reset(token)

    def _connect(self, create: bool) -> Any:
        """The connected database; None if it does not exist and `create` is false.

        The server answers a missing database with 404 (1228) to root, but with 401 (errorNum
        11, "not authorized to execute this request") to a user without a grant on that name,
        so that names cannot be guessed (arangod CommTask::prepareExecution). A 401 therefore
        means a wrong password, no grant, or no such database: only _system can tell, and
        only a user allowed to read it.
        """
        s = self.settings
        if self._client is not None:  # an earlier attempt's, which failed
            self._client.close()
        client = self._client_for()
        self._client = client
        with self._errors("connect"):
            try:
                return client.db(s.database, username=s.username, password=s.password, verify=True)
            except ArangoServerError as exc:
                if exc.http_code != 401 and exc.error_code != arango_errno.DATABASE_NOT_FOUND:
                    raise
                denied = exc.http_code == 401
        exists = self._has_database(client)
        if exists and not denied:
            pass  # 1228, yet it exists now: another process just created it; connect again
        elif exists is not False:
            # It exists (so the password or the grant is wrong), or _system would not say.
            raise AdapterError(
                f"{s.where}: authentication failed or no access to database {s.database!r} "
                f"for user {s.username!r} (check the URL or {ENV_USER} / {ENV_PASSWORD}, and "
                "the user's database permissions)"
            )
        elif not create:
            return None
        elif not s.initialize:
            raise AdapterError(
                f"{s.where}: the database does not exist (create it, or allow it with initialize=1)"
            )
        else:
            self._create_database(client)
        with self._errors("connect"):
            return client.db(s.database, username=s.username, password=s.password, verify=True)

    def _create_database(self, client: Any) -> None:
        s = self.settings
        with self._errors("create the database"), self._long():
            sys_db = client.db("_system", username=s.username, password=s.password)
            try:
                sys_db.create_database(s.database)
            except DatabaseCreateError as exc:
                if exc.error_code != arango_errno.DUPLICATE_NAME:  # lost a race: fine
                    raise

    def _has_database(self, client: Any) -> bool | None:
        """Whether the database exists, asked of _system; None when this user may not ask
        (no access to _system, or the password is wrong)."""
        s = self.settings
        with self._errors("look up the database"):
            sys_db = client.db("_system", username=s.username, password=s.password)
            try:
                return bool(sys_db.has_database(s.database))
            except ArangoServerError as exc:
                if exc.http_code in (401, 403):
                    return None
                raise

    def _database(self, schema: bool = True, create: bool = True) -> Any:
        """The connected database, connecting on first use; with initialize=1 the database,
        collection and indexes are made on first use too, so `from_url(url)` alone gives a
        working store. None only when `create` is false and the database does not exist."""
        with self._lock:
            if self._db is None:
                self._db = self._connect(create)
            if self._db is not None and schema and self.settings.initialize:
                if not self._initialized:
                    self._create_schema(self._db)
        return self._db

    def _create_schema(self, db: Any) -> None:
        name = self.settings.collection
        with self._errors("initialize"), self._long():
            if not db.has_collection(name):
                try:
                    db.create_collection(name)
                except CollectionCreateError as exc:
                    if exc.error_code != arango_errno.DUPLICATE_NAME:  # another process won
                        raise
            coll = db.collection(name)
            for fields in INDEXES:
                # Creating an index that exists with the same definition returns the existing
                # one, so this is safe to repeat.
                coll.add_index({"type": "persistent", "fields": list(fields), "inBackground": True})
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
        use their own collection_prefix); works after close() too. A missing database or
        collection is nothing to drop: neither is created for it."""
        db = self._database(schema=False, create=False)
        if db is not None:
            with self._errors("drop"), self._long():
                db.delete_collection(self.settings.collection, ignore_missing=True)
        self.close()

    # -- errors -----------------------------------------------------------------------------

    @contextmanager
    def _errors(
        self, op: str, workflow_id: str | None = None, *, write: bool = False
    ) -> Iterator[None]:
        """Translate python-arango and transport errors into statesaga's errors.

        Raised `from None`: the message names the server, the operation and the cause in one
        line, and the suppressed chain keeps python-arango's request objects (the requests
        library's prepared request holds the Authorization header) out of tracebacks.
        With `write`, error 1200 raises _Busy and a read timeout _OutcomeUnknown, for the
        caller to decide.
        """
        s = self.settings
        try:
            yield
        except (AdapterError, ConflictError, NotFoundError, DefinitionError):
            raise
        except ArangoServerError as exc:
            if write and exc.error_code == arango_errno.CONFLICT:
                raise _Busy() from None
            self._raise_server_error(exc, op, workflow_id)
        except ArangoClientError as exc:
            # client.db(verify=True) wraps a refused or timed-out connection this way.
            self._raise_unreachable(op, self._scrub(exc.message))
        except ReadTimeout:
            # Connected and sent, but no answer in time: the server is there, and busy.
            if write:
                raise _OutcomeUnknown() from None
            limit = self._http.read_timeout.get(s.timeout)
            raise AdapterError(
                f"{s.where}: no answer to {op} within {limit:g} s "
                f"(timeout={s.timeout:g}, long_timeout={s.long_timeout:g})"
            ) from None
        except (RequestException, OSError) as exc:
            # After connecting, python-arango lets these through: ConnectionAbortedError when
            # its host tries are used up (a refused connection included).
            self._raise_unreachable(op, f"{type(exc).__name__}: {self._scrub(str(exc))}")

    def _raise_unreachable(self, op: str, detail: str) -> NoReturn:
        # Called from the except clauses of _errors, hence `from None` (see there).
        s = self.settings
        answered = self._http.last_answer.get(None)
        if answered is not None:
            # python-arango's "can't connect" after an answer: a 503 with errorNum 503.
            raise AdapterError(
                f"{s.where}: the server answered {op} with HTTP {answered[0]}: "
                f"{self._scrub(_error_message(answered[1]))} (starting up or in "
                "maintenance mode; try again later)"
            ) from None
        raise AdapterError(f"cannot reach {s.where} to {op}{self._budget()}: {detail}") from None

    def _raise_server_error(
        self, exc: ArangoServerError, op: str, workflow_id: str | None
    ) -> NoReturn:
        # Called from the except clause of _errors, hence `from None` (see there).
        s = self.settings
        code, http = exc.error_code, exc.http_code
        if http == 401:
            raise AdapterError(
                f"{s.where}: authentication failed or no access to database {s.database!r} "
                f"for user {s.username!r} (check the URL or {ENV_USER} / {ENV_PASSWORD})"
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
        return _document(Record.of(wf, revision))

    def from_document(self, doc: Mapping[str, Any]) -> WorkflowState:
        """Validate a stored document; unknown or invalid fields raise DefinitionError."""
        return self._load(self._stored(doc))

    def _stored(self, doc: Mapping[str, Any]) -> Stored:
        """A document as the store algorithm reads it, with what is wrong with its top-level
        attributes (raised when it is loaded). They are authoritative: a heartbeat updates
        only heartbeat_at_us, and the revision is what the save's check compared."""
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
            return Stored(key, "", problems=tuple(problems))
        assert isinstance(state, str) and isinstance(revision, int)  # checked just above
        return Stored(key, state, heartbeat, revision)

    # -- the Store protocol -----------------------------------------------------------------

    def _bind(self, **values: Any) -> dict[str, Any]:
        return {"@coll": self.settings.collection, **values}

    def _run(self, query: str, bind_vars: dict[str, Any], op: str) -> list[Any]:
        """A listing: its requests (the cursor's later batches too) get `long_timeout`, and
        the server stops the query when nobody waits for it any more."""
        db = self._database()
        limit = self.settings.long_timeout
        with self._errors(op), self._long():
            return [row for row in db.aql.execute(query, bind_vars=bind_vars, max_runtime=limit)]

    def _write(self, query: str, bind_vars: dict[str, Any], op: str, wid: str) -> list[Any]:
        """Run a one-document write statement; again when it meets a concurrent write.

        Error 1200 means the document changed after the statement's snapshot (see QUERIES
        ["save"]); the statement was aborted, so running it again is safe, and its FILTER
        decides again on a new snapshot. Pauses double from 1 ms, with jitter, so two writers
        that keep meeting fall out of step. `max_runtime` has the server stop a statement
        that outlives the client's wait, so a timed-out write does not apply much later.
        Raises _OutcomeUnknown when no answer came within `timeout`.
        """
        db = self._database()
        for attempt in range(_WRITE_TRIES):
            try:
                with self._errors(op, wid, write=True):
                    cursor = db.aql.execute(
                        query, bind_vars=bind_vars, max_runtime=self.settings.timeout
                    )
                    return [row for row in cursor]
            except _Busy:
                pause = min(_WRITE_PAUSE_MAX, 0.001 * 2**attempt)
                time.sleep(random.uniform(pause / 2, pause))
        raise AdapterError(
            f"{self.settings.where}: {op} of {wid} met a concurrent write to the same "
            f"document (error 1200) {_WRITE_TRIES} times in a row"
        )

    def _insert(self, record: Record) -> Outcome:
        if not _KEY_RE.match(record.id):
            raise AdapterError(
                f"{self.settings.where}: workflow id {record.id!r} is not a valid ArangoDB key "
                "(letters, digits and _-:.@()+,=;$!*' only, at most 254)"
            )
        doc = {"_key": record.id, **_document(record)}
        db = self._database()
        with self._errors("create", record.id):
            try:
                db.collection(self.settings.collection).insert(doc, silent=True)
                return WRITTEN
            except DocumentInsertError as exc:
                if exc.error_code != arango_errno.UNIQUE_CONSTRAINT_VIOLATED:
                    raise
        stored = self._fetch(record.id)
        # A replayed insert (the connection broke after the first one was sent) finds its own
        # document: that is a success, not a duplicate.
        if stored is not None and self._is_ours(stored, doc):
            return WRITTEN
        rev = stored.get("revision") if stored else None
        return taken(rev if isinstance(rev, int) else None)

    @staticmethod
    def _is_ours(stored: Mapping[str, Any], doc: Mapping[str, Any]) -> bool:
        """Whether `stored` is the document `doc` wrote: same revision, same JSON text (which
        holds the revision, the updated_at time and the history, so another writer's
        document differs). heartbeat_at_us is left out: a heartbeat may have moved it since."""
        return bool(
            stored.get("revision") == doc["revision"] and stored.get("state") == doc["state"]
        )

    def _fetch(self, workflow_id: str) -> dict[str, Any] | None:
        if not _KEY_RE.match(workflow_id):
            return None  # cannot be stored under this id, so it is not there
        db = self._database()
        with self._errors("get", workflow_id):
            doc: dict[str, Any] | None = db.collection(self.settings.collection).get(workflow_id)
        return doc

    def _read(self, workflow_id: str) -> Stored | None:
        doc = self._fetch(workflow_id)
        return None if doc is None else self._stored(doc)

    def _replace(self, record: Record, expected: int) -> Outcome:
        if not _KEY_RE.match(record.id):
            return MISSING
        doc = _document(record)
        binds = self._bind(key=record.id, revision=expected, doc=doc)
        timed_out = False
        try:
            if self._write(QUERIES["save"], binds, "save", record.id):
                return WRITTEN
        except _OutcomeUnknown:
            timed_out = True
        # Nothing matched, or no answer came: the stored document tells what happened. Only
        # paid on these paths.
        try:
            stored = self._fetch(record.id)
        except AdapterError as exc:
            if not timed_out:
                raise
            raise AdapterError(
                f"{self._unknown(record.id, expected)}; reading it back failed too: {exc}"
            ) from None
        if stored is None:
            return MISSING
        if self._is_ours(stored, doc):
            # Our statement did commit: the answer was lost (timeout), or the request was
            # replayed after a broken connection and the replay found the revision taken.
            return WRITTEN
        rev = stored.get("revision")
        if timed_out and rev == expected:
            # Not applied yet, but the statement may still be queued or running on the
            # server: neither "saved" nor "conflict" would be true.
            raise AdapterError(
                f"{self._unknown(record.id, expected)}; the store still has revision {rev}, "
                "and the save may yet apply (the server stops it after max_runtime): read it "
                "again before acting"
            )
        return taken(rev if isinstance(rev, int) else None)

    def _unknown(self, workflow_id: str, revision: int) -> str:
        return (
            f"{self.settings.where}: save of {workflow_id} at revision {revision} got no answer "
            f"within {self.settings.timeout:g} s, so its outcome is unknown"
        )

    def _beat(self, workflow_id: str, at_us: int) -> bool:
        if not _KEY_RE.match(workflow_id):
            return False
        binds = self._bind(key=workflow_id, at=at_us)
        try:
            touched = self._write(QUERIES["heartbeat"], binds, "heartbeat", workflow_id)
        except _OutcomeUnknown:
            raise AdapterError(
                f"{self.settings.where}: heartbeat of {workflow_id} got no answer within "
                f"{self.settings.timeout:g} s"
            ) from None
        return bool(touched)

    def _select(
        self, session_id: str | None, status: str | None, limit: int | None
    ) -> Iterable[Stored]:
        query, binds = self.list_query(
            session_id=session_id,
            status=None if status is None else WorkflowStatus(status),
            limit=limit,
        )
        return [self._stored(d) for d in self._run(query, binds, "list")]

    def _select_stale(self, statuses: list[str], before_us: int) -> Iterable[Stored]:
        binds = self._bind(statuses=statuses, before=before_us)
        return [self._stored(d) for d in self._run(QUERIES["stale"], binds, "list")]

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

    def list_query(
        self,
        *,
        session_id: str | None = None,
        status: WorkflowStatus | None = None,
        limit: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """The AQL and bind variables `list()` sends for these arguments (also what the
        conformance tests `explain` on a real server)."""
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
        return query, binds


def _document(record: Record) -> dict[str, Any]:
    """A record as the collection stores it (without `_key`; see the module docstring)."""
    return {
        "revision": record.revision,
        "session_id": record.session_id,
        "status": record.status,
        "created_at_us": record.created_us,
        "heartbeat_at_us": record.heartbeat_us,
        "state": record.text,
    }
