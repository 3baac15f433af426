"""The one place an Engine is assembled from what a process is started with: store and queue
URLs (or adapters already open), the operator's handler allow-list, a definition's step
lifecycle, and the engine's knobs (worker name, heartbeat, eager dispatch, probe, clock).

Every command of the CLI, `statesaga worker`, the web server, the crash matrix's worker
processes, the simulation and the `WorkflowExecutor` compatibility shim build their engines
here, so a difference between them is an option someone chose (`EngineOptions`), not a line
one of them forgot. Where handler code may come from is the policy of
statesaga.security.allowlist; this module only picks which of its lists a process uses
(`allow`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from . import plugins
from .engine import Engine, Probe
from .plugins import DEFAULT_QUEUE, DEFAULT_STORE, ChartSource
from .ports import Clock, Queue, Store
from .registry import Registry
from .security.allowlist import AllowList
from .security.redact import RedactedRepr

if TYPE_CHECKING:
    from .definitions.load import WorkflowDefinition

#: Which allow-list of handler modules an engine gets (statesaga.security.allowlist):
#: - "operator": `handlers` (else $STATESAGA_HANDLERS), the working directory's
#:   `[tool.statesaga] handlers`, and installed packages' entry points: every CLI command and
#:   the server, which run what the person starting them allows;
#: - "listed": exactly `handlers`, and installed packages' entry points: a worker started from
#:   Python (`WorkerSettings`) and the crash matrix's workers, told their modules explicitly;
#: - "installed": installed packages' entry points only, read when a definition first names
#:   one (the Engine's own default): the Python API and `statesaga demo`, which import nothing
#:   an environment variable or a pyproject.toml names.
AllowFrom = Literal["operator", "listed", "installed"]


def store_url(url: str | None) -> str:
    """The store a command uses: the URL given, else $STATESAGA_STORE, else the SQLite file."""
    return url or os.environ.get("STATESAGA_STORE") or DEFAULT_STORE


def queue_url(url: str | None) -> str:
    """The queue a command uses: the URL given, else $STATESAGA_QUEUE, else in-process."""
    return url or os.environ.get("STATESAGA_QUEUE") or DEFAULT_QUEUE


def operator_handlers(
    handlers: Sequence[str] = (), near: Sequence[Path] = ()
) -> tuple[AllowList, Registry]:
    """The operator's allow-list (`--handlers`, else $STATESAGA_HANDLERS; pyproject; installed
    packages) and a registry holding the modules the operator named, imported now (found
    installed, in the working directory, or in the folders `near`, a definition's)."""
    allowed = AllowList.for_operator(handlers)
    registry = Registry()
    allowed.load_eager(registry, near)
    return allowed, registry


@dataclass(repr=False)
class EngineOptions(RedactedRepr):
    """What an engine is built from (repr() masks the URLs' passwords); `build()` makes it."""

    #: A store URL, or a store already open (one server shares it between its engines);
    #: None: $STATESAGA_STORE, else sqlite:///statesaga.db.
    store: str | Store | None = None
    #: A queue URL, or a queue already open; None: $STATESAGA_QUEUE, else inline://.
    queue: str | Queue | None = None
    #: The handler modules the operator named (`--handlers`, repeatable, comma-separated).
    handlers: Sequence[str] = ()
    #: Which allow-list the engine gets (see AllowFrom).
    allow: AllowFrom = "installed"
    #: An allow-list already made (a worker's settings, a server's): replaces `handlers` and
    #: `allow`; its named modules are imported into the registry (again a no-op if they are).
    allowed: AllowList | None = None
    #: The registry to fill (shared by a server's engines); None: a new one.
    registry: Registry | None = None
    #: Folders the named modules are also looked for in, after sys.path (a definition's).
    near: Sequence[Path] = ()
    #: The saga this engine runs: its `step_lifecycle:` chart becomes the engine's.
    definition: WorkflowDefinition | None = None
    #: A step lifecycle that extends the shipped one (a chart, a YAML path); a definition's
    #: own chart wins.
    step_chart: ChartSource | None = None
    #: The worker name written into heartbeats and history (None: not a worker).
    worker: str | None = None
    heartbeat: float = 5.0
    #: Run the step a settle claims in this process at once (Engine.eager).
    eager: bool = True
    #: Called at every job boundary (the crash matrix kills the process there).
    probe: Probe | None = None
    clock: Clock | None = None

    def allow_list(self) -> AllowList | None:
        """The allow-list these options give (None: the Engine's lazy default, installed
        packages' entry points)."""
        if self.allowed is not None:
            return self.allowed
        if self.allow == "operator":
            return AllowList.for_operator(self.handlers)
        if self.allow == "listed":
            return AllowList.of(self.handlers, "--handlers") | AllowList.installed()
        return None

    def build(self) -> Engine:
        """The engine: handler modules imported first (a module that cannot be imported fails
        before any store or queue is opened), then the store, then the queue."""
        allowed = self.allow_list()
        registry = self.registry
        if allowed is not None:
            registry = registry if registry is not None else Registry()
            allowed.load_eager(registry, self.near)
        # plugins.open_* looked up at call time (not bound at import), so a test's
        # monkeypatch of statesaga.plugins.open_store reaches every builder.
        store = self.store
        if store is None or isinstance(store, str):
            store = plugins.open_store(store_url(store))
        queue = self.queue
        if queue is None or isinstance(queue, str):
            queue = plugins.open_queue(queue_url(queue))
        step_chart = self.step_chart
        if self.definition is not None:
            step_chart = self.definition.step_chart() or step_chart
        return Engine(
            store,
            queue,
            registry,
            clock=self.clock,
            worker=self.worker,
            heartbeat_interval=self.heartbeat,
            probe=self.probe,
            eager=self.eager,
            step_chart=step_chart,
            allowed=allowed,
        )


def check_reachable(engine: Engine) -> None:
    """Before a workflow is stored: the queue answers, so an unreachable queue does not leave a
    RUNNING workflow whose job never left, and then the store does (it is created if new:
    last, so a refused command leaves no store behind)."""
    from .runtime.outage import ride_out

    # A server's pause of a few seconds is waited out; one that is down is said at once.
    ride_out(engine.queue.check, "the queue")
    ride_out(engine.store.initialize, "the store")


__all__ = [
    "AllowFrom",
    "EngineOptions",
    "check_reachable",
    "operator_handlers",
    "queue_url",
    "store_url",
]
