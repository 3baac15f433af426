"""The Starlette application: the pages, the JSON API and its OpenAPI document.

Reads are open to whoever can reach the port (127.0.0.1 unless told otherwise); every change
is one engine command behind the token (see auth.py), recorded in the workflow's history with
who asked: `web:NAME` for the pages (the name given at login), `api:NAME` for the API (the
request's `by`, else `api`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.schemas import SchemaGenerator
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import (
    AdapterError,
    ConflictError,
    DefinitionError,
    NotFoundError,
    StateError,
    StatesagaError,
    TransitionError,
)
from ..models import StepStatus, WorkflowState, WorkflowStatus
from ..plans import open_requests
from ..resources import __version__
from ..security.redact import MASK, redact
from .actions import Catalog, Operations, ServeSettings, UnknownDefinition
from .auth import (
    COOKIE,
    NAME_RULE,
    SESSION_SECONDS,
    AuthRefused,
    Gate,
    Session,
    valid_name,
)
from .plans import plan_routes
from .query import MAX_PAGE_SIZE, PAGE_SIZE, BadCursor, Filters, browse, count
from .views import (
    Pictures,
    compact,
    focus_step,
    gist,
    outcome_text,
    retry_text,
    story,
    summary,
)

log = logging.getLogger("statesaga.web")
HISTORY_SHOWN = 500
#: What the page says after an action (a key in the URL, so a link cannot make it say more).
DONE = {
    "started": "Started.",
    "signal": "Signal sent.",
    "cancel": "Cancel requested.",
    "restart": "Restarted.",
}


#: The largest request body read (a JSON body or a form): both are parsed in memory, and a
#: form is read before its session is checked.
MAX_BODY = 1 << 20


class BadRequest(Exception):
    """Raised when a request's body or parameters are not what the endpoint takes."""


class BodyTooLarge(Exception):
    """Raised (by reading the request) when its body is over MAX_BODY."""


def _unreachable(exc: Exception) -> bool:
    """The store or the queue cannot be reached: the adapter said so, or its client library
    (the built-in ConnectionError and TimeoutError, and redis-py's of the same names, which
    are not OSErrors), or SQLite is locked."""
    if isinstance(exc, AdapterError | sqlite3.OperationalError):
        return True
    return any(c.__name__ in ("ConnectionError", "TimeoutError") for c in type(exc).__mro__)


def _status_of(exc: Exception) -> int:
    if isinstance(exc, AuthRefused):
        return exc.status
    if isinstance(exc, BodyTooLarge):
        return 413
    if isinstance(exc, NotFoundError | UnknownDefinition):
        return 404
    if isinstance(exc, StateError | TransitionError | ConflictError):
        return 409
    if _unreachable(exc):
        return 503
    if isinstance(exc, BadRequest | BadCursor | DefinitionError | ValueError):
        return 400
    return 400 if isinstance(exc, StatesagaError) else 500


def _message(exc: Exception) -> str:
    if isinstance(exc, DefinitionError):
        return "; ".join(str(p) for p in exc.problems) or str(exc)
    if isinstance(exc, NotFoundError):
        return f"no workflow {exc.workflow_id!r} in the store"
    if isinstance(exc, BodyTooLarge):
        return f"the request body is over {MAX_BODY >> 20} MiB"
    if _unreachable(exc) and not isinstance(exc, StatesagaError):
        return f"the store or the queue cannot be reached ({type(exc).__name__}: {exc})"
    return str(exc)


class Dashboard:
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
        env.filters.update(compact=compact, retry=retry_text, outcome=outcome_text)
        env.globals.update(gist=gist, version=__version__)
        self.templates = Jinja2Templates(env=env)
        self._secrets = sorted(
            {s for s in (settings.token, *_passwords(settings.store), *_passwords(settings.queue))
             if s},
            key=len,
            reverse=True,
        )  # fmt: skip

    # -- helpers ----------------------------------------------------------------------------
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

    def error_page(self, request: Request, exc: Exception) -> Response:
        status = self._logged(exc, request.url.path)
        if status == 500:
            text = "the server failed; see its log"
        else:
            text = self.scrub(_message(exc))
        return self.page(request, "error.html", status, message=text, code=status)

    def _logged(self, exc: Exception, path: str) -> int:
        """The status of a failed request; a failure of the server or of what it relies on
        is logged (a refusal is the client's business)."""
        status = _status_of(exc)
        if status in (500, 503):
            log.log(
                logging.ERROR if status == 500 else logging.WARNING,
                "request %s failed: %s",
                path,
                self.scrub(f"{type(exc).__name__}: {exc}"),
            )
        return status

    def api_error(self, exc: Exception, path: str = "") -> JSONResponse:
        status = self._logged(exc, path)
        if status == 500:
            text = "the server failed; see its log"
        else:
            text = self.scrub(_message(exc))
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": text, "status": status}, status, headers=headers)

    def filters(self, request: Request) -> Filters:
        q = request.query_params
        return Filters.parse(q.get("status"), q.get("session"), q.get("name"))

    # -- pages ------------------------------------------------------------------------------
    async def list_page(self, request: Request) -> Response:
        try:
            filters = self.filters(request)
            cursor = request.query_params.get("before")
            page = await run_in_threadpool(browse, self.ops.store, filters, cursor)
        except Exception as exc:
            return self.error_page(request, exc)
        base = {
            k: v
            for k, v in {
                "status": filters.status.value if filters.status else None,
                "session": filters.session_id,
                "name": filters.name,
            }.items()
            if v
        }
        names = sorted({d.name for d in self.catalog.definitions()})
        return self.page(
            request,
            "list.html",
            page=page,
            filters=filters,
            statuses=[s.value for s in WorkflowStatus],
            names=names,
            total=sum(page.counts.values()),
            first_url="/?" + urlencode(base),
            next_url=("/?" + urlencode({**base, "before": page.next_cursor}))
            if page.next_cursor
            else None,
            status_url=lambda s: "/?" + urlencode(_with(base, "status", s)),
        )

    def _instance_context(self, request: Request, wf: WorkflowState) -> dict[str, Any]:
        definition = self.catalog.for_instance(wf)
        names = [s.name for s in wf.steps]
        chosen = request.query_params.get("step")
        step = chosen if chosen in names else focus_step(wf)
        pictures = [
            self.pictures.instance(wf, definition, "steps"),
            self.pictures.instance(wf, definition, "workflow"),
        ]
        if step is not None:
            pictures.append(self.pictures.instance(wf, definition, "step", step))
        return {
            "wf": wf,
            "pictures": pictures,
            "focus": step,
            "chosen": chosen if chosen in names else None,
            "ended": self.ops.engine(definition).has_ended(wf.status.value),
            "signals": sorted({s.signal for s in wf.steps if s.kind == "wait" and s.signal}),
            "approvals": open_requests(wf),  # a plan's: statesaga.web.plans
            # The newest entries; a saga that ran for months keeps its page light (the
            # JSON has them all).
            "history": list(enumerate(wf.history, 1))[-HISTORY_SHOWN:],
            "history_hidden": max(len(wf.history) - HISTORY_SHOWN, 0),
            "tale": story(wf),
            "restart_from": next(
                (s.name for s in wf.steps if s.status is not StepStatus.COMPLETED), None
            ),
        }

    async def instance_page(self, request: Request) -> Response:
        try:
            wf = await run_in_threadpool(self.ops.store.get, request.path_params["id"])
            context = await run_in_threadpool(self._instance_context, request, wf)
        except Exception as exc:
            return self.error_page(request, exc)
        message = DONE.get(request.query_params.get("done", ""))
        return self.page(request, "instance.html", message=message, **context)

    async def instance_live(self, request: Request) -> Response:
        """The live part of the instance page, when the document changed since `rev`."""
        try:
            wf = await run_in_threadpool(self.ops.store.get, request.path_params["id"])
            if request.query_params.get("rev") == str(wf.revision):
                return Response(status_code=204)
            context = await run_in_threadpool(self._instance_context, request, wf)
        except Exception as exc:
            return self.api_error(exc, request.url.path)
        html = self.templates.get_template("_live.html").render(
            session=self.session(request), writable=self.gate.writable, **context
        )
        return JSONResponse({"revision": wf.revision, "status": wf.status.value, "html": html})

    async def definitions_page(self, request: Request) -> Response:
        await run_in_threadpool(self.catalog.refresh)
        shown = []
        for entry in self.catalog.entries:
            d = entry.definition
            picture = await run_in_threadpool(self.pictures.definition, d) if d else None
            source = entry.path.read_text(encoding="utf-8")
            shown.append({"entry": entry, "picture": picture, "source": source})
        return self.page(request, "definitions.html", shown=shown, root=self.settings.definitions)

    async def login_page(self, request: Request) -> Response:
        return self.page(request, "login.html", error=None, next=_local(request, "next"))

    async def login(self, request: Request) -> Response:
        try:
            form = await request.form()
        except BodyTooLarge as exc:
            return self.error_page(request, exc)
        target = _local_value(str(form.get("next") or "/"))
        try:
            cookie = self.gate.login(str(form.get("user") or ""), str(form.get("token") or ""))
        except AuthRefused as exc:
            return self.page(request, "login.html", exc.status, error=exc.message, next=target)
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/", 303)
        response.delete_cookie(COOKIE)
        return response

    async def _form_action(
        self, request: Request, act: Callable[[FormData, str], Any], done: str
    ) -> Response:
        wf_id = request.path_params.get("id", "")
        try:
            form = await request.form()
            session = self.gate.check_form(request.cookies.get(COOKIE), str(form.get("csrf", "")))
            wf = await run_in_threadpool(act, form, f"web:{session.user}")
        except AuthRefused as exc:
            if exc.status == 401:  # back, after the login, to the page the form was on
                back = f"/workflows/{wf_id}" if wf_id else "/definitions"
                return RedirectResponse("/login?" + urlencode({"next": back}), 303)
            return self.error_page(request, exc)
        except Exception as exc:
            return self.error_page(request, exc)
        target = wf.id if isinstance(wf, WorkflowState) else wf_id
        return RedirectResponse(f"/workflows/{target}?" + urlencode({"done": done}), 303)

    async def cancel_confirm(self, request: Request) -> Response:
        try:
            wf = await run_in_threadpool(self.ops.store.get, request.path_params["id"])
        except Exception as exc:
            return self.error_page(request, exc)
        force = request.query_params.get("force") in ("1", "true")
        ended = self.ops.engine(self.catalog.for_instance(wf)).has_ended(wf.status.value)
        return self.page(request, "confirm.html", wf=wf, force=force, ended=ended)

    async def cancel_form(self, request: Request) -> Response:
        wf_id = request.path_params["id"]

        def act(form: FormData, by: str) -> WorkflowState:
            if form.get("confirm") != "yes":
                raise BadRequest("the cancel was not confirmed")
            return self.ops.cancel(wf_id, force=form.get("force") == "1", by=by)

        return await self._form_action(request, act, "cancel")

    async def signal_form(self, request: Request) -> Response:
        wf_id = request.path_params["id"]

        def act(form: FormData, by: str) -> WorkflowState:
            name = str(form.get("name") or "").strip()
            if not name:
                raise BadRequest("which signal? give its name")
            payload = _json(str(form.get("payload") or "null"), "the payload")
            return self.ops.signal(wf_id, name, payload, by=by)

        return await self._form_action(request, act, "signal")

    async def restart_form(self, request: Request) -> Response:
        wf_id = request.path_params["id"]

        def act(form: FormData, by: str) -> WorkflowState:
            return self.ops.restart(
                wf_id, str(form.get("from_step") or ""), str(form.get("reason") or ""), by=by
            )

        return await self._form_action(request, act, "restart")

    async def start_form(self, request: Request) -> Response:
        name = request.path_params["name"]

        def act(form: FormData, by: str) -> WorkflowState:
            data = _json(str(form.get("input") or "{}"), "the input")
            if not isinstance(data, dict):
                raise BadRequest("the input must be a JSON object")
            session = str(form.get("session") or "").strip() or None
            return self.ops.start(name, data, session_id=session, by=by)

        return await self._form_action(request, act, "started")

    # -- the JSON API -----------------------------------------------------------------------
    async def _api_change(
        self,
        request: Request,
        act: Callable[[dict[str, Any], str], WorkflowState],
        success: int = 202,
    ) -> Response:
        try:
            self.gate.check_bearer(request.headers.get("authorization"))
            body = await _json_body(request)
            by = body.get("by") or None
            if by is not None and not (isinstance(by, str) and valid_name(by)):
                raise BadRequest(f"`by` must be a string, a name ({NAME_RULE}): who asks")
            wf = await run_in_threadpool(act, body, f"api:{by}" if by else "api")
        except Exception as exc:
            return self.api_error(exc, request.url.path)
        return JSONResponse(json.loads(wf.model_dump_json()), success)

    async def api_list(self, request: Request) -> Response:
        """
        summary: List workflows, newest first
        parameters:
          - {name: status, in: query, schema: {type: string}, description: e.g. RUNNING}
          - {name: session, in: query, schema: {type: string}}
          - {name: name, in: query, schema: {type: string}, description: definition name}
          - {name: before, in: query, schema: {type: string}, description: next_cursor}
          - {name: limit, in: query, schema: {type: integer, default: 50, maximum: 500}}
        responses:
          200: {description: "{workflows: [...], next_cursor, counts: {STATUS: n}}"}
          400: {description: an unknown status or a bad cursor}
        """
        try:
            filters = self.filters(request)
            limit = _limit(request.query_params.get("limit", str(PAGE_SIZE)))
            page = await run_in_threadpool(
                browse, self.ops.store, filters, request.query_params.get("before"), limit
            )
        except Exception as exc:
            return self.api_error(exc, request.url.path)
        return JSONResponse(
            {
                "workflows": [summary(wf) for wf in page.workflows],
                "next_cursor": page.next_cursor,
                "counts": page.counts,
            }
        )

    async def api_get(self, request: Request) -> Response:
        """
        summary: One workflow's stored document (steps, results, errors, history)
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
        responses:
          200: {description: the WorkflowState document}
          404: {description: no such workflow}
        """
        try:
            wf = await run_in_threadpool(self.ops.store.get, request.path_params["id"])
        except Exception as exc:
            return self.api_error(exc, request.url.path)
        return JSONResponse(json.loads(wf.model_dump_json()))

    async def api_start(self, request: Request) -> Response:
        """
        summary: Start a workflow from a definition under --definitions
        security: [{bearer: []}]
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [definition]
                properties:
                  definition: {type: string, description: the workflow name of a definition}
                  input: {type: object}
                  session_id: {type: string}
                  by: {type: string, description: who asks (kept in the history)}
        responses:
          201: {description: the new workflow's document}
          400: {description: bad JSON or input}
          401: {description: no token}
          403: {description: wrong token, or a read-only server}
          404: {description: no such definition under --definitions}
        """

        def act(body: dict[str, Any], by: str) -> WorkflowState:
            name = body.get("definition")
            if not isinstance(name, str) or not name:
                raise BadRequest("give `definition`: the name of a definition")
            data = body.get("input", {})
            if not isinstance(data, dict):
                raise BadRequest("`input` must be a JSON object")
            session = body.get("session_id")
            if session is not None and not isinstance(session, str):
                raise BadRequest("`session_id` must be a string")
            return self.ops.start(name, data, session_id=session, by=by)

        return await self._api_change(request, act, 201)

    async def api_signal(self, request: Request) -> Response:
        """
        summary: Send a named signal (e.g. approve) with a JSON payload
        security: [{bearer: []}]
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
          - {name: name, in: path, required: true, schema: {type: string}}
        requestBody:
          content:
            application/json:
              schema:
                type: object
                properties:
                  payload: {description: any JSON value; the waiting step's result}
                  by: {type: string}
        responses:
          202: {description: the workflow's document after the signal}
          400: {description: bad JSON}
          401: {description: no token}
          403: {description: wrong token, or a read-only server}
          404: {description: no such workflow}
          409: {description: no step waits for this signal, or the workflow has ended}
        """
        wf_id, name = request.path_params["id"], request.path_params["name"]
        return await self._api_change(
            request, lambda body, by: self.ops.signal(wf_id, name, body.get("payload"), by=by)
        )

    async def api_cancel(self, request: Request) -> Response:
        """
        summary: Cancel a workflow (graceful; ?force=true compensates at once)
        security: [{bearer: []}]
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
          - {name: force, in: query, schema: {type: boolean, default: false}}
        responses:
          202: {description: the workflow's document after the cancel}
          401: {description: no token}
          403: {description: wrong token, or a read-only server}
          404: {description: no such workflow}
          409: {description: the workflow has already ended}
        """
        wf_id = request.path_params["id"]
        force = request.query_params.get("force", "false").lower() in ("1", "true", "yes")
        return await self._api_change(
            request, lambda body, by: self.ops.cancel(wf_id, force=force, by=by)
        )

    async def api_restart(self, request: Request) -> Response:
        """
        summary: Re-run a FAILED workflow from a step
        security: [{bearer: []}]
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [from_step, reason]
                properties:
                  from_step: {type: string}
                  reason: {type: string}
                  by: {type: string}
        responses:
          202: {description: the workflow's document after the restart}
          400: {description: bad JSON}
          401: {description: no token}
          403: {description: wrong token, or a read-only server}
          404: {description: no such workflow}
          409: {description: not FAILED, or no such step}
        """
        wf_id = request.path_params["id"]

        def act(body: dict[str, Any], by: str) -> WorkflowState:
            step, reason = body.get("from_step"), body.get("reason")
            if not isinstance(step, str) or not isinstance(reason, str):
                raise BadRequest("give `from_step` and `reason` (strings)")
            return self.ops.restart(wf_id, step, reason, by=by)

        return await self._api_change(request, act)

    async def api_definitions(self, request: Request) -> Response:
        """
        summary: The definitions under --definitions
        responses:
          200: {description: "[{name, version, file, steps, error}]"}
        """
        await run_in_threadpool(self.catalog.refresh)
        return JSONResponse(
            [
                {
                    "name": e.name,
                    "version": str(e.definition.version) if e.definition else None,
                    "file": e.path.name,
                    "steps": [s.name for s in e.definition.steps] if e.definition else [],
                    "error": e.error,
                }
                for e in self.catalog.entries
            ]
        )

    async def api_definition_schema(self, request: Request) -> Response:
        """
        summary: The JSON Schema of a workflow definition (the files under --definitions)
        responses:
          200: {description: a JSON Schema, draft 2020-12}
        """
        from ..definition import DefinitionSpec

        schema = DefinitionSpec.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = "statesaga workflow definition"
        return JSONResponse(schema)


async def metrics(request: Request) -> Response:
    """
    summary: Prometheus metrics of this server process (OpenTelemetry)
    description: >
      The stored workflows per status (statesaga_workflows_stored, read from the store), and
      what this process counted: the workflows it started, signalled, cancelled or restarted,
      and the jobs it ran itself (an inline:// queue). Each worker counts the steps it runs and
      exports them its own way (OTEL_METRICS_EXPORTER).
    responses:
      200: {description: the Prometheus text format}
      501: {description: the otel extra is not installed}
    """
    from ..observability.otel import prometheus_text

    try:
        body, content_type = await run_in_threadpool(prometheus_text)
    except StatesagaError as exc:
        return Response(f"{exc}\n", 501, media_type="text/plain")
    return Response(body, media_type=content_type)


def watch_store(app: Starlette) -> None:
    """Export the stored workflows per status as the gauge `statesaga.workflows.stored`, read
    from the store at each collection (a /metrics scrape, an OTLP export): what the whole fleet
    did, which no single process counts. `serve` calls it; once per process."""
    from opentelemetry.metrics import CallbackOptions, Observation, get_meter

    dashboard: Dashboard = app.state.dashboard

    def observe(options: CallbackOptions) -> list[Observation]:
        try:
            counts = count(dashboard.ops.store, Filters())
        except Exception as exc:  # no series this time (Prometheus shows the gap), one line
            log.warning(
                "the stored workflows could not be counted: %s",
                dashboard.scrub(f"{type(exc).__name__}: {exc}"),
            )
            return []
        return [Observation(n, {"statesaga.state": state}) for state, n in counts.items()]

    get_meter("statesaga", __version__).create_observable_gauge(
        "statesaga.workflows.stored", [observe], "{workflow}", "stored workflows by status"
    )


def _passwords(url: str) -> list[str]:
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


def _limit(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(
            f"limit must be a whole number (1 to {MAX_PAGE_SIZE}), not {text[:20]!r}"
        ) from None


def _with(params: dict[str, str], key: str, value: str | None) -> dict[str, str]:
    """Query parameters with `key` set to `value`, or removed when value is empty."""
    out = {k: v for k, v in params.items() if k != key}
    return {**out, key: value} if value else out


def _local(request: Request, key: str) -> str:
    return _local_value(request.query_params.get(key, "/"))


def _local_value(target: str) -> str:
    """Only a path on this server (no open redirect to another host)."""
    # `//host` and `/\host` both leave the site in a browser.
    return target if target[:1] == "/" and target[1:2] not in ("/", "\\") else "/"


def _not_a_number(name: str) -> Any:
    # Python's json reads NaN and Infinity; JSON has no such numbers, and a store would keep
    # them as something else (null), so the input would change on the way in.
    raise BadRequest(f"{name} is not a JSON number")


def _json(text: str, what: str) -> Any:
    """Strict JSON, as every body, payload and input of the server is read."""
    try:
        return json.loads(text, parse_constant=_not_a_number)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply") from None
    except BadRequest as exc:
        raise BadRequest(f"{what} is not JSON: {exc}") from None


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8") from None
    data = _json(text, "the request body")
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


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


_SCHEMAS = SchemaGenerator(
    {
        "openapi": "3.0.3",
        "info": {"title": "statesaga", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
)


def create_app(settings: ServeSettings) -> Starlette:
    """The dashboard and API over one store; `settings.token` enables changes."""
    d = Dashboard(settings)

    async def openapi(request: Request) -> Response:
        return JSONResponse(_SCHEMAS.get_schema(routes=app.routes))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        d.ops.close()

    async def not_found(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "no such endpoint", "status": 404}, 404)
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        return d.page(request, "error.html", code, message="no such page", code=code)

    routes = [
        Route("/", d.list_page),
        Route("/workflows/{id}", d.instance_page),
        Route("/workflows/{id}/live", d.instance_live),
        Route("/workflows/{id}/cancel", d.cancel_confirm, methods=["GET"]),
        Route("/workflows/{id}/cancel", d.cancel_form, methods=["POST"]),
        Route("/workflows/{id}/signal", d.signal_form, methods=["POST"]),
        Route("/workflows/{id}/restart", d.restart_form, methods=["POST"]),
        Route("/definitions", d.definitions_page),
        Route("/definitions/{name}/start", d.start_form, methods=["POST"]),
        Route("/login", d.login_page, methods=["GET"]),
        Route("/login", d.login, methods=["POST"]),
        Route("/logout", d.logout, methods=["POST"]),
        Route("/api/workflows", d.api_list, methods=["GET"]),
        Route("/api/workflows", d.api_start, methods=["POST"]),
        Route("/api/workflows/{id}", d.api_get, methods=["GET"]),
        Route("/api/workflows/{id}/signal/{name}", d.api_signal, methods=["POST"]),
        Route("/api/workflows/{id}/cancel", d.api_cancel, methods=["POST"]),
        Route("/api/workflows/{id}/restart", d.api_restart, methods=["POST"]),
        Route("/api/definitions", d.api_definitions, methods=["GET"]),
        Route("/api/definitions/schema", d.api_definition_schema, methods=["GET"]),
        *plan_routes(d, _json_body),
        Route("/api/openapi.json", openapi, include_in_schema=False),
        Route("/metrics", metrics, methods=["GET"]),
        Mount("/static", StaticFiles(packages=[("statesaga.web", "static")]), name="static"),
    ]
    middleware = [Middleware(BodyLimit)]
    if settings.allowed_hosts:
        # A page on another site cannot read this one through DNS rebinding: its requests
        # carry that site's name in Host.
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found},
        middleware=middleware,
    )
    app.state.dashboard = d
    return app
