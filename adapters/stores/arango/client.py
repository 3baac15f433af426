"""The arango:// store's link to the server: its HTTP client (timeouts, which requests may be
sent again), and what a failure means (an outage to wait out, a write whose outcome is
unknown, a refusal to report).

An outage is an AdapterError whose cause is an `ArangoUnavailable`, a ConnectionError: the
loops that ride out outages (`recover --every`, the workers) read the cause chain
(statesaga.runtime.outage.is_outage) and wait instead of exiting. Transport failures carry
their own chain (a refused connection ends in ConnectionRefusedError, a read timeout in
TimeoutError); server answers that mean "not now" get the marker: HTTP 502/503/504 and the
errors a restart or a cluster failover answers with (OUTAGE_ERRNOS).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import arango.errno as arango_errno
from arango.client import ArangoClient
from arango.exceptions import ArangoClientError, ArangoServerError, CollectionCreateError
from arango.http import DefaultHTTPClient
from arango.response import Response
from requests import ConnectionError as RequestsConnectionError
from requests import ReadTimeout, RequestException, Session
from requests.adapters import HTTPAdapter
from statesaga.errors import AdapterError, ConflictError, DefinitionError, NotFoundError
from urllib3.exceptions import ProtocolError
from urllib3.util.retry import Retry

from .queries import INDEXES  # noqa: TID251
from .settings import ENV_PASSWORD, ENV_USER, ArangoSettings  # noqa: TID251

# Answers that mean "not now" rather than "no": a gateway in front of the server (502, 504),
# the server or a coordinator unavailable (503); arangod shutting down (30, at once for every
# request during a restart), a coordinator timing out on a DB server (1457), a DB server
# unreachable (1478), a shard's leadership moving (1495, 1496) during a failover.
OUTAGE_STATUS = frozenset({502, 503, 504})
OUTAGE_ERRNOS = frozenset(
    {
        arango_errno.SHUTTING_DOWN,
        arango_errno.CLUSTER_TIMEOUT,
        arango_errno.CLUSTER_BACKEND_UNAVAILABLE,
        arango_errno.CLUSTER_LEADERSHIP_CHALLENGE_ONGOING,
        arango_errno.CLUSTER_NOT_LEADER,
    }
)
# POST /_api/cursor/<id>: the fetch of a cursor's next batch, which moves the cursor on.
_CURSOR_FETCH = re.compile(r"/_api/cursor/[^/]+$")


class ArangoUnavailable(ConnectionError):
    """The cause of an AdapterError that reports an outage: the server cannot serve now
    (shutting down, starting, failing over) or did not answer. A ConnectionError, so that
    is_outage() finds it in the chain; it holds only a message, never a request."""


class OutcomeUnknown(Exception):
    """A write was sent and nothing says whether it applied: no answer came within its
    timeout, its connection broke, or the server answered that it could not tell (1457: the
    coordinator stopped waiting for the DB server, which may still apply it; an answer that
    means "not now" is read back the same way, which costs one read). `why` says which."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Busy(Exception):
    """A one-document write met a concurrent write (error 1200); run it again."""


def is_outage_answer(exc: ArangoServerError) -> bool:
    return exc.http_code in OUTAGE_STATUS or exc.error_code in OUTAGE_ERRNOS


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
    """python-arango's HTTP client with statesaga's retry, timeout and trust rules.

    - Connecting fails fast: `connect_retries` retries (default 0) with `backoff`, and only for
      connection failures (urllib3 `connect`); no retry on reads, no retry on status codes.
      Every answer the server gives, 429 and 5xx included, is handed to python-arango, which
      raises it as a server error (python-arango's client would turn a 429/5xx to a GET into
      requests' RetryError once its retries are spent, reported as "cannot reach").
    - A request whose connection broke after it was made (typically a keep-alive connection
      the server closed while it sat in the pool) is sent once more on a new connection,
      except the fetch of a cursor's next batch by cursor id alone: the server may have sent
      that batch and moved on, so a second send would get the batch after it and a listing
      would silently miss rows. The store asks for retryable cursors (allowRetry, ArangoDB
      3.11+), whose fetches name the batch (`/_api/cursor/<id>/<batch>`) and are sent again.
      Every other request tolerates one replay: reads and index creation are idempotent, a
      heartbeat only moves forward, and a replayed create or save finds its own write when
      it reads back (see ArangoStore).
    - The read timeout is per operation: `timeout` unless a caller set `read_timeout` for the
      current thread (the store does so for long operations); connecting is always bounded
      by `timeout`.
    - Nothing comes from the environment: requests would otherwise replace `tls_ca` and
      `tls_verify=0` with REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE and send through HTTP(S)_PROXY.
      The certificate check is ArangoSettings.verify(); connections are direct.

    `request_timeout` stays set as python-arango's ArangoClient.request_timeout reports it;
    ArangoClient's own `request_timeout` argument is ignored once an HTTP client is passed.
    """

    def __init__(self, settings: ArangoSettings) -> None:
        super().__init__(
            request_timeout=settings.timeout,
            retry_attempts=settings.connect_retries,
            backoff_factor=settings.backoff,
        )
        self.settings = settings
        self.connect_timeout = settings.timeout
        # A ContextVar, so one thread's long listing does not lengthen another's save.
        self.read_timeout: ContextVar[float] = ContextVar("arango_read_timeout")
        # The status and text of the error answer this thread last received, None after a
        # request that got no answer or a good one: python-arango turns a 503 whose errorNum
        # is 503 (arangod starting up or in maintenance) into a connection error of its own,
        # and this tells the two apart.
        self.last_answer: ContextVar[tuple[int, str] | None] = ContextVar("arango_last_answer")
        # Set when this thread's last request was a cursor fetch whose connection broke and
        # that was not sent again (python-arango reports it as "can't connect").
        self.lost_batch: ContextVar[bool] = ContextVar("arango_lost_batch", default=False)

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
        session.trust_env = False
        if self.settings.tls:
            session.verify = self.settings.verify()
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
        self.lost_batch.set(False)
        advances = method.lower() == "post" and bool(_CURSOR_FETCH.search(urlsplit(url).path))
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
                if advances:
                    self.lost_batch.set(True)
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


class ErrorTranslator:
    """Turns python-arango and transport errors into statesaga's, in one line each, naming
    the server, the operation and the cause, never the password."""

    def __init__(self, settings: ArangoSettings, http: ArangoHTTPClient) -> None:
        self.settings = settings
        self.http = http

    @contextmanager
    def __call__(
        self, op: str, workflow_id: str | None = None, *, write: bool = False
    ) -> Iterator[None]:
        """Raised `from None` (or from an ArangoUnavailable, which holds only a message): the
        chain of python-arango's exceptions holds its request objects (requests' prepared
        request holds the Authorization header), kept out of tracebacks. With `write`,
        error 1200 raises Busy, and no answer or an outage answer OutcomeUnknown, for the
        caller to decide."""
        s = self.settings
        try:
            yield
        except (AdapterError, ConflictError, NotFoundError, DefinitionError):
            raise
        except ArangoServerError as exc:
            if write and exc.error_code == arango_errno.CONFLICT:
                raise Busy() from None
            if write and is_outage_answer(exc):
                raise OutcomeUnknown(f"was answered {self.scrub(exc.message)}") from None
            self.server_error(exc, op, workflow_id)
        except ArangoClientError as exc:
            # client.db(verify=True) wraps a refused or timed-out connection this way.
            self.unreachable(op, self.scrub(exc.message))
        except ReadTimeout:
            # Connected and sent, but no answer in time: the server is there, and busy.
            limit = self.http.read_timeout.get(s.timeout)
            if write:
                raise OutcomeUnknown(f"got no answer within {limit:g} s") from None
            raise AdapterError(
                f"{s.where}: no answer to {op} within {limit:g} s "
                f"(timeout={s.timeout:g}, long_timeout={s.long_timeout:g})"
            ) from ArangoUnavailable(f"no answer within {limit:g} s")
        except (RequestException, OSError) as exc:
            # After connecting, python-arango lets these through: ConnectionAbortedError when
            # its host tries are used up (a refused connection included).
            detail = f"{type(exc).__name__}: {self.scrub(str(exc))}"
            if write:
                # The connection may have broken after the write was sent (twice: it is sent
                # once more), and the server may have applied it.
                raise OutcomeUnknown(f"got no answer ({detail})") from None
            self.unreachable(op, detail)

    def unreachable(self, op: str, detail: str) -> NoReturn:
        s = self.settings
        answered = self.http.last_answer.get(None)
        if answered is not None:
            # python-arango's "can't connect" after an answer: a 503 with errorNum 503.
            message = self.scrub(_error_message(answered[1]))
            raise AdapterError(
                f"{s.where}: the server answered {op} with HTTP {answered[0]}: {message} "
                "(starting up or in maintenance mode; try again later)"
            ) from ArangoUnavailable(f"HTTP {answered[0]}: {message}")
        if self.http.lost_batch.get():
            raise AdapterError(
                f"{s.where}: the connection broke while fetching the next batch of a {op}; "
                "not sent again, as the server may have moved past that batch (retryable "
                "cursors need ArangoDB 3.11 or later)"
            ) from ArangoUnavailable("connection broke during a cursor fetch")
        # The transport's own chain (ConnectionRefusedError, TimeoutError) stays the context.
        raise AdapterError(f"cannot reach {s.where} to {op}{self.budget()}: {detail}") from None

    def server_error(self, exc: ArangoServerError, op: str, workflow_id: str | None) -> NoReturn:
        s = self.settings
        code, http = exc.error_code, exc.http_code
        if is_outage_answer(exc):
            message = self.scrub(exc.message)
            raise AdapterError(
                f"{s.where}: the server answered {op} with {message} (unavailable for now: "
                "restarting, failing over or overloaded; try again later)"
            ) from ArangoUnavailable(message)
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
        raise AdapterError(f"{s.where}: {op} failed: {self.scrub(exc.message)}") from None

    def budget(self) -> str:
        # python-arango reports a refused connection only as "can't connect within limit";
        # saying what the limit was tells the reader whether to raise it.
        s = self.settings
        return f" (timeout {s.timeout:g} s, connect_retries={s.connect_retries})"

    def scrub(self, text: str) -> str:
        # python-arango's messages do not contain the password today; this keeps it that way
        # if a server or library ever echoes it.
        secret = self.settings.password
        if secret:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
        return text


class Connection:
    """One store's connected database: python-arango's client, connecting on first use and,
    with initialize=1, creating the database, the collection and its indexes."""

    def __init__(self, settings: ArangoSettings, database: Any = None) -> None:
        """`database` is a connected python-arango StandardDatabase; None connects lazily."""
        self.settings = settings
        self.http = ArangoHTTPClient(settings)
        self.errors = ErrorTranslator(settings, self.http)
        self.db: Any = database
        self.client: Any = None
        self.initialized = False
        self._lock = threading.Lock()

    def client_for(self) -> ArangoClient:
        s = self.settings
        # resolver_max_tries=1: python-arango would otherwise send a request again on every
        # connection error, up to 3 times for one host; ArangoHTTPClient decides instead.
        # The certificate check is set on the sessions by ArangoHTTPClient.create_session.
        return ArangoClient(hosts=s.endpoint, http_client=self.http, resolver_max_tries=1)

    @contextmanager
    def long(self) -> Iterator[None]:
        """Requests made inside get `long_timeout` to answer instead of `timeout`."""
        token = self.http.read_timeout.set(self.settings.long_timeout)
        try:
            yield
        finally:
            self.http.read_timeout.reset(token)

    def database(self, schema: bool = True, create: bool = True) -> Any:
        """The connected database, connecting on first use; with initialize=1 the database,
        collection and indexes are made on first use too, so `from_url(url)` alone gives a
        working store. None only when `create` is false and the database does not exist."""
        with self._lock:
            if self.db is None:
                self.db = self._connect(create)
            if self.db is not None and schema and self.settings.initialize:
                if not self.initialized:
                    self._create_schema(self.db)
        return self.db

    def _connect(self, create: bool) -> Any:
        """The connected database; None if it does not exist and `create` is false.

        The server answers a missing database with 404 (1228) to root, but with 401 (errorNum
        11, "not authorized to execute this request") to a user without a grant on that name,
        so that names cannot be guessed (arangod CommTask::prepareExecution). A 1228 is
        certain; a 401 means a wrong password, no grant, or no such database: only _system
        can tell, and only a user allowed to read it.
        """
        s = self.settings
        if self.client is not None:  # an earlier attempt's, which failed
            self.client.close()
        client = self.client_for()
        self.client = client
        with self.errors("connect"):
            try:
                return client.db(s.database, username=s.username, password=s.password, verify=True)
            except ArangoServerError as exc:
                if exc.http_code != 401 and exc.error_code != arango_errno.DATABASE_NOT_FOUND:
                    raise
                denied = exc.http_code == 401
        exists = self._has_database(client)
        if denied and exists is not False:
            # It exists (so the password or the grant is wrong), or _system would not say.
            raise AdapterError(
                f"{s.where}: authentication failed or no access to database {s.database!r} "
                f"for user {s.username!r} (check the URL or {ENV_USER} / {ENV_PASSWORD}, and "
                "the user's database permissions)"
            )
        if not denied and exists:
            pass  # 1228, yet it exists now: another process just created it; connect again
        elif not create:
            return None
        elif not s.initialize:
            raise AdapterError(
                f"{s.where}: the database does not exist (create it, or allow it with initialize=1)"
            )
        else:
            self._create_database(client)
        with self.errors("connect"):
            return client.db(s.database, username=s.username, password=s.password, verify=True)

    def _create_database(self, client: Any) -> None:
        s = self.settings
        with self.errors("create the database"), self.long():
            sys_db = client.db("_system", username=s.username, password=s.password)
            try:
                sys_db.create_database(
                    s.database,
                    replication_factor=s.replication_factor,
                    write_concern=s.write_concern,
                )
            except ArangoServerError as exc:
                if exc.error_code == arango_errno.DUPLICATE_NAME:  # lost a race: fine
                    return
                if exc.http_code in (401, 403):
                    raise AdapterError(
                        f"{s.where}: the database does not exist, and user {s.username!r} may "
                        "not create it (create it as an administrator, or connect as one)"
                    ) from None
                raise

    def _has_database(self, client: Any) -> bool | None:
        """Whether the database exists, asked of _system; None when this user may not ask
        (no access to _system, or the password is wrong)."""
        s = self.settings
        with self.errors("look up the database"):
            sys_db = client.db("_system", username=s.username, password=s.password)
            try:
                return bool(sys_db.has_database(s.database))
            except ArangoServerError as exc:
                if exc.http_code in (401, 403):
                    return None
                raise

    def _create_schema(self, db: Any) -> None:
        """The collection, synced to disk on every write, and its indexes. A collection made
        before (by an older version, or by hand) gets waitForSync and, on a cluster, the
        URL's replication_factor / write_concern; every write asks for sync anyway."""
        s = self.settings
        name = s.collection
        with self.errors("initialize"), self.long():
            if not db.has_collection(name):
                try:
                    db.create_collection(
                        name,
                        sync=True,
                        replication_factor=s.replication_factor,
                        write_concern=s.write_concern,
                    )
                except CollectionCreateError as exc:
                    if exc.error_code != arango_errno.DUPLICATE_NAME:  # another process won
                        raise
            coll = db.collection(name)
            props = coll.properties()
            changes: dict[str, Any] = {} if props.get("sync") else {"sync": True}
            # A single server reports neither (both apply to clusters only).
            for key in ("replication_factor", "write_concern"):
                wanted = getattr(s, key)
                if wanted is not None and key in props and props[key] != wanted:
                    changes[key] = wanted
            if changes:
                coll.configure(**changes)
            for fields in INDEXES:
                # Creating an index that exists with the same definition returns the existing
                # one, so this is safe to repeat.
                coll.add_index({"type": "persistent", "fields": list(fields), "inBackground": True})
        self.initialized = True

    def close(self) -> None:
        with self._lock:
            client, self.client, self.db = self.client, None, None
            self.initialized = False
        if client is not None:
            client.close()


__all__ = [
    "OUTAGE_ERRNOS",
    "OUTAGE_STATUS",
    "ArangoHTTPClient",
    "ArangoUnavailable",
    "Busy",
    "Connection",
    "ErrorTranslator",
    "OutcomeUnknown",
    "is_outage_answer",
]
