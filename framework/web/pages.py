"""The pages that read: the workflows list, a workflow (and its live part), the definitions,
the workers and queues. Every change goes through forms.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..models import StepStatus, WorkflowState, WorkflowStatus, halt_reason
from ..plans import open_requests, plan_view
from ..plans.plan import APPROVE
from .fleet import fleet_of
from .http import with_param
from .query import browse
from .server import Server
from .timeline import STUCK_AFTER, facts, resume_command, timeline
from .views import focus_step, story

HISTORY_SHOWN = 500
#: What the page says after an action (a key in the URL, so a link cannot make it say more).
DONE = {
    "started": "Started.",
    "signal": "Signal sent.",
    "cancel": "Cancel requested.",
    "restart": "Restarted.",
    "requeue": "Job requeued.",
    "approved": "Approved: the item runs with exactly the args shown.",
    "rejected": "Rejected: the plan unwinds, undoing what ran.",
}


class Pages:
    def __init__(self, server: Server) -> None:
        self.s = server

    async def list_page(self, request: Request) -> Response:
        s = self.s
        try:
            filters = s.filters(request)
            cursor = request.query_params.get("before")
            page = await run_in_threadpool(browse, s.ops.store, filters, cursor)
        except Exception as exc:
            return s.error_page(request, exc)
        q = request.query_params
        base = {
            k: v
            for k, v in {
                "status": filters.status.value if filters.status else None,
                "session": filters.session_id,
                "name": filters.name,
                "q": filters.id_prefix,
                "since": q.get("since"),
                "until": q.get("until"),
            }.items()
            if v
        }
        names = sorted({d.name for d in s.catalog.definitions()})
        context: dict[str, Any] = {
            "page": page,
            "filters": filters,
            "query": base,
            "statuses": [st.value for st in WorkflowStatus],
            "names": names,
            "total": sum(page.counts.values()),
            "first_url": "/?" + urlencode(base),
            "next_url": ("/?" + urlencode({**base, "before": page.next_cursor}))
            if page.next_cursor
            else None,
            "status_url": lambda st: "/?" + urlencode(with_param(base, "status", st)),
        }
        if q.get("fragment") == "rows":  # the list refreshing itself (no reload)
            return JSONResponse(
                {
                    "rows": s.render(request, "_rows.html", **context),
                    "counts": s.render(request, "_counts.html", **context),
                }
            )
        return s.page(request, "list.html", **context)

    def _instance_context(self, request: Request, wf: WorkflowState) -> dict[str, Any]:
        s = self.s
        definition = s.catalog.for_instance(wf)
        names = [st.name for st in wf.steps]
        chosen = request.query_params.get("step")
        step = chosen if chosen in names else focus_step(wf)
        pictures = [
            s.pictures.plan(wf) if wf.plan else s.pictures.instance(wf, definition, "steps"),
            s.pictures.instance(wf, definition, "workflow"),
        ]
        if step is not None:
            pictures.append(s.pictures.instance(wf, definition, "step", step))
        return {
            "wf": wf,
            "pictures": pictures,
            "focus": step,
            "chosen": chosen if chosen in names else None,
            "ended": s.ops.engine(definition).has_ended(wf.status.value),
            # A plan's approvals have their card (the exact call, its hash): not a raw signal.
            "signals": sorted(
                {
                    st.signal
                    for st in wf.steps
                    if st.kind == "wait" and st.signal
                    if not (wf.plan and st.signal.startswith(APPROVE))
                }
            ),
            "approvals": open_requests(wf),  # a plan's: statesaga.web.plans
            "plan": plan_view(wf) if wf.plan else None,
            "plan_specs": {v.number: v.spec for v in wf.plan.versions} if wf.plan else {},
            # The newest entries; a saga that ran for months keeps its page light (the
            # JSON has them all).
            "history": list(enumerate(wf.history, 1))[-HISTORY_SHOWN:],
            "history_hidden": max(len(wf.history) - HISTORY_SHOWN, 0),
            "tale": story(wf),
            # Said in words beside the diagrams (a note drawn inside one is too small to read).
            "halt": halt_reason(wf) if wf.status is WorkflowStatus.FAILED else "",
            "errors": _errors(wf),
            "facts": facts(wf),
            "times": timeline(wf),
            "resume": resume_command(s.scrub(s.settings.store), s.scrub(s.settings.queue)),
            "restart_from": next(
                (st.name for st in wf.steps if st.status is not StepStatus.COMPLETED), None
            ),
        }

    async def instance_page(self, request: Request) -> Response:
        s = self.s
        try:
            wf = await run_in_threadpool(s.ops.store.get, request.path_params["id"])
            context = await run_in_threadpool(self._instance_context, request, wf)
        except Exception as exc:
            return s.error_page(request, exc)
        message = DONE.get(request.query_params.get("done", ""))
        return s.page(request, "instance.html", message=message, **context)

    async def instance_live(self, request: Request) -> Response:
        """The live part of the instance page, when the document changed since `rev` (or,
        for a saga in flight, every few seconds: its heartbeat age moves)."""
        s = self.s
        try:
            wf = await run_in_threadpool(s.ops.store.get, request.path_params["id"])
            if request.query_params.get("rev") == str(wf.revision):
                return Response(status_code=204)
            context = await run_in_threadpool(self._instance_context, request, wf)
        except Exception as exc:
            return s.api_error(exc, request.url.path)
        html = s.render(request, "_live.html", **context)
        return JSONResponse({"revision": wf.revision, "status": wf.status.value, "html": html})

    async def definitions_page(self, request: Request) -> Response:
        s = self.s
        await run_in_threadpool(s.catalog.refresh)
        shown = []
        for entry in s.catalog.entries:
            d = entry.definition
            picture = await run_in_threadpool(s.pictures.definition, d) if d else None
            source = entry.path.read_text(encoding="utf-8")
            shown.append({"entry": entry, "picture": picture, "source": source})
        return s.page(request, "definitions.html", shown=shown, root=s.settings.definitions)

    async def workers_page(self, request: Request) -> Response:
        s = self.s
        try:
            fleet = await run_in_threadpool(fleet_of, s.ops)
        except Exception as exc:
            return s.error_page(request, exc)
        message = DONE.get(request.query_params.get("done", ""))
        return s.page(
            request,
            "workers.html",
            fleet=fleet,
            message=message,
            now=datetime.now(UTC),
            stuck_after=STUCK_AFTER,
        )


def _errors(wf: WorkflowState) -> list[tuple[str, str]]:
    """Each step's error (and its undo's), as the saga's diagram notes them."""
    out = []
    for st in wf.steps:
        if st.error is not None and st.status is not StepStatus.COMPLETED:
            out.append((st.name, f"{st.error.type}: {st.error.message}"))
        comp = st.compensation
        if comp is not None and comp.error is not None:
            out.append((st.name, f"undo failed: {comp.error.type}: {comp.error.message}"))
    return out
