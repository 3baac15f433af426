"""Every route of the server, in one table: a page or an endpoint is added here, and its
handler lives in pages.py (reads), forms.py (a page's actions), api.py (JSON; its docstring
is its OpenAPI operation) or openapi.py (the API's document and docs page)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .api import Api
from .api_fleet import FleetApi, metrics
from .forms import Forms
from .http import json_body
from .openapi import Docs
from .pages import Pages
from .plans import plan_routes
from .server import Server


def routes(server: Server) -> list[BaseRoute]:
    pages, forms, api, fleet = Pages(server), Forms(server), Api(server), FleetApi(server)
    table: list[BaseRoute] = [
        # pages (read)
        Route("/", pages.list_page),
        Route("/workflows/{id}", pages.instance_page),
        Route("/workflows/{id}/live", pages.instance_live),
        Route("/definitions", pages.definitions_page),
        Route("/workers", pages.workers_page),
        # pages (act: a session and its CSRF value)
        Route("/workflows/{id}/cancel", forms.cancel_confirm, methods=["GET"]),
        Route("/workflows/{id}/cancel", forms.cancel_form, methods=["POST"]),
        Route("/workflows/{id}/signal", forms.signal_form, methods=["POST"]),
        Route("/workflows/{id}/restart", forms.restart_form, methods=["POST"]),
        Route("/bulk", forms.bulk_confirm, methods=["GET"]),
        Route("/bulk", forms.bulk_form, methods=["POST"]),
        Route("/definitions/{name}/start", forms.start_form, methods=["POST"]),
        Route("/jobs/{job}/requeue", forms.requeue_form, methods=["POST"]),
        Route("/login", forms.login_page, methods=["GET"]),
        Route("/login", forms.login, methods=["POST"]),
        Route("/logout", forms.logout, methods=["POST"]),
        # the JSON API (in the OpenAPI document)
        Route("/api/workflows", api.list, methods=["GET"]),
        Route("/api/workflows", api.start, methods=["POST"]),
        Route("/api/workflows/{id}", api.get, methods=["GET"]),
        Route("/api/workflows/{id}/health", api.health, methods=["GET"]),
        Route("/api/workflows/{id}/signal/{name}", api.signal, methods=["POST"]),
        Route("/api/workflows/{id}/cancel", api.cancel, methods=["POST"]),
        Route("/api/workflows/{id}/restart", api.restart, methods=["POST"]),
        Route("/api/definitions", api.definitions, methods=["GET"]),
        Route("/api/definitions/schema", api.definition_schema, methods=["GET"]),
        Route("/api/workers", fleet.workers, methods=["GET"]),
        Route("/api/queues", fleet.queues, methods=["GET"]),
        Route("/api/jobs/{job}/requeue", fleet.requeue, methods=["POST"]),
        *plan_routes(server, forms, json_body),
        Route("/metrics", metrics, methods=["GET"]),
        Mount("/static", StaticFiles(packages=[("statesaga.web", "static")]), name="static"),
    ]
    # The document describes the table above, so it is made from it.
    docs = Docs(server, list(table))
    table += [
        Route("/api/openapi.json", docs.openapi, include_in_schema=False),
        Route("/api/docs", docs.page, include_in_schema=False),
    ]
    return table
