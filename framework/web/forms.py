"""The pages' forms: log in and out, and each action behind a session and its CSRF value:
signal, cancel (after a confirmation), restart, start, a bulk cancel or restart (after a
confirmation naming what will happen to each), requeue a failed job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..models import StepStatus, WorkflowState
from .auth import COOKIE, SESSION_SECONDS, AuthRefused
from .fleet import requeue
from .http import BadRequest, BodyTooLarge, local_target, local_value, strict_json
from .server import Server

#: The most workflows one bulk action takes (a page of the list).
BULK_MAX = 100
BULK_ACTIONS = ("cancel", "force_cancel", "restart")


@dataclass(frozen=True)
class Plan:
    """What a bulk action would do to one workflow, said before it is done."""

    wf: WorkflowState
    acts: bool
    what: str
    from_step: str | None = None


class Forms:
    def __init__(self, server: Server) -> None:
        self.s = server

    async def login_page(self, request: Request) -> Response:
        return self.s.page(request, "login.html", error=None, next=local_target(request, "next"))

    async def login(self, request: Request) -> Response:
        s = self.s
        try:
            form = await request.form()
        except BodyTooLarge as exc:
            return s.error_page(request, exc)
        target = local_value(str(form.get("next") or "/"))
        try:
            cookie = s.gate.login(str(form.get("user") or ""), str(form.get("token") or ""))
        except AuthRefused as exc:
            return s.page(request, "login.html", exc.status, error=exc.message, next=target)
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

    async def _act(
        self,
        request: Request,
        act: Callable[[FormData, str], Any],
        done: Callable[[Any], str],
        back: str,
    ) -> Response:
        """Check the session and its CSRF value, run `act`, then go where `done` says."""
        s = self.s
        try:
            form = await request.form()
            session = s.gate.check_form(request.cookies.get(COOKIE), str(form.get("csrf", "")))
            result = await run_in_threadpool(act, form, f"web:{session.user}")
        except AuthRefused as exc:
            if exc.status == 401:  # back, after the login, to the page the form was on
                return RedirectResponse("/login?" + urlencode({"next": back}), 303)
            return s.error_page(request, exc)
        except Exception as exc:
            return s.error_page(request, exc)
        if isinstance(result, Response):
            return result
        return RedirectResponse(done(result), 303)

    async def _workflow_action(
        self, request: Request, act: Callable[[FormData, str], WorkflowState], done: str
    ) -> Response:
        wf_id = request.path_params.get("id", "")
        back = f"/workflows/{wf_id}" if wf_id else "/definitions"
        return await self._act(
            request,
            act,
            lambda wf: f"/workflows/{wf.id}?" + urlencode({"done": done}),
            back,
        )

    async def cancel_confirm(self, request: Request) -> Response:
        s = self.s
        try:
            wf = await run_in_threadpool(s.ops.store.get, request.path_params["id"])
        except Exception as exc:
            return s.error_page(request, exc)
        force = request.query_params.get("force") in ("1", "true")
        ended = s.ops.engine(s.catalog.for_instance(wf)).has_ended(wf.status.value)
        return s.page(request, "confirm.html", wf=wf, force=force, ended=ended)

    async def cancel_form(self, request: Request) -> Response:
        wf_id = request.path_params["id"]

        def act(form: FormData, by: str) -> WorkflowState:
            if form.get("confirm") != "yes":
                raise BadRequest("the cancel was not confirmed")
            return self.s.ops.cancel(wf_id, force=form.get("force") == "1", by=by)

        return await self._workflow_action(request, act, "cancel")

    async def signal_form(self, request: Request) -> Response:
        wf_id = request.path_params["id"]

        def act(form: FormData, by: str) -> WorkflowState:
            name = str(form.get("name") or "").strip()
            if not name:
                raise BadRequest("which signal? give its name")
            payload = strict_json(str(form.get("payload") or "null"), "the payload")
            return self.s.ops.signal(wf_id, name, payload, by=by)

        return await self._workflow_action(request, act, "signal")

    async def restart_form(self, request: Request) -> Response:
        wf_id = request.path_params["id"]

        def act(form: FormData, by: str) -> WorkflowState:
            step, reason = str(form.get("from_step") or ""), str(form.get("reason") or "")
            return self.s.ops.restart(wf_id, step, reason, by=by)

        return await self._workflow_action(request, act, "restart")

    async def start_form(self, request: Request) -> Response:
        name = request.path_params["name"]

        def act(form: FormData, by: str) -> WorkflowState:
            data = strict_json(str(form.get("input") or "{}"), "the input")
            if not isinstance(data, dict):
                raise BadRequest("the input must be a JSON object")
            session = str(form.get("session") or "").strip() or None
            return self.s.ops.start(name, data, session_id=session, by=by)

        return await self._workflow_action(request, act, "started")

    async def requeue_form(self, request: Request) -> Response:
        job_id = request.path_params["job"]
        return await self._act(
            request,
            lambda form, by: requeue(self.s.ops, job_id, by),
            lambda _: "/workers?done=requeue",
            "/workers",
        )

    # -- bulk ---------------------------------------------------------------------------------
    def _plans(self, action: str, ids: list[str]) -> list[Plan]:
        if action not in BULK_ACTIONS:
            raise BadRequest(f"action must be one of {', '.join(BULK_ACTIONS)}, not {action!r}")
        if not ids:
            raise BadRequest("no workflow was selected")
        if len(ids) > BULK_MAX:
            raise BadRequest(f"at most {BULK_MAX} workflows at once ({len(ids)} selected)")
        plans = []
        for wf_id in dict.fromkeys(ids):
            wf = self.s.ops.store.get(wf_id)
            plans.append(_plan(action, wf, self.s.ops.engine(self.s.catalog.for_instance(wf))))
        return plans

    async def bulk_confirm(self, request: Request) -> Response:
        s = self.s
        action = request.query_params.get("action", "")
        ids = request.query_params.getlist("id")
        try:
            plans = await run_in_threadpool(self._plans, action, ids)
        except Exception as exc:
            return s.error_page(request, exc)
        return s.page(request, "bulk.html", action=action, plans=plans, results=None)

    async def bulk_form(self, request: Request) -> Response:
        s = self.s

        def act(form: FormData, by: str) -> Response:
            if form.get("confirm") != "yes":
                raise BadRequest("the bulk action was not confirmed")
            action = str(form.get("action") or "")
            ids = [str(i) for i in form.getlist("id")]
            reason = str(form.get("reason") or "").strip()
            if action == "restart" and not reason:
                raise BadRequest("a restart needs a reason (kept in the history)")
            results = []
            for plan in self._plans(action, ids):
                results.append((plan, self._apply(action, plan, reason, by)))
            return s.page(request, "bulk.html", action=action, plans=None, results=results)

        return await self._act(request, act, lambda _: "/", "/")

    def _apply(self, action: str, plan: Plan, reason: str, by: str) -> str:
        if not plan.acts:
            return "left alone: " + plan.what
        try:
            if action == "restart":
                self.s.ops.restart(plan.wf.id, plan.from_step or "", reason, by=by)
                return f"restarted from {plan.from_step}"
            self.s.ops.cancel(plan.wf.id, force=action == "force_cancel", by=by)
            return "force-cancel requested" if action == "force_cancel" else "cancel requested"
        except Exception as exc:
            return "refused: " + self.s.scrub(str(exc))


def _plan(action: str, wf: WorkflowState, engine: Any) -> Plan:
    status = wf.status.value
    done = [st.name for st in wf.steps if st.status is StepStatus.COMPLETED]
    if action == "restart":
        if status != "FAILED":
            return Plan(wf, False, f"it is {status}; only a FAILED saga is restarted")
        step = next((st.name for st in wf.steps if st.status is not StepStatus.COMPLETED), None)
        if step is None:
            return Plan(wf, False, "every step has completed; nothing to re-run")
        return Plan(wf, True, f"re-run from {step} ({len(done)} completed step(s) kept)", step)
    if engine.has_ended(status):
        return Plan(wf, False, f"it has ended ({status}); nothing to cancel")
    undo = ", ".join(reversed(done)) or "nothing yet"
    if action == "force_cancel":
        return Plan(
            wf,
            True,
            f"compensated at once: undo {undo}; a step still running is undone when it returns",
        )
    return Plan(wf, True, f"the step in flight finishes, nothing new starts, then undo {undo}")
