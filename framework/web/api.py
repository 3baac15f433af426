"""The JSON API. Each endpoint's docstring is its OpenAPI operation (YAML, read by
openapi.py): quote any text with a comma or a colon in it, or write it as a block."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..models import WorkflowState
from .auth import NAME_RULE, valid_name
from .http import BadRequest, json_body, parse_limit
from .query import PAGE_SIZE, browse
from .server import Server
from .timeline import facts
from .views import summary


class Api:
    def __init__(self, server: Server) -> None:
        self.s = server

    async def _change(
        self,
        request: Request,
        act: Callable[[dict[str, Any], str], Any],
        success: int = 202,
    ) -> Response:
        s = self.s
        try:
            s.gate.check_bearer(request.headers.get("authorization"))
            body = await json_body(request)
            by = body.get("by") or None
            if by is not None and not (isinstance(by, str) and valid_name(by)):
                raise BadRequest(f"`by` must be a string, a name ({NAME_RULE}): who asks")
            result = await run_in_threadpool(act, body, f"api:{by}" if by else "api")
        except Exception as exc:
            return s.api_error(exc, request.url.path)
        if isinstance(result, WorkflowState):
            return JSONResponse(json.loads(result.model_dump_json()), success)
        return JSONResponse(result, success)

    async def list(self, request: Request) -> Response:
        """
        summary: List workflows, newest first
        parameters:
          - {name: status, in: query, schema: {type: string}, description: e.g. RUNNING}
          - {name: session, in: query, schema: {type: string}}
          - {name: name, in: query, schema: {type: string}, description: a definition's name}
          - {name: q, in: query, schema: {type: string}, description: an id or its beginning}
          - name: since
            in: query
            schema: {type: string}
            description: "created at or after (an ISO time; UTC unless zoned)"
          - {name: until, in: query, schema: {type: string}, description: created before}
          - name: before
            in: query
            schema: {type: string}
            description: the next_cursor of the previous page
          - {name: limit, in: query, schema: {type: integer, default: 50, maximum: 500}}
        responses:
          "200": {description: "{workflows: [...], next_cursor, counts: {STATUS: n}}"}
          "400": {description: an unknown status or time or a bad cursor}
        """
        s = self.s
        try:
            filters = s.filters(request)
            limit = parse_limit(request.query_params.get("limit", str(PAGE_SIZE)))
            page = await run_in_threadpool(
                browse, s.ops.store, filters, request.query_params.get("before"), limit
            )
        except Exception as exc:
            return s.api_error(exc, request.url.path)
        return JSONResponse(
            {
                "workflows": [summary(wf) for wf in page.workflows],
                "next_cursor": page.next_cursor,
                "counts": page.counts,
                # Only when a search by id ran out of rows to read: next_cursor continues it.
                **({"searched_out": True} if page.searched_out else {}),
                # Stored documents left out because they cannot be read: id -> why.
                **({"unreadable": page.unreadable} if page.unreadable else {}),
            }
        )

    async def get(self, request: Request) -> Response:
        """
        summary: One workflow's stored document (steps, results, errors, history)
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
        responses:
          "200": {description: the WorkflowState document}
          "404": {description: no such workflow}
        """
        try:
            wf = await run_in_threadpool(self.s.ops.store.get, request.path_params["id"])
        except Exception as exc:
            return self.s.api_error(exc, request.url.path)
        return JSONResponse(json.loads(wf.model_dump_json()))

    async def health(self, request: Request) -> Response:
        """
        summary: "A workflow's times and liveness: started, ended, heartbeat age, stuck"
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
        responses:
          "200": {description: "{created, started, ended, took, heartbeat, heartbeat_age, stuck}"}
          "404": {description: no such workflow}
        """
        try:
            wf = await run_in_threadpool(self.s.ops.store.get, request.path_params["id"])
        except Exception as exc:
            return self.s.api_error(exc, request.url.path)
        f = facts(wf)

        def iso(at: Any) -> str | None:
            return at.isoformat() if at is not None else None

        return JSONResponse(
            {
                "id": wf.id,
                "status": wf.status.value,
                "created": iso(f.created),
                "started": iso(f.started),
                "ended": iso(f.ended),
                "took": f.took,
                "heartbeat": iso(f.heartbeat),
                "heartbeat_age": f.heartbeat_age,
                "stuck": f.stuck,
            }
        )

    async def start(self, request: Request) -> Response:
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
          "201": {description: the new workflow's document}
          "400": {description: bad JSON or input}
          "401": {description: no token}
          "403": {description: "wrong token, or a read-only server"}
          "404": {description: no such definition under --definitions}
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
            return self.s.ops.start(name, data, session_id=session, by=by)

        return await self._change(request, act, 201)

    async def signal(self, request: Request) -> Response:
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
                  payload: {description: "any JSON value; the waiting step's result"}
                  by: {type: string}
        responses:
          "202": {description: the workflow's document after the signal}
          "400": {description: bad JSON}
          "401": {description: no token}
          "403": {description: "wrong token, or a read-only server"}
          "404": {description: no such workflow}
          "409": {description: "no step waits for this signal, or the workflow has ended"}
        """
        wf_id, name = request.path_params["id"], request.path_params["name"]
        return await self._change(
            request, lambda body, by: self.s.ops.signal(wf_id, name, body.get("payload"), by=by)
        )

    async def cancel(self, request: Request) -> Response:
        """
        summary: "Cancel a workflow (graceful; ?force=true compensates at once)"
        security: [{bearer: []}]
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
          - {name: force, in: query, schema: {type: boolean, default: false}}
        responses:
          "202": {description: the workflow's document after the cancel}
          "401": {description: no token}
          "403": {description: "wrong token, or a read-only server"}
          "404": {description: no such workflow}
          "409": {description: the workflow has already ended}
        """
        wf_id = request.path_params["id"]
        force = request.query_params.get("force", "false").lower() in ("1", "true", "yes")
        return await self._change(
            request, lambda body, by: self.s.ops.cancel(wf_id, force=force, by=by)
        )

    async def restart(self, request: Request) -> Response:
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
          "202": {description: the workflow's document after the restart}
          "400": {description: bad JSON}
          "401": {description: no token}
          "403": {description: "wrong token, or a read-only server"}
          "404": {description: no such workflow}
          "409": {description: "not FAILED, or no such step"}
        """
        wf_id = request.path_params["id"]

        def act(body: dict[str, Any], by: str) -> WorkflowState:
            step, reason = body.get("from_step"), body.get("reason")
            if not isinstance(step, str) or not isinstance(reason, str):
                raise BadRequest("give `from_step` and `reason` (strings)")
            return self.s.ops.restart(wf_id, step, reason, by=by)

        return await self._change(request, act)

    async def definitions(self, request: Request) -> Response:
        """
        summary: The definitions under --definitions
        responses:
          "200": {description: "[{name, version, file, steps, error}]"}
        """
        s = self.s
        await run_in_threadpool(s.catalog.refresh)
        return JSONResponse(
            [
                {
                    "name": e.name,
                    "version": str(e.definition.version) if e.definition else None,
                    "file": e.path.name,
                    "steps": [st.name for st in e.definition.steps] if e.definition else [],
                    "error": e.error,
                }
                for e in s.catalog.entries
            ]
        )

    async def definition_schema(self, request: Request) -> Response:
        """
        summary: The JSON Schema of a workflow definition (the files under --definitions)
        responses:
          "200": {description: "a JSON Schema, draft 2020-12"}
        """
        from ..definitions.spec import DefinitionSpec

        schema = DefinitionSpec.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = "statesaga workflow definition"
        return JSONResponse(schema)
