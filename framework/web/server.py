"""What every page and endpoint shares: the settings, the gate, the definitions catalog, the
engine(s), the templates, and the one way a failure becomes an answer (with no secret in it)."""

from __future__ import annotations

import logging
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.templating import Jinja2Templates

from ..resources import __version__
from ..security.redact import MASK, redact
from .actions import Catalog, Operations, ServeSettings
from .auth import COOKIE, Gate, Session
from .http import message, passwords, status_of
from .query import Filters
from .timeline import duration_text
from .views import Pictures, compact, gist, outcome_text, pretty_json, retry_text

log = logging.getLogger("statesaga.web")


class Server:
    """The server's state: settings, the definitions catalog, the engine(s), the gate."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.gate = Gate(settings.token)
        self.catalog = Catalog(settings.definitions)
        self.ops = Operations(settings, self.catalog)
        self.pictures = Pictures()
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("statesaga.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        env.filters.update(
            compact=compact,
            retry=retry_text,
            outcome=outcome_text,
            duration=duration_text,
            pretty=pretty_json,
        )
        env.globals.update(gist=gist, version=__version__)
        self.templates = Jinja2Templates(env=env)
        self._secrets = sorted(
            {s for s in (settings.token, *passwords(settings.store), *passwords(settings.queue))
             if s},
            key=len,
            reverse=True,
        )  # fmt: skip

    def scrub(self, text: str) -> str:
        """No secret leaves the server, even inside an error from somewhere else: the token,
        and the store's and queue's passwords however they were written."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return str(redact(text))  # mypy reads statesaga (installed) as untyped

    def session(self, request: Request) -> Session | None:
        return self.gate.session(request.cookies.get(COOKIE))

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.update(
            session=self.session(request),
            writable=self.gate.writable,
            store=self.scrub(self.settings.store),
            queue=self.scrub(self.settings.queue),
        )
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def render(self, request: Request, name: str, **context: Any) -> str:
        """A fragment of a page (the live part a page swaps in), as text."""
        template = self.templates.get_template(name)
        return template.render(
            session=self.session(request), writable=self.gate.writable, **context
        )

    def error_page(self, request: Request, exc: Exception) -> Response:
        status = self.logged(exc, request.url.path)
        text = "the server failed; see its log" if status == 500 else self.scrub(message(exc))
        return self.page(request, "error.html", status, message=text, code=status)

    def logged(self, exc: Exception, path: str) -> int:
        """The status of a failed request; a failure of the server or of what it relies on
        is logged (a refusal is the client's business)."""
        status = status_of(exc)
        if status in (500, 503):
            log.log(
                logging.ERROR if status == 500 else logging.WARNING,
                "request %s failed: %s",
                path,
                self.scrub(f"{type(exc).__name__}: {exc}"),
            )
        return status

    def api_error(self, exc: Exception, path: str = "") -> JSONResponse:
        status = self.logged(exc, path)
        text = "the server failed; see its log" if status == 500 else self.scrub(message(exc))
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": text, "status": status}, status, headers=headers)

    def filters(self, request: Request) -> Filters:
        q = request.query_params
        return Filters.parse(
            q.get("status"),
            q.get("session"),
            q.get("name"),
            id_prefix=q.get("q"),
            since=q.get("since"),
            until=q.get("until"),
        )
