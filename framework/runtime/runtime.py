"""The Runtime: everything one event needs, as one value.

The ports (store, queue, clock), the registry and the two compiled lifecycles the tables
compile to, telemetry and listeners, the heartbeat thread, the fault-injection probe and the
eager-dispatch switch. The kernel, jobs, commands, admission and `handlers.call` take it;
none of them knows the Engine, which is only a facade built on one (statesaga.engine). A
simulation or a test builds its own Runtime with its own ports instead of changing a built
engine's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..charts.machine import CompiledChart
from ..observability.telemetry import Telemetry
from ..ports import Clock, Job, Queue, Store, SystemClock
from ..registry import Registry
from ..security.allowlist import AllowList
from ..vocabulary import ended
from .heartbeat import Heartbeats
from .observe import Listener, Observer

#: Fault injection (statesaga.verify.crashcheck): called with a boundary name and the job at
#: before_action, after_action, after_save, before_compensation, after_compensation.
Probe = Callable[[str, Job], None]


@dataclass(eq=False)
class Runtime:
    """What the runtime's collaborators share. `eager` and `probe` may change while it runs
    (a warm shutdown stops eager dispatch; a test loses a worker at one boundary)."""

    store: Store
    queue: Queue
    registry: Registry
    #: The lifecycles this runtime fires, compiled against `registry`.
    workflow_chart: CompiledChart
    step_chart: CompiledChart
    #: The Engine passes the store's clock (statesaga.runtime.clock); the host's by default.
    clock: Clock = field(default_factory=SystemClock)
    #: Traces and metrics (OpenTelemetry API): the first listener, and the job hooks.
    telemetry: Telemetry = field(default_factory=Telemetry)
    #: The worker name written into heartbeats and history (None: not a worker).
    worker: str | None = None
    heartbeat_interval: float = 5.0
    probe: Probe | None = None
    # Eager dispatch (the default): the settle of a step also claims the next ready step
    # and this process runs it at once, one store write per step instead of two and no
    # trip through the queue. Other ready steps (parallel branches) still go to the queue.
    # A claimed step is EXECUTING from that save on; if this process dies before it ends,
    # it is a lost attempt like any other (stale heartbeat, recovery). A step whose lost
    # attempt could halt the saga (at or past the pivot) is held instead and claimed by
    # its own save right before its call (runtime.jobs: claimed is not started).
    eager: bool = True
    #: The handler modules a workflow's `handlers:` hint may import; None: installed
    #: packages' (read when first needed, see `allow_list`).
    allowed: AllowList | None = None
    #: Called after each save, for each transition (telemetry's first).
    listeners: list[Listener] = field(default_factory=list)
    #: Where a workflow has ended: the final states, and those tagged `halted`.
    ended_states: frozenset[str] = field(init=False)
    heartbeats: Heartbeats = field(init=False)
    observer: Observer = field(init=False)

    def __post_init__(self) -> None:
        self.eager = bool(self.eager)
        self.ended_states = ended(self.workflow_chart.chart)
        if not self.listeners:
            self.listeners.append(self.telemetry.observe)
        self.heartbeats = Heartbeats(
            lambda workflow_id: self.store.heartbeat(workflow_id, self.clock.now()),
            lambda: self.heartbeat_interval,
        )
        self.observer = Observer(self)

    def allow_list(self) -> AllowList:
        """The allow-list, read from the installed packages the first time one is needed."""
        if self.allowed is None:
            self.allowed = AllowList.installed()
        return self.allowed

    def has_ended(self, status: str) -> bool:
        """Final, or halted for an operator (FAILED): nothing moves it on by itself."""
        return status in self.ended_states


__all__ = ["Probe", "Runtime"]
