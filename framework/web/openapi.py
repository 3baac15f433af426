"""The OpenAPI document of the JSON API (each endpoint's docstring is its operation) and the
API docs page, rendered here from that same document (no CDN, no script)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.schemas import SchemaGenerator

from ..resources import __version__
from .server import Server

_GENERATOR = SchemaGenerator(
    {
        "openapi": "3.0.3",
        "info": {
            "title": "statesaga",
            "version": __version__,
            "description": "Durable workflows with saga compensation: read every stored "
            "workflow; with the token, start, signal, cancel and restart them.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
)
_METHODS = ("get", "post", "put", "patch", "delete")


def document(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of `routes` (those under /api/ and /metrics)."""
    # Only the API's: the pages' docstrings are prose, not operations.
    api = [r for r in routes if str(getattr(r, "path", "")).startswith(("/api/", "/metrics"))]
    schema: dict[str, Any] = _GENERATOR.get_schema(routes=api)
    # A round trip through JSON: what the endpoint serves is what a validator reads.
    return dict(json.loads(json.dumps(schema)))


class Docs:
    def __init__(self, server: Server, routes: list[BaseRoute]) -> None:
        self.s = server
        self.routes = routes

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(document(self.routes))

    async def page(self, request: Request) -> Response:
        spec = document(self.routes)
        operations = []
        for path, item in sorted(spec.get("paths", {}).items()):
            for method in _METHODS:
                op = item.get(method)
                if op is None:
                    continue
                body = (
                    op.get("requestBody", {})
                    .get("content", {})
                    .get("application/json", {})
                    .get("schema")
                )
                operations.append(
                    {
                        "method": method.upper(),
                        "path": path,
                        "anchor": f"{method}-{path.strip('/').replace('/', '-')}",
                        "summary": op.get("summary", ""),
                        "description": op.get("description", ""),
                        "token": bool(op.get("security")),
                        "parameters": op.get("parameters", []),
                        "body": json.dumps(body, indent=2) if body else None,
                        "responses": sorted(op.get("responses", {}).items()),
                    }
                )
        return self.s.page(request, "api.html", spec=spec, operations=operations)
