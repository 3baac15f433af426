"""The persisted instance documents: WorkflowState, SagaStep, CompensationAction, history.

States are `str` Enums (typed in Python, plain strings in storage); a test checks that they
match the shipped lifecycle tables exactly.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import DefinitionError, Problem
from .security.limits import MAX_ATTEMPTS, MAX_BACKOFF_RATE, MAX_SECONDS, max_history
from .security.redact import redact


class WorkflowStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUSPENDED = "SUSPENDED"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class StepStatus(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    WAITING = "WAITING"
    EXECUTING = "EXECUTING"
    RETRYING = "RETRYING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    IN_DOUBT = "IN_DOUBT"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"
    SKIPPED = "SKIPPED"


class TodoStatus(StrEnum):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    IN_PROGRESS = "in_progress"
    BLOCKED = "blocked"
    COMPLETED = "completed"
    REVERTING = "reverting"
    REVERTED = "reverted"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: What a step does: run a handler (action), wait for a named signal (wait), or sleep.
StepKind = Literal["action", "wait", "sleep"]
#: What a wait's timeout does: fail the step (the saga unwinds) or continue with `default`.
OnTimeout = Literal["fail", "continue"]


class CompensationStrategy(StrEnum):
    """How completed steps are undone when a saga unwinds.

    backward: one at a time, in reverse completion order (the default).
    parallel: all at once.
    forward_retry: never compensate; a failing step is retried and, once exhausted, the
    workflow is FAILED for an operator. Pivot steps apply under every strategy: after a pivot
    completes, a failure leaves the workflow FAILED instead of compensating.
    """

    BACKWARD = "backward"
    PARALLEL = "parallel"
    FORWARD_RETRY = "forward_retry"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str, now: datetime | None = None) -> str:
    """`PREFIX-YYYYMMDD-<8 hex>`, as in the origin design (WF-20260208-5b193f0d)."""
    return f"{prefix}-{(now or utcnow()):%Y%m%d}-{secrets.token_hex(4)}"


#: A number of seconds: finite, never negative, at most MAX_SECONDS, and a number (strict: a
#: YAML `yes` or a JSON `true` is not read as 1 second).
Seconds = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=MAX_SECONDS)]
#: As Seconds, and more than zero (timeouts, deadlines).
PositiveSeconds = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0, le=MAX_SECONDS)]


class _Doc(BaseModel):
    # Stored documents must not grow fields silently: an unknown key is an error, not ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class RetryPolicy(_Doc):
    """Exponential backoff: initial_interval * backoff_rate**(attempt-1), capped, with jitter."""

    max_attempts: int = Field(
        3, strict=True, ge=1, le=MAX_ATTEMPTS, description="attempts in all, the first included"
    )
    initial_interval: Seconds = Field(1.0, description="seconds before the first retry")
    backoff_rate: float = Field(
        2.0,
        strict=True,
        allow_inf_nan=False,
        ge=1,
        le=MAX_BACKOFF_RATE,
        description="each delay is the previous times this",
    )
    max_interval: Seconds = Field(60.0, description="no delay is longer (seconds)")
    jitter: float = Field(
        0.0,
        strict=True,
        allow_inf_nan=False,
        ge=0,
        le=1,
        description="fraction of the delay drawn at random",
    )
    non_retryable: list[str] = Field(
        default_factory=list, description="error type names that fail at once"
    )
    deadline: PositiveSeconds | None = Field(
        None, description="seconds across all attempts, from the first dispatch"
    )

    def over(self, base: RetryPolicy) -> RetryPolicy:
        """This policy laid over `base` field by field: what this one was given wins, the
        rest comes from `base` (a step's `retry: {max_attempts: 5}` keeps the saga's
        `non_retryable`)."""
        return base.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})

    def summary(self) -> str:
        """One line for people: `3 attempts, 0.05s x2 up to 1s, jitter 0.1, not: BookingError`."""
        parts = [f"{self.max_attempts} attempt{'s' if self.max_attempts != 1 else ''}"]
        if self.max_attempts > 1:
            parts.append(
                f"{self.initial_interval:g}s x{self.backoff_rate:g} up to {self.max_interval:g}s"
            )
            if self.jitter:
                parts.append(f"jitter {self.jitter:g}")
        if self.deadline is not None:
            parts.append(f"within {self.deadline:g}s")
        if self.non_retryable:
            parts.append(f"not retried: {', '.join(self.non_retryable)}")
        return ", ".join(parts)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        base = min(_grown(self.initial_interval, self.backoff_rate, attempt), self.max_interval)
        if self.jitter:
            r = (rng or random).random()
            base = base * (1 - self.jitter) + base * self.jitter * r
        return base


def _grown(initial: float, rate: float, attempt: int) -> float:
    """initial * rate**(attempt-1) without overflow: past about 1e308 the power is infinite
    (Python raises OverflowError), and any cap is smaller than that anyway."""
    exponent = max(attempt - 1, 0)
    if initial <= 0 or rate <= 1 or exponent == 0:
        return initial
    if exponent * math.log(rate) + math.log(initial) > math.log(MAX_SECONDS):
        return MAX_SECONDS
    return float(initial * rate**exponent)


class StepError(_Doc):
    type: str
    message: str
    traceback: str = ""
    attempt: int = 0

    @field_validator("message", "traceback")
    @classmethod
    def _no_secrets(cls, v: str) -> str:
        # A handler's exception may quote a URL with its password; stored errors are shown
        # by `status`, diagrams and logs.
        return redact(v)


class HistoryEntry(_Doc):
    """One transition an instance went through."""

    at: datetime
    chart: str
    trigger: str
    source: str
    dest: str
    step: str | None = None
    attempt: int | None = None
    by: str | None = None
    detail: str | None = None


class CompensationAction(_Doc):
    id: str = Field(default_factory=lambda: new_id("COMP"))
    step_id: str
    action_type: str
    params: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    attempts: int = 0
    error: StepError | None = None
    result: Any = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class SagaStep(_Doc):
    id: str
    name: str
    action_type: str
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: PositiveSeconds | None = None
    pivot: bool = False
    result: Any = None
    error: StepError | None = None
    compensation: CompensationAction | None = None
    next_attempt_at: datetime | None = None
    first_started_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    todo_id: str | None = None
    kind: StepKind = Field(
        "action", description="action: runs a handler; wait: waits for a signal; sleep: a timer"
    )
    signal: str | None = Field(None, description="the signal a wait step waits for")
    on_timeout: OnTimeout = Field(
        "fail", description="a wait's timeout (`timeout`) fails the step or continues"
    )
    default: Any = Field(None, description="a wait's result when it continues on timeout")
    sleep: Seconds | None = Field(None, description="a sleep step's duration in seconds")
    until: datetime | None = Field(None, description="a sleep step's wake-up time")
    substate: list[str] = Field(
        default_factory=list,
        description="the active sub-state(s) under status, for a step lifecycle with compound "
        "states (e.g. ['CALLING_MODEL'] while EXECUTING)",
    )
    read_only: bool = Field(
        False,
        description="the step only reads (a YAML step's `read_only`, a plan's read-only tool): "
        "it has no effect to undo or to leave behind",
    )
    in_doubt: bool = Field(
        False,
        description="an attempt's outcome is unknown (its worker was lost, or it timed out), so "
        "its effect may have applied; only a later successful attempt settles it",
    )
    payload: dict[str, Any] | None = Field(
        None,
        description="a wait step: the JSON Schema its signal's payload must fit (checked by "
        "`signal` before anything is stored)",
    )

    def idempotency_key(self, workflow_id: str) -> str:
        """The key handlers receive: the same for every attempt of this step."""
        return f"{workflow_id}:{self.name}"


def compact_history(history: list[HistoryEntry], limit: int) -> list[HistoryEntry]:
    """The history with repeats folded: the first entry of every distinct transition (chart,
    step, trigger, source, dest) and the latest `limit // 2` entries are kept, in order.

    That is what the diagrams read (the first dispatch and first unwind of each step, every
    edge taken) and what a resumed step reads (where its latest attempts got to); what goes
    is the middle of long retry loops. The result may exceed `limit` only when the saga
    itself has that many distinct transitions (bounded by its steps and charts).
    """
    if len(history) <= limit:
        return history
    tail_from = len(history) - max(limit // 2, 1)
    seen: set[tuple[str, str | None, str, str, str]] = set()
    kept = []
    for i, h in enumerate(history):
        key = (h.chart, h.step, h.trigger, h.source, h.dest)
        if i >= tail_from or key not in seen:
            kept.append(h)
        seen.add(key)
    return kept


class PlanVersion(_Doc):
    """One version of an agent's plan (statesaga.plans): the plan as it stood, and what this
    version changed from the one before."""

    number: int
    at: datetime
    by: str | None = None
    spec: dict[str, Any] = Field(description="the plan document (its items and settings)")
    changes: list[str] = Field(default_factory=list, description="added, removed, replaced")


class PlanRecord(_Doc):
    """The plan a workflow was made from, every version of it, oldest first."""

    versions: list[PlanVersion] = Field(default_factory=list)

    @property
    def current(self) -> PlanVersion:
        return self.versions[-1]


class WorkflowState(_Doc):
    id: str = Field(default_factory=lambda: new_id("WF"))
    name: str
    version: str = "1"
    session_id: str | None = None
    status: WorkflowStatus = WorkflowStatus.PENDING
    strategy: CompensationStrategy = CompensationStrategy.BACKWARD
    handlers: list[str] = Field(default_factory=list, description="modules that register handlers")
    input: dict[str, Any] = Field(default_factory=dict)
    results: dict[str, Any] = Field(default_factory=dict)
    steps: list[SagaStep] = Field(default_factory=list)
    error: StepError | None = None
    reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    revision: int = 0
    substate: list[str] = Field(default_factory=list, description="as SagaStep.substate")
    signals: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="signals received and not yet taken by a waiting step, oldest first",
    )
    history: list[HistoryEntry] = Field(default_factory=list)
    trace: dict[str, str] = Field(
        default_factory=dict,
        description="W3C trace context of the workflow's span (`traceparent`, and the caller's "
        "as `parent`), kept when tracing was on at its start; "
        "see statesaga.observability.telemetry",
    )
    history_dropped: int = Field(
        0, description="history entries folded away (repeats of a transition kept once)"
    )
    plan: PlanRecord | None = Field(
        None, description="an agent's plan (statesaga.plans): its numbered versions"
    )

    def record(self, entry: HistoryEntry) -> None:
        """Append a history entry, folding repeats once the history passes its limit."""
        self.history.append(entry)
        if len(self.history) > max_history():
            kept = compact_history(self.history, max_history())
            self.history_dropped += len(self.history) - len(kept)
            self.history = kept

    def step(self, name: str) -> SagaStep:
        for s in self.steps:
            if s.name == name or s.id == name:
                return s
        raise KeyError(f"{self.id} has no step {name!r}")

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "store") -> WorkflowState:
        """Parse a stored document; unknown or invalid fields raise DefinitionError with one
        problem (the first field, and how many more), as a stored document is one thing to fix."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            errors = exc.errors()
            first = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            field = ".".join(str(p) for p in first["loc"])
            raise DefinitionError([Problem(first["msg"] + more, source, None, field)]) from None


log = logging.getLogger("statesaga.store")


def readable_documents(
    rows: Iterable[tuple[str, Callable[[], WorkflowState]]], skipped: dict[str, str]
) -> list[WorkflowState]:
    """Load each (id, loader) pair; a document that cannot be read is left out and noted in
    `skipped` (id -> why, one line; dropped once it reads again) instead of failing the
    listing of every workflow."""
    out = []
    for workflow_id, load in rows:
        try:
            out.append(load())
            skipped.pop(workflow_id, None)
        except (DefinitionError, ValueError, TypeError) as exc:
            why = str(exc).splitlines()[0]
            if isinstance(exc, DefinitionError) and exc.problems:
                first = exc.problems[0]
                why = f"{first.field}: {first.message}" if first.field else first.message
            skipped[workflow_id] = why
            # INFO, not WARNING: every caller reports `skipped` itself (the CLI as one line).
            log.info("workflow document %s cannot be read, skipped: %s", workflow_id, why)
    return out


def halt_reason(wf: WorkflowState) -> str:
    """Why a FAILED workflow halted, in words an operator can act on: the stored reason, else
    the error of the step that failed where nothing may be undone (past the pivot)."""
    if wf.reason:
        return wf.reason
    failed = next((s for s in wf.steps if s.status is StepStatus.FAILED), None)
    if failed is None:
        return "halted"
    pivot = next((s.name for s in wf.steps if s.pivot), None)
    where = f" after the pivot {pivot}" if pivot else ""
    error = f": {failed.error.type}: {failed.error.message}" if failed.error else ""
    return f"step {failed.name} failed{where}, so nothing is undone{error}"
