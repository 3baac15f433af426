"""The HTTP API of agents' plans (statesaga.plans): list the tools, start a plan, read it,
revise it, approve or reject an item. Every change needs the server's bearer token, like the
other changes of the API; the tools are those of the server's `--handlers` allow-list."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..plans import plan_view, tools_in
from ..plans.tools import ToolShape
from .auth import NAME_RULE, valid_name

if TYPE_CHECKING:
    from .forms import Forms
    from .server import Server

ReadJson = Callable[[Request], Awaitable[dict[str, Any]]]
_SHAPES = ("openai", "anthropic", "mcp", "statesaga")


class BadPlanRequest(ValueError):
    """Raised when a plan request's body lacks what the endpoint takes (a 400)."""


def plan_routes(d: Server, forms: Forms, read_json: ReadJson) -> list[Route]:
    """The routes, bound to the server's dashboard (its gate, engine and error replies)."""
    ops = d.ops

    async def change(
        request: Request, act: Callable[[dict[str, Any], str], Any], success: int = 202
    ) -> Response:
        try:
            d.gate.check_bearer(request.headers.get("authorization"))
            body = await read_json(request)
            by = body.get("by")
            if not (isinstance(by, str) and valid_name(by)):
                raise BadPlanRequest(f"`by` must name who asks ({NAME_RULE})")
            wf = await run_in_threadpool(act, body, by)
        except Exception as exc:
            return d.api_error(exc, request.url.path)
        return JSONResponse(plan_view(wf), success)

    def _object(body: dict[str, Any], key: str) -> dict[str, Any]:
        value = body.get(key)
        if not isinstance(value, dict):
            raise BadPlanRequest(f"give `{key}`: a JSON object")
        return value

    async def tools(request: Request) -> Response:
        """
        summary: The tools an agent's model may be given (JSON Schema tool definitions)
        parameters:
          - {name: format, in: query, schema: {type: string, default: openai}}
        responses:
          200: {description: "[tool definitions]"}
        """
        shape = request.query_params.get("format", "openai")
        if shape not in _SHAPES:
            return d.api_error(BadPlanRequest(f"format is one of {', '.join(_SHAPES)}"))
        kind: ToolShape = shape  # type: ignore[assignment]
        found = tools_in(ops.registry)
        return JSONResponse([t.definition(kind) for t in found.values()])

    async def start(request: Request) -> Response:
        """
        summary: Start a plan (items of tool calls) as a durable saga
        security: [{bearer: []}]
        requestBody:
          content:
            application/json:
              schema:
                type: object
                required: [plan, by]
                properties:
                  plan: {type: object, description: "{plan, items: [{id, tool, args, ...}]}"}
                  session_id: {type: string}
                  by: {type: string}
        responses:
          201: {description: the plan's state}
          400: {description: "an unknown tool or bad args, naming the item and field"}
        """

        def act(body: dict[str, Any], by: str) -> Any:
            session = body.get("session_id")
            if session is not None and not isinstance(session, str):
                raise BadPlanRequest("`session_id` must be a string")
            return ops.start_plan(_object(body, "plan"), session_id=session, by=by)

        return await change(request, act, 201)

    async def show(request: Request) -> Response:
        """
        summary: A plan's items, open approval requests and versions
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
        responses:
          200: {description: the plan's state}
          404: {description: no such workflow}
          409: {description: the workflow was not started from a plan}
        """
        try:
            wf = await run_in_threadpool(ops.store.get, request.path_params["id"])
            return JSONResponse(plan_view(wf))
        except Exception as exc:
            return d.api_error(exc, request.url.path)

    async def revise(request: Request) -> Response:
        """
        summary: Revise a running plan (add, replace or remove items not started)
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
        security: [{bearer: []}]
        requestBody:
          content:
            application/json:
              schema:
                type: object
                required: [patch, by]
                properties:
                  patch: {type: object, description: "{base_version, add, replace, remove}"}
                  by: {type: string}
        responses:
          202: {description: the plan's state}
          409: {description: "an item that started, or a stale base_version"}
        """
        wf_id = request.path_params["id"]
        return await change(
            request,
            lambda body, by: ops.revise_plan(wf_id, _object(body, "patch"), by=by),
        )

    async def approve_item(request: Request) -> Response:
        """
        summary: Approve an item's exact call, by the hash of its arguments
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
          - {name: item, in: path, required: true, schema: {type: string}}
        security: [{bearer: []}]
        requestBody:
          content:
            application/json:
              schema:
                type: object
                required: [hash, by]
                properties: {hash: {type: string}, by: {type: string}, note: {type: string}}
        responses:
          202: {description: the plan's state}
          409: {description: "a hash that does not match, a request not open, or taken"}
        """
        wf_id, item = request.path_params["id"], request.path_params["item"]

        def act(body: dict[str, Any], by: str) -> Any:
            hash_, note = body.get("hash"), body.get("note")
            if not isinstance(hash_, str):
                raise BadPlanRequest("give `hash`: the approval request's hash")
            if note is not None and not isinstance(note, str):
                raise BadPlanRequest("`note` must be a string")
            return ops.approve(wf_id, item, hash_, by=by, note=note)

        return await change(request, act)

    async def reject_item(request: Request) -> Response:
        """
        summary: Reject an item's call; the plan unwinds
        parameters:
          - {name: id, in: path, required: true, schema: {type: string}}
          - {name: item, in: path, required: true, schema: {type: string}}
        security: [{bearer: []}]
        requestBody:
          content:
            application/json:
              schema:
                type: object
                required: [by]
                properties: {by: {type: string}, reason: {type: string}}
        responses:
          202: {description: the plan's state}
          409: {description: the request is not open}
        """
        wf_id, item = request.path_params["id"], request.path_params["item"]

        def act(body: dict[str, Any], by: str) -> Any:
            reason = body.get("reason", "")
            if not isinstance(reason, str):
                raise BadPlanRequest("`reason` must be a string")
            return ops.reject(wf_id, item, by=by, reason=reason)

        return await change(request, act)

    async def answer_form(request: Request) -> Response:
        """The dashboard's approval card: approve (with the hash it showed) or reject."""
        wf_id, item = request.path_params["id"], request.path_params["item"]

        def act(form: Any, by: str) -> Any:
            if form.get("answer") == "reject":
                ops.reject(wf_id, item, by=by, reason=str(form.get("reason", "")))
                done = "rejected"
            else:
                ops.approve(wf_id, item, str(form.get("hash", "")), by=by)
                done = "approved"
            return RedirectResponse(f"/workflows/{wf_id}?" + urlencode({"done": done}), 303)

        return await forms._workflow_action(request, act, "signal")

    return [
        Route("/workflows/{id}/approve/{item}", answer_form, methods=["POST"]),
        Route("/api/tools", tools, methods=["GET"]),
        Route("/api/plans", start, methods=["POST"]),
        Route("/api/plans/{id}", show, methods=["GET"]),
        Route("/api/plans/{id}/revise", revise, methods=["POST"]),
        Route("/api/plans/{id}/approve/{item}", approve_item, methods=["POST"]),
        Route("/api/plans/{id}/reject/{item}", reject_item, methods=["POST"]),
    ]


__all__ = ["plan_routes"]
