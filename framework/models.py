"""The persisted instance documents: WorkflowState, SagaStep, CompensationAction, history.

States are `str` Enums (typed in Python, plain strings in storage); a test checks that they
match the shipped lifecycle tables exactly.
"""

from __future__ import annotations

import random
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import DefinitionError, Problem


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


ACTIVE_WORKFLOW = frozenset(
    {WorkflowStatus.RUNNING, WorkflowStatus.CANCELLING, WorkflowStatus.COMPENSATING}
)
IN_FLIGHT_STEP = frozenset({StepStatus.QUEUED, StepStatus.EXECUTING, StepStatus.RETRYING})


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str, now: datetime | None = None) -> str:
    """`PREFIX-YYYYMMDD-<8 hex>`, as in the origin design (WF-20260208-5b193f0d)."""
    return f"{prefix}-{(now or utcnow()):%Y%m%d}-{secrets.token_hex(4)}"


class _Doc(BaseModel):
    # Stored documents must not grow fields silently: an unknown key is an error, not ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class RetryPolicy(_Doc):
    """Exponential backoff: initial_interval * backoff_rate**(attempt-1), capped, with jitter."""

    max_attempts: int = Field(3, ge=1)
    initial_interval: float = Field(1.0, ge=0)
    backoff_rate: float = Field(2.0, ge=1)
    max_interval: float = Field(60.0, ge=0)
    jitter: float = Field(0.0, ge=0, le=1, description="fraction of the delay drawn at random")
    non_retryable: list[str] = Field(
        default_factory=list, description="error type names that fail at once"
    )
    deadline: float | None = Field(
        None, gt=0, description="seconds across all attempts, from the first dispatch"
    )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        base = min(
            self.initial_interval * self.backoff_rate ** max(attempt - 1, 0), self.max_interval
        )
        if self.jitter:
            r = (rng or random).random()
            base = base * (1 - self.jitter) + base * self.jitter * r
        return base


class StepError(_Doc):
    type: str
    message: str
    traceback: str = ""
    attempt: int = 0


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
    timeout: float | None = None
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
    sleep: float | None = Field(None, ge=0, description="a sleep step's duration in seconds")
    until: datetime | None = Field(None, description="a sleep step's wake-up time")
    substate: list[str] = Field(
        default_factory=list,
        description="the active sub-state(s) under status, for a step lifecycle with compound "
        "states (e.g. ['CALLING_MODEL'] while EXECUTING)",
    )
    in_doubt: bool = Field(
        False,
        description="an attempt's outcome is unknown (its worker was lost, or it timed out), so "
        "its effect may have applied; only a later successful attempt settles it",
    )

    def idempotency_key(self, workflow_id: str) -> str:
        """The key handlers receive: the same for every attempt of this step."""
        return f"{workflow_id}:{self.name}"


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

    def step(self, name: str) -> SagaStep:
        for s in self.steps:
            if s.name == name or s.id == name:
                return s
        raise KeyError(f"{self.id} has no step {name!r}")

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "store") -> WorkflowState:
        """Parse a stored document; unknown or invalid fields raise DefinitionError."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise DefinitionError(
                Problem(e["msg"], source, None, ".".join(str(p) for p in e["loc"]))
                for e in exc.errors()
            ) from None
