"""HTTP plumbing shared by the pages and the API: how a failure maps to a status and a line,
strict JSON bodies read up to a limit, local redirects, and the secrets no answer may carry."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import (
    AdapterError,
    BackendUnavailable,
    ConflictError,
    DefinitionError,
    NotFoundError,
    StateError,
    StatesagaError,
    TransitionError,
)
from ..security.limits import strict_json_loads
from .actions import UnknownDefinition
from .auth import AuthRefused
from .query import MAX_PAGE_SIZE, BadCursor

#: The largest request body read (a JSON body or a form): both are parsed in memory, and a
#: form is read before its session is checked.
MAX_BODY = 1 << 20


class BadRequest(Exception):
    """Raised when a request's body or parameters are not what the endpoint takes."""


class BodyTooLarge(Exception):
    """Raised (by reading the request) when its body is over MAX_BODY."""


def unreachable(exc: Exception) -> bool:
    """The store or the queue cannot serve now: the adapter said so (its own error, or its
    client library's as it declared it: statesaga.errors.BackendUnavailable, e.g. a locked
    SQLite file, a Redis server out of reach), or a built-in ConnectionError or TimeoutError."""
    return isinstance(exc, AdapterError | BackendUnavailable | ConnectionError | TimeoutError)


def status_of(exc: Exception) -> int:
    """The HTTP status a failed request answers with."""
    if isinstance(exc, AuthRefused):
        return exc.status
    if isinstance(exc, BodyTooLarge):
        return 413
    if isinstance(exc, NotFoundError | UnknownDefinition):
        return 404
    if isinstance(exc, StateError | TransitionError | ConflictError):
        return 409
    if unreachable(exc):
        return 503
    if isinstance(exc, BadRequest | BadCursor | DefinitionError | ValueError):
        return 400
    return 400 if isinstance(exc, StatesagaError) else 500


def message(exc: Exception) -> str:
    """The one line a refused request is told (before the secrets are scrubbed from it)."""
    if isinstance(exc, DefinitionError):
        return "; ".join(str(p) for p in exc.problems) or str(exc)
    if isinstance(exc, NotFoundError):
        return f"no workflow {exc.workflow_id!r} in the store"
    if isinstance(exc, BodyTooLarge):
        return f"the request body is over {MAX_BODY >> 20} MiB"
    if unreachable(exc) and not isinstance(exc, StatesagaError):
        return f"the store or the queue cannot be reached ({type(exc).__name__}: {exc})"
    return str(exc)


def passwords(url: str) -> list[str]:
    """The secrets a store or queue URL holds, as written and as decoded: its password, and
    the values of its secret query options (redis-py takes `?password=`)."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += [
            v
            for k, v in parse_qsl(parts.query)
            if k.lower() in ("password", "passwd", "pwd", "token", "secret")
        ]
    except ValueError:
        return []
    return [s for secret in found if secret for s in {secret, unquote(secret)}]


def parse_limit(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(
            f"limit must be a whole number (1 to {MAX_PAGE_SIZE}), not {text[:20]!r}"
        ) from None


def with_param(params: dict[str, str], key: str, value: str | None) -> dict[str, str]:
    """Query parameters with `key` set to `value`, or removed when value is empty."""
    out = {k: v for k, v in params.items() if k != key}
    return {**out, key: value} if value else out


def local_target(request: Request, key: str) -> str:
    return local_value(request.query_params.get(key, "/"))


def local_value(target: str) -> str:
    """Only a path on this server (no open redirect to another host)."""
    # `//host` and `/\host` both leave the site in a browser.
    return target if target[:1] == "/" and target[1:2] not in ("/", "\\") else "/"


def strict_json(text: str, what: str) -> Any:
    """Strict JSON, as every body, payload and input of the server is read (and the CLI's:
    statesaga.security.limits.strict_json_loads)."""
    try:
        return strict_json_loads(text)
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or a number JSON cannot carry
        raise BadRequest(f"{what} is not JSON: {exc}") from None


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8") from None
    data = strict_json(text, "the request body")
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


_ID = re.compile(r"/WF-[^/]+")


class ActionSpans:
    """Each action (a request that is not a read) is a span of its own: the workflow it starts
    is its child, a signal or cancel it sends is linked to it (statesaga.observability.tracing).
    Reads are left to an HTTP instrumentation the operator may add."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        if scope["type"] != "http" or method in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        from ..observability.tracing import operation

        path = str(scope.get("path", ""))
        route = _ID.sub("/{id}", path)  # one span name per endpoint, not per workflow
        attributes = {"http.request.method": method, "url.path": path, "http.route": route}
        with operation(f"{method} {route}", attributes) as span:

            async def sent(message: Message) -> None:
                if span is not None and message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        from opentelemetry.trace import Status, StatusCode

                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, sent)


class BodyLimit:
    """Stops reading a request body past `limit` bytes: the endpoint that reads it gets
    BodyTooLarge (a 413), whether the client declared the length or streamed it."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        received = 0

        async def counted() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > self.limit:
                raise BodyTooLarge  # refused before a byte of it is read
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge
            return message

        await self.app(scope, counted, send)


class NoStore:
    """`Cache-Control: no-store` on every answer but the static files: pages and API answers
    show workflows (inputs, results, who did what) and, once logged in, the session's forms,
    which no browser or proxy cache may keep for the next user of the machine."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return

        async def no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, no_store)
