"""Commands: what an operator (or a handler reporting progress) asks of a workflow.

Each command checks its preconditions on the stored document, with a message that says why
it was refused and what to do instead, then fires its trigger in one transaction. The tables
decide what the trigger does; a command only refuses what would make no sense to ask.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..definitions.inputs import payload_problems
from ..definitions.load import WorkflowDefinition
from ..errors import InputError, Problem, StateError, TransitionError
from ..models import StepStatus, WorkflowState
from ..security.limits import json_problems, json_size, max_input_bytes
from ..vocabulary import STEP_SIGNALLABLE, WorkflowTrigger
from .admission import Admission
from .transaction import Kernel, Txn, full_state, label, texts

if TYPE_CHECKING:
    from .runtime import Runtime

_SUMMARY = 200  # characters of a signal's payload kept in the history


class Commands:
    """A runtime's commands, each one transaction through its kernel; a definition is
    admitted (`admission`) before its first start."""

    def __init__(self, runtime: Runtime, kernel: Kernel) -> None:
        self.rt = runtime
        self.kernel = kernel
        self.admission = Admission(runtime)

    def _fire(self, trigger: str, detail: str | None = None) -> Callable[[Txn], bool]:
        """An `apply` that fires a workflow trigger unconditionally."""

        def apply(txn: Txn) -> bool:
            self.kernel.fire(txn, None, trigger, detail)
            return True

        return apply

    def start(
        self,
        definition: WorkflowDefinition,
        input: Mapping[str, Any] | None,
        session_id: str | None,
        by: str | None,
    ) -> WorkflowState:
        rt, kernel = self.rt, self.kernel
        self.admission.admit(definition)
        definition.check_input(input)  # nothing is stored for an input the saga cannot use
        wf = definition.instantiate(input, session_id)
        rt.telemetry.begin(wf)
        kernel.create(wf, lambda txn: kernel.fire(txn, None, WorkflowTrigger.START), by)
        return wf

    def start_stored(self, workflow_id: str, by: str | None) -> WorkflowState:
        rt = self.rt

        def apply(txn: Txn) -> bool:
            rt.telemetry.begin(txn.wf)
            self.kernel.fire(txn, None, WorkflowTrigger.START)
            return True

        return self.kernel.command(workflow_id, apply, by)

    def cancel(self, workflow_id: str, force: bool, by: str | None) -> WorkflowState:
        rt = self.rt
        trigger = WorkflowTrigger.FORCE_CANCEL if force else WorkflowTrigger.CANCEL

        def apply(txn: Txn) -> bool:
            status = txn.wf.status
            if rt.has_ended(status.value):
                raise StateError(f"{workflow_id} is already {status.value}; nothing to cancel")
            self.kernel.fire(txn, None, trigger)
            return True

        return self.kernel.command(workflow_id, apply, by)

    def resume(self, workflow_id: str, by: str | None) -> WorkflowState:
        return self.kernel.command(workflow_id, self._fire(WorkflowTrigger.RESUME), by)

    def suspend(self, workflow_id: str, by: str | None, reason: str | None) -> WorkflowState:
        texts(reason=reason)
        apply = self._fire(WorkflowTrigger.SUSPEND, reason)
        return self.kernel.command(workflow_id, apply, by)

    def progress(
        self, workflow_id: str, step: str, attempt: int, trigger: str, detail: str | None
    ) -> WorkflowState:
        rt = self.rt

        def apply(txn: Txn) -> bool:
            s = txn.wf.step(step)
            if s.status is not StepStatus.EXECUTING or s.attempts != attempt:
                raise StateError(
                    f"{workflow_id}: step {step!r} attempt {attempt} is not running "
                    f"(it is {s.status.value}, attempt {s.attempts})"
                )
            source = full_state(s.status.value, s.substate)
            self.kernel.fire(txn, s, trigger, detail)
            if StepStatus(s.status) is not StepStatus.EXECUTING:
                raise TransitionError(
                    rt.step_chart.name,
                    label(source),
                    trigger,
                    rt.step_chart.allowed(source),
                    "a progress trigger must keep the step inside EXECUTING",
                )
            txn.persist = True
            return True

        return self.kernel.command(workflow_id, apply, rt.worker)

    def signal(self, workflow_id: str, name: str, payload: Any, by: str | None) -> WorkflowState:
        rt = self.rt
        # The check every input gets (Python API, CLI and HTTP alike): plain, finite JSON
        # within the size limit, or nothing is stored.
        problems = [Problem(m, "payload") for m in json_problems(payload)]
        if not problems and json_size(payload) > max_input_bytes():
            problems.append(
                Problem(
                    f"larger than {max_input_bytes()} bytes (STATESAGA_MAX_INPUT_BYTES)", "payload"
                )
            )
        if problems:
            raise InputError(problems)
        summary = json.dumps(payload, sort_keys=True)
        if len(summary) > _SUMMARY:
            summary = summary[: _SUMMARY - 1] + "…"

        def apply(txn: Txn) -> bool:
            wf = txn.wf
            if rt.has_ended(wf.status.value):
                raise StateError(f"{workflow_id} is already {wf.status.value}; it takes no signals")
            awaiting = [s for s in wf.steps if s.kind == "wait" and s.signal == name]
            if not awaiting:
                known = sorted({s.signal for s in wf.steps if s.kind == "wait" and s.signal})
                raise StateError(
                    f"{workflow_id}: no step waits for the signal {name!r}"
                    + (f" (it waits for {', '.join(known)})" if known else " (it has no waits)")
                )
            open_ = [s for s in awaiting if s.status in STEP_SIGNALLABLE]
            kept = len(wf.signals.get(name, ()))
            if len(open_) <= kept:
                states = ", ".join(f"{s.name} is {s.status.value}" for s in awaiting)
                raise StateError(
                    f"{workflow_id}: no step is left to take the signal {name!r} ({states}"
                    + (f"; {kept} already kept" if kept else "")
                    + ")"
                )
            schema = open_[kept].payload  # the step that will take this payload
            if schema is not None:
                problems = payload_problems(schema, payload, name)
                if problems:
                    raise InputError(problems)
            wf.signals.setdefault(name, []).append(payload)
            self.kernel.fire(txn, None, WorkflowTrigger.SIGNAL, f"{name} {summary}")
            return True

        return self.kernel.command(workflow_id, apply, by)

    def restart(
        self, workflow_id: str, from_step: str, reason: str, by: str | None
    ) -> WorkflowState:
        rt = self.rt
        if not reason.strip():
            raise StateError("a restart needs a reason (it is kept in the history)")

        def apply(txn: Txn) -> bool:
            wf = txn.wf
            if not rt.workflow_chart.can_fire(wf.status.value, WorkflowTrigger.RESTART):
                raise StateError(
                    f"{workflow_id} is {wf.status.value}; only a FAILED workflow can be restarted"
                )
            names = [s.name for s in wf.steps]
            try:
                start = wf.step(from_step).name
            except KeyError:
                raise StateError(
                    f"{workflow_id} has no step {from_step!r} (steps: {', '.join(names)})"
                ) from None
            kept = names[: names.index(start)]
            for s in wf.steps:
                if s.name in kept and s.status is not StepStatus.COMPLETED:
                    raise StateError(
                        f"{workflow_id}: step {s.name!r} before {start!r} is {s.status.value}, "
                        f"so its result cannot be kept; restart from {s.name!r} or earlier"
                    )
            txn.params["from_step"] = start
            self.kernel.fire(txn, None, WorkflowTrigger.RESTART, f"from {start}: {reason}")
            return True

        return self.kernel.command(workflow_id, apply, by)


__all__ = ["Commands"]
