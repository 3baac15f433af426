"""The Starlette application: the route table (routes.py) over one store, its middleware, and
the gauge of stored workflows.

Reads are open to whoever can reach the port (127.0.0.1 unless told otherwise); every change
is one engine command behind the token (see auth.py), recorded in the workflow's history with
who asked: `web:NAME` for the pages (the name given at login), `api:NAME` for the API (the
request's `by`, else `api`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..resources import __version__
from .actions import ServeSettings
from .http import ActionSpans, BodyLimit, NoStore
from .query import Filters, count
from .routes import routes
from .server import Server

log = logging.getLogger("statesaga.web")


def create_app(settings: ServeSettings) -> Starlette:
    """The dashboard and API over one store; `settings.token` enables changes."""
    server = Server(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        server.ops.close()

    async def not_found(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "no such endpoint", "status": 404}, 404)
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        return server.page(request, "error.html", code, message="no such page", code=code)

    middleware = [Middleware(NoStore), Middleware(ActionSpans), Middleware(BodyLimit)]
    if settings.allowed_hosts:
        # A page on another site cannot read this one through DNS rebinding: its requests
        # carry that site's name in Host.
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts))
    app = Starlette(
        routes=routes(server),
        lifespan=lifespan,
        exception_handlers={404: not_found},
        middleware=middleware,
    )
    app.state.dashboard = server
    return app


def watch_store(app: Starlette) -> None:
    """Export the stored workflows per status as the gauge `statesaga.workflows.stored`, read
    from the store at each collection (a /metrics scrape, an OTLP export): what the whole fleet
    did, which no single process counts. `serve` calls it; once per process."""
    from opentelemetry.metrics import CallbackOptions, Observation, get_meter

    server: Server = app.state.dashboard

    def observe(options: CallbackOptions) -> list[Observation]:
        try:
            counts = count(server.ops.store, Filters())
        except Exception as exc:  # no series this time (Prometheus shows the gap), one line
            log.warning(
                "the stored workflows could not be counted: %s",
                server.scrub(f"{type(exc).__name__}: {exc}"),
            )
            return []
        return [Observation(n, {"statesaga.state": state}) for state, n in counts.items()]

    get_meter("statesaga", __version__).create_observable_gauge(
        "statesaga.workflows.stored", [observe], "{workflow}", "stored workflows by status"
    )
