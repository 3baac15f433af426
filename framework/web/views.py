"""What the pages show of a stored workflow: its diagrams as inline SVG (drawn by `dot` from
the same tables that run), its steps and its history, and text that must never leak a
secret."""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from ..definitions.load import WorkflowDefinition
from ..diagram import Diagram, from_definition, from_instance, get_renderer
from ..errors import AdapterError
from ..models import (
    HistoryEntry,
    RetryPolicy,
    SagaStep,
    StepStatus,
    WorkflowState,
)
from ..vocabulary import (
    STEP_BUSY,
    STEP_IN_FLIGHT,
    STEP_WAITING,
    WORKFLOW_ROLLED_BACK,
    StepTrigger,
    WorkflowTrigger,
)
from ..wording import counted

View = Literal["steps", "workflow", "step"]
_SVG_START = re.compile(r"<svg\b")


@dataclass(frozen=True)
class Picture:
    """A diagram for a page: inline SVG, or the Mermaid text when `dot` is not installed."""

    title: str
    svg: str | None
    text: str | None = None
    note: str | None = None


class Pictures:
    """Draws diagrams, remembering the last few by (workflow, revision, view): a page polled
    every second redraws only when the document changed."""

    def __init__(self, size: int = 256) -> None:
        self._cache: OrderedDict[tuple[str, ...], Picture] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def _draw(self, key: tuple[str, ...], title: str, diagram: Diagram) -> Picture:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        try:
            svg = str(get_renderer("svg").render(diagram))
            at = _SVG_START.search(svg)
            picture = Picture(title, svg[at.start() :] if at else svg)
        except AdapterError as exc:  # no graphviz: the Mermaid source still tells the story
            picture = Picture(title, None, str(get_renderer("mermaid").render(diagram)), str(exc))
        with self._lock:
            self._cache[key] = picture
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return picture

    def instance(
        self,
        wf: WorkflowState,
        definition: WorkflowDefinition | None,
        view: View,
        step: str | None = None,
    ) -> Picture:
        titles = {
            "steps": "The saga: each step by its status, the path taken numbered in order",
            "workflow": "The workflow's lifecycle: where it is, and the path it took",
            "step": f"Step {step}: its lifecycle, where it is, and the path it took",
        }
        key = (wf.id, str(wf.revision), view, step or "")
        diagram = from_instance(wf, definition, view, step=step)
        return self._draw(key, titles[view], diagram)

    def plan(self, wf: WorkflowState) -> Picture:
        """A running plan's saga, noting what each revision changed (statesaga.plans)."""
        from ..plans.diagram import plan_diagram

        key = (wf.id, str(wf.revision), "plan")
        title = "The plan: each item by its status, what each revision changed noted"
        return self._draw(key, title, plan_diagram(wf))

    def definition(self, d: WorkflowDefinition) -> Picture:
        key = ("definition", d.name, str(d.version), str(d.file))
        return self._draw(key, f"{d.name} v{d.version}", from_definition(d))


def focus_step(wf: WorkflowState) -> str | None:
    """The step whose lifecycle is worth showing first: one in flight or waiting, else the
    one the history touched last."""
    for s in wf.steps:
        if s.status in STEP_IN_FLIGHT or s.status is StepStatus.WAITING:
            return str(s.name)
    for h in reversed(wf.history):
        if h.step is not None:
            return str(h.step)
    return str(wf.steps[0].name) if wf.steps else None


def retry_text(policy: RetryPolicy) -> str:
    """The effective retry policy in one line: `3 attempts, 0.05s ×2 ≤1s, jitter 10%`."""
    text = f"{policy.max_attempts} attempt{'s' if policy.max_attempts != 1 else ''}"
    if policy.max_attempts > 1:
        text += f", {policy.initial_interval:g}s ×{policy.backoff_rate:g} ≤{policy.max_interval:g}s"
        if policy.jitter:
            text += f", jitter {policy.jitter:.0%}"
    if policy.deadline:
        text += f", deadline {policy.deadline:g}s"
    if policy.non_retryable:
        text += f"; never retried: {', '.join(policy.non_retryable)}"
    return text


def outcome_text(step: SagaStep) -> str:
    """A step's result, or its error, in one line; and what its compensation did."""
    if step.error is not None and step.status is not StepStatus.COMPLETED:
        text = f"{step.error.type}: {step.error.message}"
    else:
        text = "" if step.result is None else compact(step.result)
    comp = step.compensation
    if comp is not None and comp.error is not None:
        text += f"  — undo failed: {comp.error.type}: {comp.error.message}"
    elif comp is not None and comp.finished_at is not None:
        text += f"  — undone: {compact(comp.result)}"
    return text


def pretty_json(value: Any) -> str:
    """JSON for people (indented, keys sorted, non-ASCII as is); the page escapes it. Jinja's
    `tojson` writes an apostrophe as \\u0027, which is no way to show an approver the call."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def compact(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary(wf: WorkflowState) -> dict[str, Any]:
    """A workflow as the list API returns it."""
    return {
        "id": wf.id,
        "name": wf.name,
        "version": wf.version,
        "session_id": wf.session_id,
        "status": wf.status.value,
        "current": current_steps(wf),
        "created_at": wf.created_at.isoformat(),
        "updated_at": wf.updated_at.isoformat(),
        "revision": wf.revision,
    }


#: A job of the step is queued or running, or it waits for its signal or its time.
_CURRENT = STEP_BUSY | STEP_WAITING


def current_steps(wf: WorkflowState) -> list[str]:
    """The steps in flight or waiting, as `name (STATUS)`."""
    return [f"{s.name} ({s.status.value})" for s in wf.steps if s.status in _CURRENT]


@dataclass(frozen=True)
class Story:
    """What happened to a saga, in words, for the top of its page."""

    headline: str
    lines: tuple[str, ...]
    tone: str  # a PALETTE style: completed, failed, compensated, executing, waiting


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "nothing"


def _timed_out(wf: WorkflowState) -> list[str]:
    """Attempts whose worker was lost or that overran, per step: each may have applied its
    effect before it was given up, which an operator checking a saga wants to know."""
    by_step: dict[str, list[HistoryEntry]] = {}
    for h in wf.history:
        if h.step is not None and h.trigger == StepTrigger.TIME_OUT:
            by_step.setdefault(h.step, []).append(h)
    lines = []
    for name, entries in by_step.items():
        numbers = [str(h.attempt) for h in entries if h.attempt]
        which = f"attempt{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}".strip()
        lines.append(f"Step {name}: {which} timed out ({entries[-1].detail or 'no detail'})")
    return lines


def _restarted(before: list[HistoryEntry], restart: HistoryEntry) -> str:
    """Who restarted the saga, from where and why, and the failure that had halted it (the
    step may have completed since, so its row no longer says)."""
    text = f"{restart.by} restarted it {restart.detail or ''}".rstrip()
    halt = next(
        (h for h in reversed(before) if h.step is not None and h.dest == StepStatus.FAILED.value),
        None,
    )
    if halt is not None:
        text += f" — after {halt.step} failed ({halt.detail or 'no detail'})"
    return text


_CANCELS = (WorkflowTrigger.CANCEL, WorkflowTrigger.FORCE_CANCEL)
#: What a person did to a saga, which its story names them for.
_OPERATED = (WorkflowTrigger.SIGNAL, *_CANCELS, WorkflowTrigger.RESTART)


def story(wf: WorkflowState) -> Story:
    """The saga's outcome and the few facts behind it: which step failed and why, what was
    undone and in which order, who cancelled or signalled it, what it waits for."""
    status = wf.status.value
    failed = [s for s in wf.steps if s.status is StepStatus.FAILED]
    undone = [
        h.step for h in wf.history if h.step is not None and h.dest == StepStatus.COMPENSATED.value
    ]
    not_undone = [s.name for s in wf.steps if s.status is StepStatus.COMPENSATION_FAILED]
    retried = sum(max(s.attempts - 1, 0) for s in wf.steps)
    people = [
        _restarted(wf.history[:i], h)
        if h.trigger == WorkflowTrigger.RESTART
        else f"{h.by} sent {h.detail}"
        if h.trigger == WorkflowTrigger.SIGNAL
        else f"{h.by}: {h.trigger}"
        for i, h in enumerate(wf.history)
        if h.step is None and h.by and h.trigger in _OPERATED
    ]
    lines: list[str] = []
    for s in failed:
        why = f"{s.error.type}: {s.error.message}" if s.error else "no detail"
        lines.append(f"Step {s.name} failed after {counted(s.attempts, 'attempt')} — {why}")
    lines.extend(_timed_out(wf))
    if undone:
        lines.append(f"Undone, in this order: {' → '.join(undone)}")
    if not_undone:
        lines.append(f"Could not be undone: {_names(not_undone)} — an operator must act")
    if wf.reason and not failed:
        lines.append(wf.reason)
    for text in people:
        lines.append(text)
    if retried:
        lines.append(f"{retried} retr{'y' if retried == 1 else 'ies'} along the way")
    waiting = [s for s in wf.steps if s.status is StepStatus.WAITING]
    running = [s for s in wf.steps if s.status in STEP_IN_FLIGHT]
    done = sum(1 for s in wf.steps if s.status is StepStatus.COMPLETED)
    if status == "COMPLETED":
        return Story(f"Completed — all {len(wf.steps)} steps ran", tuple(lines), "completed")
    cancels = [h for h in wf.history if h.trigger in _CANCELS and h.step is None]
    if wf.status in WORKFLOW_ROLLED_BACK and cancels and not failed:
        how = (
            "force-cancelled"
            if cancels[-1].trigger == WorkflowTrigger.FORCE_CANCEL
            else "cancelled"
        )
        return Story(
            f"{status.title()} — {how} by {cancels[-1].by or 'someone'}, so {_undone(undone)}",
            tuple(lines),
            "compensated" if undone else "skipped",
        )
    if status == "COMPENSATED":
        first = failed[0].name if failed else "a step"
        return Story(
            f"Compensated — {first} failed, so {_undone(undone)}",
            tuple(lines),
            "compensated",
        )
    if status == "CANCELLED":
        return Story(f"Cancelled — {_undone(undone)}", tuple(lines), "skipped")
    if status == "FAILED":
        cause = (
            f"could not undo {_names(not_undone)}"
            if not_undone
            else f"{failed[0].name} failed"
            if failed
            else "halted"
        )
        return Story(
            f"Halted (FAILED) — {cause}; it waits for an operator (restart it from a step)",
            tuple(lines),
            "failed",
        )
    if waiting:
        w = waiting[0]
        what = f"the signal {w.signal!r}" if w.kind == "wait" else "its timer"
        head = f"Waiting — step {w.name} waits for {what} ({done}/{len(wf.steps)} steps done)"
        return Story(head, tuple(lines), "waiting")
    if status in ("COMPENSATING", "CANCELLING"):
        return Story(f"{status.title()} — undoing completed steps", tuple(lines), "compensating")
    now = ", ".join(
        f"{s.name} ({s.status.value}" + (f", attempt {s.attempts})" if s.attempts else ")")
        for s in running
    )
    return Story(
        f"{status.title()} — {now or 'between steps'} ({done}/{len(wf.steps)} steps done)",
        tuple(lines),
        "executing",
    )


def gist(wf: WorkflowState) -> str:
    """The story's headline without the status, for a row of the list."""
    return story(wf).headline.split(" — ", 1)[-1]


def _undone(undone: list[str]) -> str:
    verb = "was" if len(undone) == 1 else "were"
    return f"{counted(len(undone), 'completed step')} {verb} undone"
