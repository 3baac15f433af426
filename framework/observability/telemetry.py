"""Traces and metrics of workflows through the OpenTelemetry API (the SDK is the application's).

One trace per workflow. Its spans are made in different processes, so each is emitted by the
process that sees it end, with ids every process can compute:

- `begin` (the engine, before the new workflow is first saved) asks the tracer for a span
  context and keeps it in the document (`WorkflowState.trace`): the workflow span's trace id and
  span id, and the caller's span as its parent. That span is emitted by whichever process
  commits the workflow's end state (a worker, the CLI, recovery), with the start time and the
  events (retries, waits, signals, cancels, recoveries) read from the history.
- Every job carries the workflow span's context (`Job.trace`), so the worker that runs a step
  attempt (`job`) starts the attempt's span as its child and runs the handler inside it: the
  handler's own spans nest under its step. An attempt's span id is derived from the workflow
  span and the attempt, so when a worker dies mid-step, the recovery that times the attempt
  out emits that very span, and whatever the dead worker exported under it stays attached.
- A stale or duplicate job never claims its attempt, and a late result is refused: their spans
  are never ended, so never exported; a trace shows each attempt once.

Pinned ids need the SDK's tracer (it has an `id_generator`); with another implementation the
spans are still emitted, with ids of its own. Metrics count committed transitions (the engine's
listeners see each once, in the process that saved it). With no provider installed, every
hook returns after a type check: tracing off costs nothing measurable.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from ..models import HistoryEntry, SagaStep, StepStatus, WorkflowState, WorkflowStatus
from ..ports import Job
from ..vocabulary import WORKFLOW_ENDED
from ..vocabulary import StepTrigger as S
from ..vocabulary import WorkflowTrigger as W
from .logs import StepScope, reset_scope, set_scope

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

SCOPE = "statesaga"
# The name it logged under before the tree's split: operators filter and alert on it.
log = logging.getLogger("statesaga.telemetry")
#: A workflow's span is emitted when it reaches one of these (FAILED halts: the span ends;
#: a restart starts a new run, with a span of its own).
_ENDED = frozenset(s.value for s in WORKFLOW_ENDED)
#: Workflow transitions that are routine (one per step) and would crowd the span's events.
_QUIET = frozenset({W.ADVANCE})
#: Step transitions worth an event on the workflow span (the attempt spans tell the rest).
_STEP_EVENTS = frozenset({S.SIGNAL, S.WAKE, S.WAIT_TIMEOUT, S.TIME_OUT, S.REQUEUE, S.SKIP})

# -- pinned span ids ------------------------------------------------------------------------
_pin: ContextVar[tuple[int, int] | None] = ContextVar("statesaga_pinned_ids", default=None)


class _PinnedIds:
    """Wraps the SDK tracer's id generator: inside `_pinned`, it returns the given ids."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def generate_trace_id(self) -> int:
        pinned = _pin.get()
        return pinned[0] if pinned else int(self._inner.generate_trace_id())

    def generate_span_id(self) -> int:
        pinned = _pin.get()
        return pinned[1] if pinned else int(self._inner.generate_span_id())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextmanager
def _pinned(trace_id: int, span_id: int) -> Iterator[None]:
    token = _pin.set((trace_id, span_id))
    try:
        yield
    finally:
        _pin.reset(token)


def _derive(trace_id: int, span_id: int, what: str) -> int:
    """A span id every process computes alike for the same workflow span and `what`."""
    digest = hashlib.sha256(f"{trace_id:032x}{span_id:016x}{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def traceparent(ctx: SpanContext) -> str:
    """W3C `traceparent` of a span context."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The span context of a `traceparent`; None for anything else (a job is outside input)."""
    if not value or not isinstance(value, str):
        return None
    parts = value.split("-")
    if len(parts) != 4:
        return None
    try:
        ctx = SpanContext(
            int(parts[1], 16),
            int(parts[2], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(parts[3], 16)),
        )
    except ValueError:
        return None
    return ctx if ctx.is_valid else None


def workflow_span_context(wf: WorkflowState) -> SpanContext | None:
    """The context of the workflow's span for its current run (a restart starts a new run:
    a new span in the same trace)."""
    stored = parse_traceparent(wf.trace.get("traceparent"))
    if stored is None:
        return None
    run = _restarts(wf)
    if not run:
        return stored
    return SpanContext(
        stored.trace_id,
        _derive(stored.trace_id, stored.span_id, f"run:{run}"),
        is_remote=True,
        trace_flags=stored.trace_flags,
    )


def _restarts(wf: WorkflowState) -> int:
    return sum(1 for e in wf.history if e.step is None and e.trigger == W.RESTART)


def _ns(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1e9)


def _as_parent(ctx: SpanContext | None) -> otel_context.Context:
    """A context whose only span is `ctx` (an empty one for a root: never the current span)."""
    if ctx is None:
        return otel_context.Context()
    return trace.set_span_in_context(NonRecordingSpan(ctx), otel_context.Context())


# -- the attempt a worker is running ----------------------------------------------------------
@dataclass
class _Attempt:
    job: Job
    span: Span | None
    #: A transition of this attempt was saved by this process (its claim or its outcome).
    claimed: bool = False
    #: Claimed by the settle of the previous step in this process: it never waited in a queue.
    eager: bool = False
    settled: bool = False
    #: When this process took the job (the end of its queue wait).
    taken: float = 0.0
    waited: bool = False
    #: What to emit once this attempt's span has ended (the workflow span it completed).
    then: list[Callable[[], None]] = field(default_factory=list)

    def owns(self, wf: WorkflowState, entry: HistoryEntry) -> bool:
        """Is this transition one of this attempt's own (its claim, its outcome)?"""
        job = self.job
        if entry.step != job.step or wf.id != job.workflow_id:
            return False
        if job.kind == "compensation":
            return entry.trigger in _COMPENSATION_OUTCOMES
        if entry.attempt != job.attempt:
            return False
        return entry.trigger in _ATTEMPT_TRIGGERS or entry.source.startswith("EXECUTING.")


#: An action attempt's claim and its outcomes.
_ATTEMPT_TRIGGERS = frozenset({S.DISPATCH, S.SUCCEED, S.FAIL, S.TIME_OUT})
#: The outcomes of a compensation attempt (its claim is no transition).
_COMPENSATION_OUTCOMES = frozenset({S.COMPENSATED, S.COMPENSATION_FAILED})
#: The transitions that settle an attempt (its span ends with the process that saved one).
_SETTLING = frozenset({S.SUCCEED, S.FAIL, S.TIME_OUT}) | _COMPENSATION_OUTCOMES


_attempt: ContextVar[_Attempt | None] = ContextVar("statesaga_attempt", default=None)


# `get_tracer_provider()` reads os.environ on every call while no provider is set: too slow
# for every transition. The API keeps the installed provider in a module global, None until
# set; read it directly (and through the public getter should a version not have it).
_metrics_api = sys.modules.get("opentelemetry.metrics._internal", metrics)
_UNKNOWN = object()


def _tracer_provider() -> object | None:
    """The installed tracer provider, None while tracing is off."""
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is _UNKNOWN:
        provider = trace.get_tracer_provider()
    if provider is None or isinstance(
        provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider
    ):
        return None
    return provider


def _metrics_on() -> bool:
    provider = getattr(_metrics_api, "_METER_PROVIDER", _UNKNOWN)
    if provider is _UNKNOWN:
        provider = metrics.get_meter_provider()
    return provider is not None and type(provider).__name__ not in (
        "_ProxyMeterProvider",
        "NoOpMeterProvider",
    )


#: Histogram buckets in seconds (the SDK's defaults suit milliseconds): from a fast in-process
#: step to a long human wait.
_SECONDS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600]


class _Instruments:
    def __init__(self, meter: metrics.Meter) -> None:
        c = meter.create_counter

        def h(name: str, unit: str, description: str) -> metrics.Histogram:
            return meter.create_histogram(
                name, unit, description, explicit_bucket_boundaries_advisory=_SECONDS
            )

        self.started = c("statesaga.steps.started", "{attempt}", "step attempts claimed")
        self.completed = c("statesaga.steps.completed", "{step}", "steps completed")
        self.failed = c("statesaga.steps.failed", "{step}", "steps failed for good")
        self.retried = c("statesaga.steps.retried", "{attempt}", "failed attempts retried")
        self.timed_out = c(
            "statesaga.steps.timed_out", "{attempt}", "attempts timed out (or lost with a worker)"
        )
        self.compensations = c(
            "statesaga.compensations", "{attempt}", "compensation attempts, by outcome"
        )
        self.workflows = c("statesaga.workflows.ended", "{workflow}", "workflows by end state")
        self.recoveries = c("statesaga.recoveries", "{workflow}", "workflows resumed")
        self.step_duration = h("statesaga.step.duration", "s", "one attempt, claim to outcome")
        self.workflow_duration = h("statesaga.workflow.duration", "s", "start to end state")
        self.queue_wait = h("statesaga.queue.wait", "s", "a job ready (enqueued) to claimed")


class Telemetry:
    """The engine's observer: `begin` a workflow, wrap each `job`, `stamp` jobs, `observe`
    every committed transition. Uses the global providers of the application (or of the CLI,
    see statesaga.observability.otel); installs none."""

    def __init__(self) -> None:
        self._provider: object = None
        self._tracer: Tracer | None = None
        self._pins = False
        self._instruments: _Instruments | None = None
        # Once through the public getters: they install a provider named by
        # OTEL_PYTHON_TRACER_PROVIDER / OTEL_PYTHON_METER_PROVIDER (auto-instrumentation).
        trace.get_tracer_provider()
        metrics.get_meter_provider()

    # -- providers --------------------------------------------------------------------------
    def tracer(self) -> Tracer | None:
        """statesaga's tracer from the current global provider, or None while tracing is off."""
        provider = _tracer_provider()
        if provider is not self._provider:
            self._provider = provider
            self._tracer = None
            if isinstance(provider, trace.TracerProvider):
                from ..resources import __version__

                tracer = provider.get_tracer(SCOPE, __version__)
                ids = getattr(tracer, "id_generator", None)
                self._pins = ids is not None
                if ids is not None:
                    tracer.id_generator = _PinnedIds(ids)  # type: ignore[attr-defined]
                self._tracer = tracer
        return self._tracer

    def instruments(self) -> _Instruments | None:
        if not _metrics_on():
            return None
        if self._instruments is None:
            from ..resources import __version__

            self._instruments = _Instruments(metrics.get_meter(SCOPE, __version__))
        return self._instruments

    def _span(
        self,
        tracer: Tracer,
        name: str,
        parent: SpanContext | None,
        pin: tuple[int, int] | None,
        start: int | None,
        attributes: Mapping[str, Any],
    ) -> Span:
        ctx = _as_parent(parent)
        if pin is None or not self._pins:
            return tracer.start_span(name, ctx, attributes=attributes, start_time=start)
        with _pinned(*pin):
            return tracer.start_span(name, ctx, attributes=attributes, start_time=start)

    # -- hooks --------------------------------------------------------------------------------
    def begin(self, wf: WorkflowState) -> None:
        """Give a new workflow its trace: the span context of its workflow span, kept in the
        document. The caller's current span (a request in the application) is its parent."""
        try:
            self._begin(wf)
        except Exception:  # telemetry must never stop a workflow
            log.exception("tracing the start of %s failed", wf.id)

    def _begin(self, wf: WorkflowState) -> None:
        tracer = self.tracer()
        if tracer is None:
            return
        # Asked for ids and the sampling decision only: never ended, so never exported. The
        # workflow span itself is emitted with these ids when the workflow ends.
        probe = tracer.start_span(f"workflow {wf.name}")
        ctx = probe.get_span_context()
        if not ctx.is_valid:
            return
        wf.trace = {"traceparent": traceparent(ctx)}
        caller = trace.get_current_span().get_span_context()
        if caller.is_valid:
            wf.trace["parent"] = traceparent(caller)

    def stamp(self, job: Job, delay: float, wf: WorkflowState) -> Job:
        """What travels with a job: when it is ready (for the queue-wait metric) and the
        workflow span it belongs under."""
        if not wf.trace and not _metrics_on():
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

    def _start_attempt(self, job: Job, claimed: bool = False) -> _Attempt | None:
        tracer = self.tracer()
        if tracer is None and not _metrics_on():
            return None
        span = None
        if tracer is not None:
            parent = parse_traceparent(job.trace)
            pin = None if parent is None else (parent.trace_id, _attempt_id(parent, job))
            span = self._span(
                tracer,
                f"{'compensate' if job.kind == 'compensation' else 'step'} {job.step}",
                parent,
                pin,
                None,
                {
                    "statesaga.workflow.id": job.workflow_id,
                    "statesaga.step": job.step,
                    "statesaga.attempt": job.attempt,
                    "statesaga.job.kind": job.kind,
                },
            )
        return _Attempt(job, span, claimed=claimed, eager=claimed, taken=time.time())

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
        current = _attempt.get()
        mine = current if current is not None and current.owns(wf, entry) else None
        if meters is not None:
            self._count_step(wf, step, entry, meters, mine)
        if tracer is None:
            return
        if mine is not None and mine.span is not None:
            _annotate(mine, wf, step, entry)
        elif entry.trigger == S.TIME_OUT and entry.source.startswith(StepStatus.EXECUTING.value):
            self._close_lost(tracer, wf, step, entry, "step", entry.attempt or step.attempts)
        elif entry.trigger == S.REQUEUE and entry.source == StepStatus.COMPENSATING.value:
            comp = step.compensation
            if comp is not None and _in_flight(comp.started_at, comp.finished_at):
                self._close_lost(tracer, wf, step, entry, "compensation", comp.attempts)

    # -- steps ----------------------------------------------------------------------------------
    def _count_step(
        self,
        wf: WorkflowState,
        step: SagaStep,
        entry: HistoryEntry,
        m: _Instruments,
        mine: _Attempt | None,
    ) -> None:
        attrs = {"statesaga.workflow.name": wf.name, "statesaga.step": step.name}
        dest = entry.dest.split(".", 1)[0]
        if mine is not None and not mine.waited and mine.job.ready_at and not mine.eager:
            # The first transition this attempt saved is its claim (a compensation's claim
            # is no transition, its outcome stands for it): the wait ended when it was taken.
            mine.waited = True
            wait = max(mine.taken - mine.job.ready_at, 0.0)
            m.queue_wait.record(wait, {**attrs, "statesaga.job.kind": mine.job.kind})
        if entry.trigger == S.DISPATCH:
            m.started.add(1, attrs)
            return
        if entry.trigger in _COMPENSATION_OUTCOMES:
            outcome = "compensated" if entry.trigger == S.COMPENSATED else "failed"
            if (
                entry.trigger == S.COMPENSATION_FAILED
                and dest != StepStatus.COMPENSATION_FAILED.value
            ):
                outcome = "retried"
            m.compensations.add(1, {**attrs, "statesaga.outcome": outcome})
            return
        if entry.trigger == S.TIME_OUT:
            m.timed_out.add(1, attrs)
        if not entry.source.startswith(StepStatus.EXECUTING.value):
            if dest == StepStatus.FAILED.value:
                m.failed.add(1, attrs)  # a wait that timed out
            return
        settled = {"COMPLETED": "completed", "RETRYING": "retried", "FAILED": "failed"}.get(dest)
        if settled == "completed":
            m.completed.add(1, attrs)
        elif settled == "retried":
            m.retried.add(1, attrs)
        elif settled == "failed":
            m.failed.add(1, attrs)
        if settled is not None and step.started_at is not None:
            seconds = (entry.at - step.started_at).total_seconds()
            m.step_duration.record(max(seconds, 0.0), {**attrs, "statesaga.outcome": settled})

    def _close_lost(
        self,
        tracer: Tracer,
        wf: WorkflowState,
        step: SagaStep,
        entry: HistoryEntry,
        kind: str,
        attempt: int,
    ) -> None:
        """The span of an attempt whose worker was lost, emitted by the process that found it
        (its ids are the ones the lost worker used)."""
        parent = workflow_span_context(wf)
        if parent is None:
            return
        job = Job(kind=kind, workflow_id=wf.id, step=step.name, attempt=attempt)  # type: ignore[arg-type]
        started = step.started_at if kind == "step" else (step.compensation or step).started_at
        span = self._span(
            tracer,
            f"{'compensate' if kind == 'compensation' else 'step'} {step.name}",
            parent,
            (parent.trace_id, _attempt_id(parent, job)),
            _ns(started),
            {
                **_step_attributes(wf, step, kind, attempt),
                "statesaga.outcome": "lost",
                "statesaga.error.type": "WorkerLost",
                "statesaga.closed_by": entry.by or "",
            },
        )
        span.add_event(
            "recovery",
            {"statesaga.detail": entry.detail or "", "statesaga.by": entry.by or ""},
            _ns(entry.at),
        )
        span.set_status(Status(StatusCode.ERROR, entry.detail or "worker lost"))
        span.end(_ns(entry.at))

    # -- workflows ------------------------------------------------------------------------------
    def _workflow_entry(
        self,
        wf: WorkflowState,
        entry: HistoryEntry,
        tracer: Tracer | None,
        meters: _Instruments | None,
    ) -> None:
        if meters is not None and entry.trigger == W.RESUME:
            meters.recoveries.add(
                1, {"statesaga.workflow.name": wf.name, "statesaga.by": entry.by or ""}
            )
        if entry.dest not in _ENDED:
            return
        started = _run_start(wf)
        if meters is not None:
            attrs = {"statesaga.workflow.name": wf.name, "statesaga.state": entry.dest}
            meters.workflows.add(1, attrs)
            if started is not None:
                seconds = max((entry.at - started.at).total_seconds(), 0.0)
                meters.workflow_duration.record(seconds, attrs)
        if tracer is not None:
            current = _attempt.get()
            if current is None:
                self._emit_workflow(tracer, wf, entry, started)
            else:  # once the attempt that ended it has ended: a parent outlasts its children
                current.then.append(lambda: self._emit_workflow(tracer, wf, entry, started))

    def _emit_workflow(
        self, tracer: Tracer, wf: WorkflowState, end: HistoryEntry, started: HistoryEntry | None
    ) -> None:
        ctx = workflow_span_context(wf)
        if ctx is None or not ctx.trace_flags.sampled:
            return
        attributes: dict[str, Any] = {
            "statesaga.workflow.id": wf.id,
            "statesaga.workflow.name": wf.name,
            "statesaga.workflow.version": wf.version,
            "statesaga.state": end.dest,
            "statesaga.steps": len(wf.steps),
        }
        if wf.session_id:
            attributes["statesaga.session.id"] = wf.session_id
        if wf.error is not None:
            attributes["statesaga.error.type"] = wf.error.type
        if wf.reason:
            attributes["statesaga.reason"] = wf.reason
        span = self._span(
            tracer,
            f"workflow {wf.name}",
            parse_traceparent(wf.trace.get("parent")),
            (ctx.trace_id, ctx.span_id),
            _ns(started.at if started else wf.created_at),
            attributes,
        )
        run = wf.history[wf.history.index(started) :] if started in wf.history else wf.history
        for e in run:
            name = _event_name(e)
            if name is not None:
                span.add_event(name, _entry_attributes(e), _ns(e.at))
        if end.dest != WorkflowStatus.COMPLETED.value:
            span.set_status(Status(StatusCode.ERROR, wf.reason or end.dest))
        span.end(max(_ns(end.at) or 0, time.time_ns()))


class _JobRun:
    """The context of one job (a class, not a generator: it is on every job's path)."""

    __slots__ = ("_telemetry", "_job", "_claimed", "_scope", "_attempt", "_token", "_ctx")

    def __init__(self, telemetry: Telemetry, job: Job, claimed: bool = False) -> None:
        self._telemetry = telemetry
        self._job = job
        self._claimed = claimed
        self._scope: Token[StepScope | None] | None = None
        self._attempt: _Attempt | None = None
        self._token: Token[_Attempt | None] | None = None
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
        self._token = _attempt.set(attempt)
        if attempt.span is not None:
            self._ctx = otel_context.attach(trace.set_span_in_context(attempt.span))

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        attempt = self._attempt
        if attempt is not None:
            span = attempt.span
            if self._ctx is not None:
                otel_context.detach(self._ctx)  # type: ignore[arg-type]
            if self._token is not None:
                _attempt.reset(self._token)
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


def _run_start(wf: WorkflowState) -> HistoryEntry | None:
    """The transition the current run began with: the start, or the last restart."""
    for e in reversed(wf.history):
        if e.step is None and e.trigger in (W.START, W.RESTART):
            return e
    return None


def _in_flight(started: datetime | None, finished: datetime | None) -> bool:
    """A compensation attempt was claimed and its outcome never saved."""
    return started is not None and (finished is None or finished < started)


def _attempt_id(parent: SpanContext, job: Job) -> int:
    return _derive(parent.trace_id, parent.span_id, f"{job.kind}:{job.step}:{job.attempt}")


def _step_attributes(wf: WorkflowState, step: SagaStep, kind: str, attempt: int) -> dict[str, Any]:
    undo = kind == "compensation"
    attrs: dict[str, Any] = {
        "statesaga.workflow.id": wf.id,
        "statesaga.workflow.name": wf.name,
        "statesaga.step": step.name,
        "statesaga.attempt": attempt,
        "statesaga.job.kind": kind,
        "statesaga.idempotency_key": f"{wf.id}:{step.name}" + (":undo" if undo else ""),
    }
    if wf.session_id:
        attrs["statesaga.session.id"] = wf.session_id
    return attrs


def _annotate(attempt: _Attempt, wf: WorkflowState, step: SagaStep, entry: HistoryEntry) -> None:
    """What this process's own attempt span learns from its transitions."""
    span = attempt.span
    assert span is not None
    job = attempt.job
    if entry.trigger == S.DISPATCH:
        attempt.claimed = True
        span.set_attributes(_step_attributes(wf, step, job.kind, job.attempt))
        return
    if not attempt.claimed:  # a compensation's claim is not a transition: its outcome is
        span.set_attributes(_step_attributes(wf, step, job.kind, job.attempt))
        attempt.claimed = True
    if entry.trigger not in _SETTLING:
        return  # a progress trigger inside EXECUTING
    attempt.settled = True
    dest = entry.dest.split(".", 1)[0]
    error = (
        step.error
        if job.kind == "step"
        else (step.compensation.error if step.compensation else None)
    )
    outcome = {
        S.SUCCEED: "completed",
        S.COMPENSATED: "compensated",
        S.TIME_OUT: "timeout",
    }.get(entry.trigger, "failed")
    span.set_attribute("statesaga.outcome", outcome)
    span.set_attribute("statesaga.step.state", dest)
    if outcome not in ("completed", "compensated"):
        if error is not None:
            span.set_attribute("statesaga.error.type", error.type)
        span.set_status(Status(StatusCode.ERROR, entry.detail or outcome))
    if dest == StepStatus.RETRYING.value or (
        entry.trigger == S.COMPENSATION_FAILED and dest == StepStatus.COMPENSATING.value
    ):
        attrs: dict[str, Any] = {"statesaga.attempt": job.attempt + 1}
        due = step.next_attempt_at
        if due is not None:
            attrs["statesaga.retry.delay"] = max((due - entry.at).total_seconds(), 0.0)
        span.add_event("retry", attrs, _ns(entry.at))


def _event_name(e: HistoryEntry) -> str | None:
    if e.step is None:
        if e.trigger in _QUIET:
            return None
        return "recovery" if e.trigger == W.RESUME else e.trigger
    dest = e.dest.split(".", 1)[0]
    if dest == StepStatus.RETRYING.value and e.trigger != S.REQUEUE:
        return "retry"
    if e.trigger == S.SCHEDULE and dest == StepStatus.WAITING.value:
        return "wait"
    if e.trigger in _STEP_EVENTS:
        return e.trigger
    return None


def _entry_attributes(e: HistoryEntry) -> dict[str, Any]:
    attrs: dict[str, Any] = {"statesaga.from": e.source, "statesaga.to": e.dest}
    if e.step is not None:
        attrs["statesaga.step"] = e.step
    if e.attempt is not None:
        attrs["statesaga.attempt"] = e.attempt
    if e.by:
        attrs["statesaga.by"] = e.by
    if e.trigger in (W.SIGNAL, S.SIGNAL) and e.detail:  # a workflow's signal, or a step taking it
        # The name only: a payload is the application's data, not the trace backend's.
        attrs["statesaga.signal"] = e.detail.split(" ", 1)[0]
    elif e.detail:
        attrs["statesaga.detail"] = e.detail
    return attrs


__all__ = ["Telemetry", "parse_traceparent", "traceparent", "workflow_span_context"]
