"""Traces of workflows through the OpenTelemetry API (the SDK is the application's).

One trace per workflow. Its spans are made in different processes, so each is emitted by the
process that sees it end, with ids every process can compute:

- `begin` (the engine, before the new workflow is first saved) asks the tracer for a span
  context and keeps it in the document (`WorkflowState.trace`): the workflow span's trace id and
  span id, and the caller's span as its parent. That span is emitted by whichever process
  commits the workflow's end state (a worker, the CLI, recovery), with the start time and the
  events (retries, waits, signals, cancels, recoveries) read from the history. So that a long
  saga shows while it runs, the process that saves its start emits at once a short child span,
  `workflow NAME start`; a signal, a cancel, a restart or a recovery is a child span of its
  own, linked to the span of whoever asked (a CLI command, an HTTP request).
- Every job carries the workflow span's context (`Job.trace`), so the worker that runs a step
  attempt starts the attempt's span as its child and runs the handler inside it: the
  handler's own spans nest under its step. An attempt's span id is derived from the workflow
  span and the attempt, so when a worker dies mid-step, the recovery that times the attempt
  out emits that very span, and whatever the dead worker exported under it stays attached.
- A stale or duplicate job never claims its attempt, and a late result is refused: their spans
  are never ended, so never exported; a trace shows each attempt once.

Pinned ids need the SDK's tracer (it has an `id_generator`); with another implementation the
spans are still emitted, with ids of its own. Every span carries the workflow's id and name.
A failed attempt carries an `exception` event (type and message, secrets masked); a workflow
span is an ERROR when it halted (FAILED), not when its saga was compensated or cancelled.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
)

from ..models import HistoryEntry, SagaStep, StepStatus, WorkflowState, WorkflowStatus
from ..ports import Job
from ..security.redact import redact
from ..vocabulary import WORKFLOW_ENDED
from ..vocabulary import StepTrigger as S
from ..vocabulary import WorkflowTrigger as W

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.trace import Span, Tracer

SCOPE = "statesaga"
#: A workflow's span is emitted when it reaches one of these (FAILED halts: the span ends;
#: a restart starts a new run, with a span of its own).
_ENDED = frozenset(s.value for s in WORKFLOW_ENDED)
#: Workflow transitions that are routine (one per step) and would crowd the span's events.
_QUIET = frozenset({W.ADVANCE})
#: Step transitions worth an event on the workflow span (the attempt spans tell the rest).
_STEP_EVENTS = frozenset({S.SIGNAL, S.WAKE, S.WAIT_TIMEOUT, S.TIME_OUT, S.REQUEUE, S.SKIP})

#: Workflow transitions an operator (or recovery) asks for: each is a span of its own.
_OPERATED = frozenset({W.SIGNAL, W.CANCEL, W.FORCE_CANCEL, W.RESTART, W.RESUME, W.SUSPEND})

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


# -- what a person asked for: a CLI command, an HTTP request ----------------------------------
#: The span of the operation under way in this context (statesaga's own, so it may be named
#: after the workflow it turns out to act on).
_operation: ContextVar[Span | None] = ContextVar("statesaga_operation", default=None)


@contextmanager
def operation(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span | None]:
    """A span around something a person asked for (`statesaga run`, a POST to the API): the
    workflow it starts is its child, a signal or cancel it sends is linked to it, and it is
    named after that workflow (`statesaga.workflow.id`, `.name`). Nothing while tracing is off."""
    provider = _tracer_provider()
    if not isinstance(provider, trace.TracerProvider):
        yield None
        return
    from ..resources import __version__

    tracer = provider.get_tracer(SCOPE, __version__)
    with tracer.start_as_current_span(name, attributes=attributes) as span:
        token = _operation.set(span)
        try:
            yield span
        finally:
            _operation.reset(token)


def _name_operation(wf: WorkflowState) -> None:
    span = _operation.get()
    if span is not None and span.is_recording():
        span.set_attributes({"statesaga.workflow.id": wf.id, "statesaga.workflow.name": wf.name})


# -- the attempt a worker is running ----------------------------------------------------------
@dataclass
class Attempt:
    job: Job
    span: Span | None
    #: A transition of this attempt was saved by this process (its claim or its outcome).
    claimed: bool = False
    #: Its span has the workflow's name and the step's attributes.
    named: bool = False
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
            return entry.trigger in COMPENSATION_OUTCOMES
        if entry.attempt != job.attempt:
            return False
        return entry.trigger in _ATTEMPT_TRIGGERS or entry.source.startswith("EXECUTING.")


#: An action attempt's claim and its outcomes.
_ATTEMPT_TRIGGERS = frozenset({S.DISPATCH, S.SUCCEED, S.FAIL, S.TIME_OUT})
#: The outcomes of a compensation attempt (its claim is no transition).
COMPENSATION_OUTCOMES = frozenset({S.COMPENSATED, S.COMPENSATION_FAILED})
#: The transitions that settle an attempt (its span ends with the process that saved one).
_SETTLING = frozenset({S.SUCCEED, S.FAIL, S.TIME_OUT}) | COMPENSATION_OUTCOMES


current_attempt: ContextVar[Attempt | None] = ContextVar("statesaga_attempt", default=None)


# `get_tracer_provider()` reads os.environ on every call while no provider is set: too slow
# for every transition. The API keeps the installed provider in a module global, None until
# set; read it directly (and through the public getter should a version not have it).
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


class Tracing:
    """statesaga's tracer, and the spans it makes: the workflow's, its start and the operations
    asked of it, each attempt's, and the one of an attempt whose worker was lost."""

    def __init__(self) -> None:
        self._provider: object = None
        self._tracer: Tracer | None = None
        self._pins = False

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

    def span(
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

    def begin(self, wf: WorkflowState) -> None:
        """Give a new workflow its trace: the span context of its workflow span, kept in the
        document. The caller's current span (a request in the application) is its parent."""
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
        _name_operation(wf)

    def attempt_span(self, tracer: Tracer, job: Job) -> Span:
        """The span of one attempt, started as the job begins (the workflow's name is added
        when the attempt's claim is saved: the job carries only the workflow's id)."""
        parent = parse_traceparent(job.trace)
        pin = None if parent is None else (parent.trace_id, _attempt_id(parent, job))
        return self.span(
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

    def close_lost(
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
        span = self.span(
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

    def emit_workflow(
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
        span = self.span(
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
        # A saga compensated or cancelled did what it is for; one that halted needs a person.
        if end.dest == WorkflowStatus.FAILED.value:
            span.set_status(Status(StatusCode.ERROR, wf.reason or end.dest))
        span.end(max(_ns(end.at) or 0, time.time_ns()))

    def emit_moment(self, tracer: Tracer, wf: WorkflowState, entry: HistoryEntry) -> None:
        """A short span, exported now, for a workflow's start or an operation asked of it
        (signal, cancel, restart, recovery): a child of the workflow span, linked to the span
        of whoever asked (a CLI command, an HTTP request) when there is one."""
        ctx = workflow_span_context(wf)
        if ctx is None or not ctx.trace_flags.sampled:
            return
        what = "start" if entry.trigger == W.START else str(entry.trigger)
        attributes: dict[str, Any] = {
            "statesaga.workflow.id": wf.id,
            "statesaga.workflow.name": wf.name,
            "statesaga.workflow.version": wf.version,
            "statesaga.trigger": str(entry.trigger),
            "statesaga.state": entry.dest,
        }
        if entry.by:
            attributes["statesaga.by"] = entry.by
        if entry.detail:
            attributes["statesaga.detail"] = redact(entry.detail)
        caller = trace.get_current_span().get_span_context()
        links = [Link(caller)] if caller.is_valid and caller.trace_id != ctx.trace_id else None
        _name_operation(wf)
        span = tracer.start_span(
            f"workflow {wf.name} {what}",
            _as_parent(ctx),
            attributes=attributes,
            links=links,
            start_time=_ns(entry.at),
        )
        span.end(max(_ns(entry.at) or 0, time.time_ns()))


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


def _annotate(attempt: Attempt, wf: WorkflowState, step: SagaStep, entry: HistoryEntry) -> None:
    """What this process's own attempt span learns from its transitions."""
    span = attempt.span
    assert span is not None
    job = attempt.job
    if not attempt.named:
        # The first transition this process saved for the attempt: its claim, or the outcome
        # of one claimed before it began (a compensation's claim is no transition; a step
        # claimed by the settle of the previous one). The job carried only the id.
        span.set_attributes(_step_attributes(wf, step, job.kind, job.attempt))
        attempt.named = True
    attempt.claimed = True
    if entry.trigger == S.DISPATCH:
        return
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
            # What `record_exception` records, from the stored error: the handler's exception
            # was caught by the engine (and its worker may be gone by now). Secrets masked.
            span.add_event(
                "exception",
                {
                    "exception.type": error.type,
                    "exception.message": redact(error.message),
                    "exception.escaped": False,
                },
                _ns(entry.at),
            )
        span.set_status(Status(StatusCode.ERROR, redact(entry.detail or outcome)))
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


__all__ = [
    "SCOPE",
    "Tracing",
    "operation",
    "parse_traceparent",
    "traceparent",
    "workflow_span_context",
]
