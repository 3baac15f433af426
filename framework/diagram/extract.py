"""Extractors: the same objects that run (Chart, WorkflowDefinition, WorkflowState) -> Diagram.

Everything is emitted in table order (states, transitions, steps as written), so the output
of a renderer is deterministic and a diff of a regenerated picture follows a diff of the table.
"""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Literal

from .._yaml import load_yaml_file
from ..charts.chart import Chart, chart_from_data
from ..charts.lifecycles import lifecycle
from ..definitions.load import WorkflowDefinition, definition_from_data, is_definition
from ..models import (
    HistoryEntry,
    SagaStep,
    StepStatus,
    WorkflowState,
    WorkflowStatus,
    halt_reason,
)
from ..vocabulary import STEP_CURRENT, STEP_UNWOUND
from .model import (
    Diagram,
    DiagramEdge,
    DiagramNode,
    DiagramNote,
    EdgeKind,
    NodeKind,
)

# Workflow outcomes drawn after the steps of a definition. The ids contain `:`, which a step
# name cannot (StepSpec.name's pattern), so they can never clash with a step.
DONE = "workflow:COMPLETED"
UNDONE = "workflow:COMPENSATED"
HALTED = "workflow:FAILED"  # live views only: halted after the pivot, or an undo failed
CANCELLED = "workflow:CANCELLED"  # live views only: cancelled before any step ran
OUTCOMES = frozenset({DONE, UNDONE, HALTED, CANCELLED})

_TAG_STYLES = ("failure", "rolled_back", "success")  # first match wins
# Whose error a step shows: a display choice (IN_DOUBT's is said by the halt's reason), not a
# group the tables state.
_STOPPED = frozenset({StepStatus.FAILED, StepStatus.COMPENSATION_FAILED, StepStatus.RETRYING})
#: The words that mark a step that waits: for a signal (a person, another system), for time.
#: Words, not glyphs: ⏸ and ⏱ need an emoji font, which a server or a browser may not have.
WAIT_MARK = "wait:"
SLEEP_MARK = "sleep:"


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    return f"{value:g}s"


def wait_text(
    kind: str,
    signal: str | None,
    timeout: float | None,
    on_timeout: str,
    duration: float | None,
    until: object | None,
) -> str | None:
    """What a wait or sleep step waits for, as drawn: `wait: signal approve, timeout 3d: fail`
    or `sleep: 5s`; None for an action step."""
    if kind == "wait":
        text = f"{WAIT_MARK} signal {signal}"
        if timeout is not None:
            text += f", timeout {_seconds(timeout)}: {on_timeout}"
        return text
    if kind == "sleep":
        return f"{SLEEP_MARK} " + (_seconds(duration) if duration is not None else f"until {until}")
    return None


def _tag_style(tags: tuple[str, ...]) -> str:
    return next((t for t in _TAG_STYLES if t in tags), "default")


def from_chart(chart: Chart, detail: bool = False) -> Diagram:
    """A chart's states and transitions. Guards are always shown (they tell apart two
    transitions on the same trigger); effects and state descriptions only with `detail`.

    A compound state becomes a node with its children inside it (`parent`); its initial child
    is the child's `initial` kind, so the start marker is drawn inside the compound state.
    """
    nodes = []
    for path, s in chart.states.items():
        parent = chart.parent(path)
        if parent is None:
            first = path == chart.initial
        else:
            outer = chart.states[parent]
            # Every region of a parallel state is entered; none is "the" initial one.
            first = not outer.parallel and s.name == outer.initial
        # A chart whose initial state is also final has nowhere to go; the start marker is the
        # more useful of the two to draw.
        kind: NodeKind = "initial" if first else "final" if s.final else "normal"
        nodes.append(
            DiagramNode(
                id=path,
                label=s.name,
                kind=kind,
                description=s.description,
                tags=s.tags,
                style=_tag_style(s.tags),
                parent=parent,
                parallel=s.parallel,
            )
        )
    edges = []
    for t in chart.transitions:
        effects = tuple(t.effect_names)
        kind_e: EdgeKind = "compensation" if any("compensat" in e for e in effects) else "forward"
        for src in t.source:
            edges.append(
                DiagramEdge(
                    src=src,
                    dst=t.dest,
                    label=t.trigger,
                    guards=t.guards,
                    effects=effects if detail else (),
                    kind=kind_e,
                    description=t.description,
                )
            )
    notes = (
        tuple(DiagramNote(n.id, n.description) for n in nodes if n.description) if detail else ()
    )
    return Diagram(
        title=chart.name,
        nodes=tuple(nodes),
        edges=tuple(edges),
        notes=notes,
        kind="chart",
        description=chart.spec.description,
        detail=detail,
    )


def _dag(
    steps: list[tuple[str, str, tuple[str, ...], bool, str | None, str | None]],
) -> tuple[list[DiagramNode], list[DiagramEdge], list[DiagramNote]]:
    """Steps (name, description, depends_on, pivot, compensation action, wait text) -> nodes
    and edges. A wait or sleep step is tagged `wait` / `sleep`, its label marked with the
    glyph and a note saying what it waits for (`wait_text`).

    Forward edges follow depends_on. Every step that an unwinding saga passes through (those
    neither the pivot nor after it) gets a back edge to each step it depends on, labelled with
    its compensation, or to the COMPENSATED outcome when it depends on nothing.
    """
    names = [s[0] for s in steps]
    deps = {s[0]: s[2] for s in steps}
    has_dependents = {d for s in steps for d in s[2]}
    pivot = next((s[0] for s in steps if s[3]), None)

    def after_pivot(name: str) -> bool:
        seen: set[str] = set()
        todo = list(deps[name])
        while todo:
            d = todo.pop()
            if d == pivot:
                return True
            if d not in seen:
                seen.add(d)
                todo.extend(deps.get(d, ()))
        return False

    nodes: list[DiagramNode] = []
    edges: list[DiagramEdge] = []
    notes: list[DiagramNote] = []
    undoable = [n for n in names if n != pivot and not (pivot and after_pivot(n))]
    for name, desc, depends_on, is_pivot, _comp, waits in steps:
        tags: tuple[str, ...] = ("pivot",) if is_pivot else ()
        mark = ""
        if waits:
            mark = SLEEP_MARK if waits.startswith(SLEEP_MARK) else WAIT_MARK
            tags = ("sleep",) if mark == SLEEP_MARK else ("wait",)
        nodes.append(
            DiagramNode(
                id=name,
                label=f"{mark} {name}" if waits else name,
                kind="initial" if not depends_on else "normal",
                description=desc,
                tags=tags,
                style="pivot" if is_pivot else "waiting" if waits else "default",
            )
        )
        if waits:
            notes.append(DiagramNote(name, waits))
        if is_pivot:
            notes.append(
                DiagramNote(
                    name,
                    "pivot, the point of no return; later steps are retried, never compensated",
                )
            )
        elif desc:
            notes.append(DiagramNote(name, desc))
    nodes.append(
        DiagramNode(DONE, "COMPLETED", "final", "every step completed", ("success",), "success")
    )
    if undoable:
        nodes.append(
            DiagramNode(
                UNDONE,
                "COMPENSATED",
                "final",
                "every completed step was undone",
                ("rolled_back",),
                "rolled_back",
            )
        )
    for name, _desc, depends_on, _p, _c, _w in steps:
        for d in depends_on:
            edges.append(DiagramEdge(d, name))
        if name not in has_dependents:
            edges.append(DiagramEdge(name, DONE))
    for name, _desc, depends_on, _p, comp, _w in steps:
        if name in undoable:
            label = f"undo {comp}" if comp else "nothing to undo"
            for d in depends_on or (UNDONE,):
                edges.append(DiagramEdge(name, d, label, kind="compensation"))
    return nodes, edges, notes


def from_definition(definition: WorkflowDefinition, detail: bool = False) -> Diagram:
    """A saga: its steps as a chain or DAG, compensations as back edges, the pivot marked.
    With `detail`, each step's effective retry policy (its own fields over the saga's
    defaults) and its compensation's are noted on it."""
    steps = [
        (
            s.name,
            s.description,
            definition.dependencies[s.name],
            s.pivot,
            s.compensation.action if s.compensation else None,
            wait_text(s.kind, s.signal, s.timeout, s.on_timeout, s.duration, s.until),
        )
        for s in definition.steps
    ]
    nodes, edges, notes = _dag(steps)
    if detail:
        for spec in definition.steps:
            if spec.kind == "action":
                text = f"retry: {definition.retry(spec).summary()}"
                undo = definition.compensation_retry(spec)
                if undo is not None:
                    text += f"; undo retry: {undo.summary()}"
                notes.append(DiagramNote(spec.name, text))
    return Diagram(
        title=definition.name,
        nodes=tuple(nodes),
        edges=tuple(edges),
        notes=tuple(notes),
        kind="definition",
        description=definition.spec.description,
        detail=detail,
        direction="LR",
    )


def from_instance(
    wf: WorkflowState,
    definition: WorkflowDefinition | None = None,
    view: Literal["steps", "workflow", "step"] = "steps",
    *,
    step: str | None = None,
    chart: Chart | None = None,
) -> Diagram:
    """A live picture of one workflow.

    view="steps": the saga's steps, each coloured by its status (in-flight ones marked
    current, with the active sub-state path when the step lifecycle is nested), the workflow's
    outcome node marked when it has finished, and the edges the history shows were traversed
    numbered in order. view="workflow": the workflow lifecycle (or `chart`) with the current
    state marked, down to the active leaf when the lifecycle is nested, and the path taken
    from the history numbered. view="step": the lifecycle of one `step` the same way; the
    chart is `chart`, else the definition's `step_lifecycle`, else the shipped step lifecycle.
    The instance carries its steps' dependencies, so `definition` only adds descriptions.
    """
    title = f"{wf.name} {wf.id}: {wf.status.value}"
    if view == "workflow":
        return _live_chart(
            chart or lifecycle("workflow"),
            _leaves(wf.status.value, wf.substate),
            [h for h in wf.history if h.step is None],
            title,
            halt_reason(wf) if wf.status is WorkflowStatus.FAILED else None,
        )
    if view == "step":
        if step is None:
            raise ValueError("view='step' needs the name of a step")
        s = wf.step(step)
        here = _leaves(s.status.value, s.substate)
        if chart is None:
            chart = (definition.step_chart() if definition else None) or lifecycle("step")
        return _live_chart(
            chart,
            here,
            [h for h in wf.history if h.step == s.name],
            f"{wf.name} {wf.id} step {s.name}: {', '.join(here)}",
            _step_trouble(s),
        )
    descriptions = {s.name: s.description for s in definition.steps} if definition else {}
    steps = [
        (
            s.name,
            descriptions.get(s.name, ""),
            tuple(s.depends_on),
            s.pivot,
            s.compensation.action_type if s.compensation else None,
            wait_text(s.kind, s.signal, s.timeout, s.on_timeout, s.sleep, s.until),
        )
        for s in wf.steps
    ]
    nodes, edges, notes = _dag(steps)
    return _live_steps(wf, nodes, edges, notes, title)


def _live_steps(
    wf: WorkflowState,
    nodes: list[DiagramNode],
    edges: list[DiagramEdge],
    notes: list[DiagramNote],
    title: str,
) -> Diagram:
    """The steps view of `from_instance`: statuses on the steps, the outcome the workflow
    reached (only that one once it has ended, with the reason when it halted), and the path
    numbered 1, 2, 3, … in the order the history went through it."""
    by_name = {s.name: s for s in wf.steps}
    status = WorkflowStatus(wf.status)
    reached = {
        WorkflowStatus.COMPLETED: DONE,
        WorkflowStatus.COMPENSATED: UNDONE,
        WorkflowStatus.FAILED: HALTED,
        WorkflowStatus.CANCELLED: CANCELLED,
    }.get(status)
    if status is WorkflowStatus.FAILED:
        nodes.append(
            DiagramNode(HALTED, "FAILED (halted)", "normal", "halted", ("failure",), "failure")
        )
        undo_failed = [s for s in wf.steps if s.status is StepStatus.COMPENSATION_FAILED]
        for s in undo_failed or [s for s in wf.steps if s.status is StepStatus.FAILED]:
            label = "compensation failed" if undo_failed else "failed, not compensated"
            edges.append(DiagramEdge(s.name, HALTED, label))
    elif status is WorkflowStatus.CANCELLED:
        nodes.append(DiagramNode(CANCELLED, "CANCELLED", "final", "cancelled before it started"))
    if reached is not None:
        # An ended workflow reached one outcome: the others are not drawn (nor arrows to them),
        # nor the ways back of a saga that never unwound.
        gone = {n.id for n in nodes if n.id in OUTCOMES and n.id != reached}
        nodes = [n for n in nodes if n.id not in gone]
        edges = [e for e in edges if e.dst not in gone]
        if not any(s.status in STEP_UNWOUND for s in wf.steps):
            edges = [e for e in edges if e.kind != "compensation"]

    # Events in history order, each the edges it traverses: a step's first dispatch (the
    # edges into it), a step's unwinding (its back edges), the workflow's end (the edges into
    # the outcome). Positions count the events that have an edge, so they run 1, 2, 3, …
    into: dict[str, list[int]] = {}
    out_of: dict[str, list[int]] = {}
    for i, e in enumerate(edges):
        into.setdefault(e.dst, []).append(i)
        if e.kind == "compensation" or e.dst == HALTED:
            out_of.setdefault(e.src, []).append(i)
    events: list[list[int]] = []
    started: set[str] = set()
    unwound: set[str] = set()
    for h in wf.history:
        dest, source = _top(h.dest), _top(h.source)
        if h.step is None:
            if dest == source or reached is None or dest != status.value:
                continue
            # The workflow ended: the arrows into its outcome (an unwound saga got there by
            # its last compensation, already counted).
            events.append([i for i in into.get(reached, []) if edges[i].kind == "forward"])
            continue
        if dest in _STARTED and source != dest and h.step not in started:
            started.add(h.step)
            events.append([i for i in into.get(h.step, []) if edges[i].kind == "forward"])
        elif (
            source == StepStatus.COMPLETED.value
            and dest in STEP_UNWOUND  # a completed step's first move onto the way back
            and h.step not in unwound
        ):
            unwound.add(h.step)
            events.append([i for i in out_of.get(h.step, []) if edges[i].kind == "compensation"])
    taken: dict[int, list[int]] = {}
    position = 0
    for hit in events:
        hit = [i for i in hit if i not in taken]
        if not hit:
            continue
        position += 1
        for i in hit:
            taken.setdefault(i, []).append(position)
    live_edges = [replace(e, taken=tuple(taken.get(i, ()))) for i, e in enumerate(edges)]
    halted_by_undo = any(s.status is StepStatus.COMPENSATION_FAILED for s in wf.steps)
    live_nodes = []
    for n in nodes:
        step_state = by_name.get(n.id)
        if step_state is not None:
            text = ", ".join(_leaves(step_state.status.value, step_state.substate))
            if (
                halted_by_undo
                and step_state.status is StepStatus.COMPLETED
                and step_state.compensation is not None
            ):
                text += ", not undone"  # where the unwinding stopped
            n = DiagramNode(
                n.id,
                n.label,
                n.kind,
                n.description,
                n.tags,
                style=step_state.status.value.lower(),
                status=text,
                current=step_state.status in STEP_CURRENT,
            )
        elif n.id == reached:
            style = "failure" if n.id == HALTED else "current"
            n = DiagramNode(n.id, n.label, n.kind, n.description, n.tags, style, "", True)
        live_nodes.append(n)
    # Each error once: on the step it happened in, unless the reason of the halt says it.
    reason = halt_reason(wf) if status is WorkflowStatus.FAILED else ""
    for s in wf.steps:
        if s.error is not None and s.status is not StepStatus.COMPLETED:
            text = f"{s.error.type}: {s.error.message}"
            if text not in reason:
                notes.append(DiagramNote(s.name, wrapped(text)))
        if s.compensation is not None and s.compensation.error is not None:
            err = s.compensation.error
            if f"{err.type}: {err.message}" not in reason:
                notes.append(
                    DiagramNote(s.name, wrapped(f"undo failed: {err.type}: {err.message}"))
                )
    if reason:
        notes.append(DiagramNote(HALTED, wrapped(reason)))
    return Diagram(
        title=title,
        nodes=tuple(live_nodes),
        edges=tuple(live_edges),
        notes=tuple(notes),
        kind="instance",
        direction="LR",
    )


#: Where a step starts on the path taken: its first attempt, or its first wait (a wait or a
#: sleep never runs a handler).
_STARTED = frozenset({StepStatus.EXECUTING.value, StepStatus.WAITING.value})
#: Characters per line of a live note: a halt's reason runs to hundreds of characters.
NOTE_WIDTH = 60


def wrapped(text: str) -> str:
    """A note's text in lines of at most NOTE_WIDTH characters (a long word stays whole)."""
    return "\n".join(
        textwrap.fill(line, NOTE_WIDTH, break_long_words=False, break_on_hyphens=False)
        for line in text.splitlines() or [""]
    )


def _step_trouble(step: SagaStep) -> str | None:
    """What went wrong with a step that stopped or waits to retry, for its live view."""
    comp = step.compensation
    if step.status is StepStatus.COMPENSATION_FAILED and comp is not None and comp.error:
        return f"undo failed: {comp.error.type}: {comp.error.message}"
    if step.error is not None and step.status in _STOPPED:
        return f"{step.error.type}: {step.error.message}"
    return None


def _top(path: str) -> str:
    return path.split(".", 1)[0]


def _leaves(status: str, substate: list[str]) -> list[str]:
    """The full paths of the active leaf states: `EXECUTING.CALLING_MODEL`, or the status."""
    return [f"{status}.{sub}" for sub in substate] or [status]


def _live_chart(
    chart: Chart,
    current: list[str],
    entries: list[HistoryEntry],
    title: str,
    reason: str | None = None,
) -> Diagram:
    """A chart with the active leaves marked (their compound ancestors outlined, the states
    never entered faded) and every transition the history entries went through numbered in
    order, 1, 2, 3, … (a loop taken three times carries three numbers). `reason`, when
    given, is noted on the current state (why a workflow halted)."""
    base = from_chart(chart)
    known = {n.id for n in base.nodes}
    current = [c for c in current if c in known]  # a stale substate cannot break the picture
    around = {a for c in current for a in base.ancestors(c)[1:]}
    visited = set(base.ancestors(base.entry(chart.initial)))

    def within(path: str) -> tuple[str, ...]:
        return base.ancestors(path) if path in known else ()

    taken: dict[int, list[int]] = {}
    n = 0
    for h in entries:
        src, dst = within(h.source), within(h.dest)
        visited.update(src + dst)
        # The history names the leaves; the chart's transition may name a compound state
        # around either end. The most specific transition matching the trigger is the one.
        best = max(
            (
                (len(base.ancestors(e.src)), len(base.ancestors(e.dst)), -i)
                for i, e in enumerate(base.edges)
                if e.label == h.trigger and e.src in src and e.dst in dst
            ),
            default=None,
        )
        if best is not None:
            n += 1
            taken.setdefault(-best[2], []).append(n)
    nodes = tuple(
        DiagramNode(
            s.id,
            s.label,
            s.kind,
            s.description,
            s.tags,
            style="current" if s.id in current else "visited" if s.id in visited else "unvisited",
            status="current" if s.id in current else None,
            current=s.id in current or s.id in around,
            parent=s.parent,
            parallel=s.parallel,
        )
        for s in base.nodes
    )
    edges = tuple(replace(e, taken=tuple(taken.get(i, ()))) for i, e in enumerate(base.edges))
    notes = (DiagramNote(current[0], wrapped(reason)),) if reason and current else ()
    return Diagram(
        title=title,
        nodes=nodes,
        edges=edges,
        notes=notes,
        kind="instance",
        description=base.description,
    )


def from_loaded(obj: Chart | WorkflowDefinition, detail: bool = False) -> Diagram:
    """The diagram of whatever a YAML file held: a chart or a workflow definition."""
    if isinstance(obj, WorkflowDefinition):
        return from_definition(obj, detail=detail)
    return from_chart(obj, detail=detail)


def from_path(path: str | Path, detail: bool = False) -> Diagram:
    """Load a chart or a workflow definition (told apart by `workflow:`) and extract it."""
    data, lines = load_yaml_file(path)
    if is_definition(data):
        return from_definition(definition_from_data(data, lines, str(path)), detail=detail)
    return from_chart(chart_from_data(data, lines, str(path)), detail=detail)
