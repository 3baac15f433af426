"""The JSON API of the workers and queues (see statesaga.observability.fleet), and the
server's /metrics. Each docstring is the endpoint's OpenAPI operation (see api.py)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import StatesagaError
from .api import Api
from .fleet import fleet_of, requeue


class FleetApi(Api):
    async def _fleet(self, request: Request, part: str) -> Response:
        try:
            fleet = await run_in_threadpool(fleet_of, self.s.ops)
        except Exception as exc:
            return self.s.api_error(exc, request.url.path)
        data = fleet.as_json()
        keep = {"kind", "note", part} | ({"failed"} if part == "queues" else set())
        return JSONResponse({k: v for k, v in data.items() if k in keep})

    async def workers(self, request: Request) -> Response:
        """
        summary: "The workers: host, pid, state, what each runs, last heartbeat, silent"
        responses:
          "200":
            description: >
              {kind, note, workers: [{name, host, pid, state, queues, last_beat,
              workflow_id, step, kind, attempt, saga_beat, silent}]}; silent: listed by the
              queue as busy, but the saga it runs has had no heartbeat for 30 s (most
              likely dead)
          "503": {description: the queue cannot be reached}
        """
        return await self._fleet(request, "workers")

    async def queues(self, request: Request) -> Response:
        """
        summary: >
          Each queue's depth, delayed, running, failed and quarantined jobs, and who holds
          its scheduler
        responses:
          "200": {description: "{kind, note, queues: [...], failed: [the newest failed jobs]}"}
          "503": {description: the queue cannot be reached}
        """
        return await self._fleet(request, "queues")

    async def requeue(self, request: Request) -> Response:
        """
        summary: Put a failed statesaga job back on its queue
        security: [{bearer: []}]
        parameters:
          - {name: job, in: path, required: true, schema: {type: string}}
        responses:
          "202": {description: "{requeued: JOB}"}
          "401": {description: no token}
          "403": {description: "wrong token, or a read-only server"}
          "409": {description: "no such failed job, or not a statesaga job"}
        """
        job_id = request.path_params["job"]

        def act(body: dict[str, Any], by: str) -> dict[str, str]:
            requeue(self.s.ops, job_id, by)
            return {"requeued": job_id}

        return await self._change(request, act)


async def metrics(request: Request) -> Response:
    """
    summary: Prometheus metrics of this server process (OpenTelemetry)
    description: >
      The stored workflows per status (statesaga_workflows_stored, read from the store), and
      what this process counted: the workflows it started, signalled, cancelled or restarted,
      and the jobs it ran itself (an inline:// queue). Each worker counts the steps it runs and
      exports them its own way (OTEL_METRICS_EXPORTER, or worker --metrics-port).
    responses:
      "200": {description: the Prometheus text format}
      "501": {description: the otel extra is not installed}
    """
    from ..observability.otel import prometheus_text

    try:
        body, content_type = await run_in_threadpool(prometheus_text)
    except StatesagaError as exc:
        return Response(f"{exc}\n", 501, media_type="text/plain")
    return Response(body, media_type=content_type)
