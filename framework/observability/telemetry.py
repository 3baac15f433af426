"""The engine's observer: traces (statesaga.observability.tracing) and metrics
(statesaga.observability.metrics) of every committed transition, through the OpenTelemetry API
(the SDK is the application's). With no provider installed, every hook returns after a type
check: tracing off costs nothing measurable.
"""

from __future__ import annotations

import logging
import time
from contextvars import Token
from dataclasses import replace
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Status, StatusCode

from ..models import HistoryEntry, StepStatus, WorkflowState
from ..ports import Job
from ..vocabulary import StepTrigger as S
from ..vocabulary import WorkflowTrigger as W
from .logs import StepScope, reset_scope, set_scope
from .metrics import Instruments, count_step, count_workflow, metrics_on
from .tracing import (
    _ENDED,
    _OPERATED,
    SCOPE,
    Attempt,
    Tracing,
    _annotate,
    _in_flight,
    _run_start,
    current_attempt,
    parse_traceparent,
    traceparent,
    workflow_span_context,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

# The name it logged under before the tree's split: operators filter and alert on it.
log = logging.getLogger("statesaga.telemetry")


class Telemetry:
    """The engine's observer: `begin` a workflow, wrap each `job`, `stamp` jobs, `observe`
    every committed transition. Uses the global providers of the application (or of the CLI,
    see statesaga.observability.otel); installs none."""

    def __init__(self) -> None:
        self.tracing = Tracing()
        self._instruments: Instruments | None = None
        # Once through the public getters: they install a provider named by
        # OTEL_PYTHON_TRACER_PROVIDER / OTEL_PYTHON_METER_PROVIDER (auto-instrumentation).
        trace.get_tracer_provider()
        metrics.get_meter_provider()

    def tracer(self) -> Tracer | None:
        return self.tracing.tracer()

    def instruments(self) -> Instruments | None:
        if not metrics_on():
            return None
        if self._instruments is None:
            from ..resources import __version__

            self._instruments = Instruments(metrics.get_meter(SCOPE, __version__))
        return self._instruments

    # -- hooks --------------------------------------------------------------------------------
    def begin(self, wf: WorkflowState) -> None:
        """Give a new workflow its trace (see Tracing.begin)."""
        try:
            if self.tracer() is not None:
                self.tracing.begin(wf)
        except Exception:  # telemetry must never stop a workflow
            log.exception("tracing the start of %s failed", wf.id)

    def stamp(self, job: Job, delay: float, wf: WorkflowState) -> Job:
        """What travels with a job: when it is ready (for the queue-wait metric) and the
        workflow span it belongs under."""
        if not wf.trace and not metrics_on():
            return job
        try:
            ctx = workflow_span_context(wf)
        except Exception:  # telemetry must never stop a job
            log.exception("tracing a job of %s failed", wf.id)
            ctx = None
        return replace(
            job,
            ready_at=time.time() + max(delay, 0.0),
            trace=traceparent(ctx) if ctx is not None else "",
        )

    def job(self, job: Job, claimed: bool = False) -> _JobRun:
        """Around one job: the attempt's span (current while the handler runs) and the step
        scope of every log record written meanwhile. `claimed`: the step was claimed by the
        settle of the previous one in this process (eager dispatch), so no queue wait."""
        return _JobRun(self, job, claimed)

    def _start_attempt(self, job: Job, claimed: bool = False) -> Attempt | None:
        tracer = self.tracer()
        if tracer is None and not metrics_on():
            return None
        span = self.tracing.attempt_span(tracer, job) if tracer is not None else None
        return Attempt(job, span, claimed=claimed, eager=claimed, taken=time.time())

    def observe(self, wf: WorkflowState, entry: HistoryEntry) -> None:
        """An engine listener: called once for every committed transition."""
        if entry.step is not None and entry.dest in _FAILED_ATTEMPT:
            _log_failure(wf, entry)
        tracer = self.tracer()
        meters = self.instruments()
        if tracer is None and meters is None:
            return
        if entry.step is None:
            self._workflow_entry(wf, entry, tracer, meters)
            return
        step = wf.step(entry.step)
        current = current_attempt.get()
        mine = current if current is not None and current.owns(wf, entry) else None
        if meters is not None:
            count_step(wf, step, entry, meters, mine)
        if tracer is None:
            return
        if mine is not None and mine.span is not None:
            _annotate(mine, wf, step, entry)
        elif entry.trigger == S.TIME_OUT and entry.source.startswith(StepStatus.EXECUTING.value):
            self.tracing.close_lost(tracer, wf, step, entry, "step", entry.attempt or step.attempts)
        elif entry.trigger == S.REQUEUE and entry.source == StepStatus.COMPENSATING.value:
            comp = step.compensation
            if comp is not None and _in_flight(comp.started_at, comp.finished_at):
                self.tracing.close_lost(tracer, wf, step, entry, "compensation", comp.attempts)

    def _workflow_entry(
        self,
        wf: WorkflowState,
        entry: HistoryEntry,
        tracer: Tracer | None,
        meters: Instruments | None,
    ) -> None:
        started = _run_start(wf) if entry.dest in _ENDED else None
        if meters is not None:
            count_workflow(wf, entry, started, meters)
        if tracer is None:
            return
        if entry.trigger == W.START or entry.trigger in _OPERATED:
            self.tracing.emit_moment(tracer, wf, entry)
        if entry.dest not in _ENDED:
            return
        current = current_attempt.get()
        if current is None:
            self.tracing.emit_workflow(tracer, wf, entry, started)
        else:  # once the attempt that ended it has ended: a parent outlasts its children
            current.then.append(lambda: self.tracing.emit_workflow(tracer, wf, entry, started))


class _JobRun:
    """The context of one job (a class, not a generator: it is on every job's path)."""

    __slots__ = ("_telemetry", "_job", "_claimed", "_scope", "_attempt", "_token", "_ctx")

    def __init__(self, telemetry: Telemetry, job: Job, claimed: bool = False) -> None:
        self._telemetry = telemetry
        self._job = job
        self._claimed = claimed
        self._scope: Token[StepScope | None] | None = None
        self._attempt: Attempt | None = None
        self._token: Token[Attempt | None] | None = None
        self._ctx: object = None

    def __enter__(self) -> None:
        job = self._job
        if job.kind == "timer":  # a timer's transitions are events of the workflow span
            return
        self._scope = set_scope(StepScope(job.workflow_id, job.step, job.attempt, job.kind))
        try:
            attempt = self._attempt = self._telemetry._start_attempt(job, self._claimed)
        except Exception:  # telemetry must never stop a job
            log.exception("tracing job %s failed", job)
            return
        if attempt is None:
            return
        self._token = current_attempt.set(attempt)
        if attempt.span is not None:
            self._ctx = otel_context.attach(trace.set_span_in_context(attempt.span))

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        attempt = self._attempt
        if attempt is not None:
            span = attempt.span
            if self._ctx is not None:
                otel_context.detach(self._ctx)  # type: ignore[arg-type]
            if self._token is not None:
                current_attempt.reset(self._token)
            if span is not None:
                if exc is not None:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                # An attempt's span is ended by the process that saved its outcome. One whose
                # outcome this process did not save (it died or failed mid-attempt, recovery
                # timed it out, its late result was refused) is closed by the process that
                # did: not ending it here keeps it from being exported twice.
                if attempt.settled:
                    span.end()
            for emit in attempt.then:
                try:
                    emit()
                except Exception:  # telemetry must never stop a job
                    log.exception("tracing the end of %s failed", self._job.workflow_id)
        if self._scope is not None:
            reset_scope(self._scope)


_FAILED_ATTEMPT = frozenset({StepStatus.RETRYING.value, StepStatus.FAILED.value})
_steps_log = logging.getLogger("statesaga.steps")


def _log_failure(wf: WorkflowState, entry: HistoryEntry) -> None:
    """A failed attempt, said once, by the process that saved it (the history keeps it too)."""
    step = wf.step(entry.step or "")
    error = step.error
    what = f"{error.type}: {error.message}" if error is not None else entry.detail or entry.trigger
    if entry.dest == StepStatus.RETRYING.value and step.next_attempt_at is not None:
        wait = max((step.next_attempt_at - entry.at).total_seconds(), 0.0)
        _steps_log.info(
            "%s step %s attempt %s failed (%s); retry in %.2fs",
            wf.id, step.name, entry.attempt, what, wait,
        )  # fmt: skip
    else:
        _steps_log.warning("%s step %s failed (%s)", wf.id, step.name, what)


__all__ = ["Telemetry", "parse_traceparent", "traceparent", "workflow_span_context"]
