"""A saga's time on its page: when it was created, started and ended, how long each took, its
heartbeat and whether it looks stuck, and a timeline of every step's attempts, waits, retries
and undos, read from the history (the stored trail, so every process's work shows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..models import StepStatus, WorkflowState
from ..runtime.recovery import looks_lost
from ..security.redact import mask_secrets, redact
from ..vocabulary import WORKFLOW_ENDED
from ..vocabulary import WorkflowTrigger as W

#: Seconds without a heartbeat after which an in-flight saga is shown as stuck: the default
#: timeout of `statesaga recover`, which would then take it as lost.
STUCK_AFTER = 30.0
#: Where a step rests (nothing runs, nothing waits): no bar on the timeline.
_AT_REST = frozenset(
    {
        StepStatus.PENDING.value,
        StepStatus.COMPLETED.value,
        StepStatus.FAILED.value,
        StepStatus.COMPENSATED.value,
        StepStatus.COMPENSATION_FAILED.value,
        StepStatus.SKIPPED.value,
        StepStatus.IN_DOUBT.value,
    }
)
_ENDED = frozenset(s.value for s in WORKFLOW_ENDED)
_MARKED = frozenset({W.START, W.SIGNAL, W.CANCEL, W.FORCE_CANCEL, W.RESTART, W.RESUME, W.SUSPEND})


def duration_text(value: timedelta | float | None) -> str:
    """`850 ms`, `12.4 s`, `3 min 05 s`, `2 h 10 min`, `3 d 4 h`."""
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@dataclass(frozen=True)
class Phase:
    """A stretch of time a step spent in one state that is not rest: queued, executing (an
    attempt), retrying (the backoff), waiting, compensating (an undo)."""

    step: str
    state: str
    attempt: int | None
    start: datetime
    end: datetime | None  # None: still in it
    #: The trigger that ended it (`succeed`, `fail`, `compensated`, ...), and where it went.
    ended_by: str
    outcome: str
    detail: str

    @property
    def label(self) -> str:
        what = {
            "EXECUTING": "attempt",
            "COMPENSATING": "undo",
            "RETRYING": "backoff",
            "WAITING": "wait",
            "QUEUED": "queued",
        }.get(self.state.split(".", 1)[0], self.state.lower())
        return f"{what} {self.attempt}" if what == "attempt" and self.attempt else what


@dataclass(frozen=True)
class Marker:
    """A workflow-level moment: started, signalled, cancelled, restarted, resumed, ended."""

    at: datetime
    what: str
    by: str
    detail: str


@dataclass(frozen=True)
class Timeline:
    phases: tuple[Phase, ...]
    markers: tuple[Marker, ...]
    start: datetime
    end: datetime

    def x(self, at: datetime, width: float) -> float:
        """Where `at` falls on a bar `width` wide."""
        span = (self.end - self.start).total_seconds() or 1.0
        return round((at - self.start).total_seconds() / span * width, 1)

    def steps(self) -> list[str]:
        seen: list[str] = []
        for p in self.phases:
            if p.step not in seen:
                seen.append(p.step)
        return seen


def timeline(wf: WorkflowState, now: datetime | None = None) -> Timeline:
    """Every step's phases, in the order they began, and the workflow's markers."""
    now = now or datetime.now(UTC)
    open_: dict[str, tuple[str, int | None, datetime]] = {}
    phases: list[Phase] = []
    markers: list[Marker] = []
    for h in wf.history:
        if h.step is None:
            if h.trigger in _MARKED or h.dest in _ENDED:
                what = h.trigger if h.trigger in _MARKED else f"ended {h.dest}"
                markers.append(Marker(h.at, what, h.by or "", redact(h.detail or "")))
            continue
        current = open_.pop(h.step, None)
        if current is not None:
            state, attempt, began = current
            phases.append(
                Phase(h.step, state, attempt, began, h.at, h.trigger, h.dest,
                      redact(h.detail or ""))
            )  # fmt: skip
        if h.dest not in _AT_REST:
            top = h.dest.split(".", 1)[0]
            attempt = h.attempt
            if top == StepStatus.COMPENSATING.value:
                attempt = None
            open_[h.step] = (h.dest, attempt, h.at)
    for step, (state, attempt, began) in open_.items():
        phases.append(Phase(step, state, attempt, began, None, "", "", ""))
    phases.sort(key=lambda p: p.start)
    start = wf.history[0].at if wf.history else wf.created_at
    ended = wf.status.value in _ENDED
    end = wf.history[-1].at if ended and wf.history else max(now, start)
    return Timeline(tuple(phases), tuple(markers), start, max(end, start))


@dataclass(frozen=True)
class Facts:
    """The times and the liveness of a saga, for the top of its page."""

    created: datetime
    started: datetime | None
    ended: datetime | None
    took: str  # how long it ran (or has been running)
    heartbeat: datetime | None
    heartbeat_age: str
    stuck: bool
    input: Any  # masked
    #: Its steps waiting in the queue when none runs: a stuck saga in this state was never
    #: taken by a worker (all busy, none listening, or its job lost), no worker died in it.
    queued: tuple[str, ...] = ()


def facts(wf: WorkflowState, now: datetime | None = None) -> Facts:
    now = now or datetime.now(UTC)
    started = next((h.at for h in wf.history if h.step is None and h.trigger == W.START), None)
    ended = None
    if wf.status.value in _ENDED:
        ended = next((h.at for h in reversed(wf.history) if h.step is None), wf.updated_at)
    begin = started or wf.created_at
    took = duration_text((ended or now) - begin)
    # How long ago a worker last reported: news while it runs, noise once it has ended.
    age = duration_text(now - wf.heartbeat_at) if wf.heartbeat_at and not ended else ""
    return Facts(
        created=wf.created_at,
        started=started,
        ended=ended,
        took=took if ended else f"{took} so far",
        heartbeat=wf.heartbeat_at,
        heartbeat_age=age,
        stuck=looks_lost(wf, now, STUCK_AFTER),
        input=mask_secrets(wf.input),
        queued=_only_queued(wf),
    )


def _only_queued(wf: WorkflowState) -> tuple[str, ...]:
    if any(s.status in (StepStatus.EXECUTING, StepStatus.COMPENSATING) for s in wf.steps):
        return ()
    return tuple(s.name for s in wf.steps if s.status is StepStatus.QUEUED)


def resume_command(store: str, queue: str) -> str:
    """The command that would take a stuck saga as lost and resume it (URLs already
    scrubbed by the caller)."""
    return f"statesaga recover --store '{store}' --queue '{queue}' --timeout {STUCK_AFTER:g}"
