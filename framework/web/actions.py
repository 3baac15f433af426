"""What the dashboard and the API may do, each exactly one engine command: start, signal,
cancel, restart. Every command records who asked (`by`) in the workflow's history.

The definitions a workflow may be started from are only those found under `--definitions`
(the operator's choice); a name from a request never becomes a path. With an in-process queue
(`inline://`) a background thread of the server runs the jobs the commands set going, with the
handlers of the `--handlers` allow-list and of the definitions under `--definitions`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._yaml import load_yaml_file
from ..app import EngineOptions, operator_handlers
from ..definitions.load import WorkflowDefinition, definition_from_data, is_definition
from ..engine import Engine
from ..errors import DefinitionError, StateError, StatesagaError
from ..models import WorkflowState
from ..plugins import only_read, open_store
from ..ports import Store, store_exists
from ..security.redact import RedactedRepr

log = logging.getLogger("statesaga.web")
_SLICE = 0.5  # seconds


@dataclass(frozen=True, repr=False)
class ServeSettings(RedactedRepr):  # type: ignore[misc]
    """How `statesaga serve` was started. The token and the URLs' passwords are kept out of
    repr()."""

    store: str
    queue: str
    handlers: tuple[str, ...] = ()
    definitions: Path | None = None
    token: str | None = field(default=None, repr=False)
    #: The Host headers answered (None: any). `serve` on a loopback address allows only the
    #: loopback names, so no other site can read the pages through DNS rebinding.
    allowed_hosts: tuple[str, ...] | None = None


# mypy reads `statesaga` (the installed name) as untyped while it checks the source folder.
class UnknownDefinition(StatesagaError):  # type: ignore[misc]
    """Raised when a start names a definition that is not under --definitions."""


@dataclass(frozen=True)
class DefinitionEntry:
    path: Path
    definition: WorkflowDefinition | None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.definition.name if self.definition else self.path.stem


class Catalog:
    """The workflow definitions under one directory, by workflow name (the newest version
    when several files share a name); files that are not definitions are skipped, invalid
    ones are listed with their first problem."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.entries: list[DefinitionEntry] = []
        self._seen: list[tuple[Path, int, int]] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Read the directory again if a file was added, removed or changed."""
        files = sorted(self.root.glob("*.y*ml")) if self.root is not None else []
        seen = [(p, p.stat().st_mtime_ns, p.stat().st_size) for p in files]
        if seen == self._seen:
            return
        self._seen = seen
        entries = []
        for path in files:
            try:
                data, lines = load_yaml_file(path)
                if not is_definition(data):
                    continue
                entries.append(DefinitionEntry(path, definition_from_data(data, lines, str(path))))
            except DefinitionError as exc:
                # Located by file name only: the page need not show the server's directories.
                text = "; ".join(str(p) for p in exc.problems) or str(exc)
                entries.append(DefinitionEntry(path, None, text.replace(str(path), path.name)))
        self.entries = entries

    def definitions(self) -> list[WorkflowDefinition]:
        return [e.definition for e in self.entries if e.definition is not None]

    def get(self, name: str) -> WorkflowDefinition:
        found = [d for d in self.definitions() if d.name == name]
        if not found:
            known = ", ".join(sorted({d.name for d in self.definitions()})) or "none"
            raise UnknownDefinition(
                f"no definition named {name!r} under --definitions (known: {known})"
            )
        return max(found, key=lambda d: _version_key(d.version))

    def for_instance(self, wf: WorkflowState) -> WorkflowDefinition | None:
        """The definition a stored workflow was made from, when it is in the catalog (never
        for a plan: its definition is stored with it)."""
        if wf.plan is not None:
            return None
        for d in self.definitions():
            if d.name == wf.name and str(d.version) == str(wf.version):
                return d
        return None


def _version_key(version: Any) -> tuple[int, str]:
    text = str(version)
    return (int(text), "") if text.isdigit() else (-1, text)


class Operations:
    """The engine(s) behind the server: one per step lifecycle, so a saga on an extended step
    chart is run by an engine built with it, as `statesaga worker --step-chart` does."""

    def __init__(self, settings: ServeSettings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store: Store = open_store(settings.store)
        if settings.token is None and store_exists(self.store):
            only_read(self.store)  # a read-only server: it works on a full disk too
        # The operator's allow-list, as for every command that runs handlers: --handlers (else
        # $STATESAGA_HANDLERS), [tool.statesaga], installed entry points; nothing else imports.
        self.near = [settings.definitions] if settings.definitions is not None else []
        self.allowed, self.registry = operator_handlers(settings.handlers, self.near)
        self._engines: dict[str | None, Engine] = {}
        self._lock = threading.Lock()
        self._runners: list[_Runner] = []

    def engine(self, definition: WorkflowDefinition | None = None) -> Engine:
        chart = definition.step_chart() if definition is not None else None
        key = chart.name if chart is not None else None
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                # One store for every engine; a queue of its own (bound to its run_job).
                engine = EngineOptions(
                    store=self.store,
                    queue=self.settings.queue,
                    allowed=self.allowed,
                    registry=self.registry,
                    near=self.near,
                    step_chart=chart,
                ).build()
                self._engines[key] = engine
                if engine.queue.in_process:
                    self._runners.append(_Runner(engine))
            return engine

    def _engine_of(self, workflow_id: str) -> tuple[Engine, WorkflowState]:
        wf = self.store.get(workflow_id)
        definition = self.catalog.for_instance(wf)
        engine = self.engine(definition)
        if definition is not None:
            engine.load(definition)  # its handler modules, for the jobs run in-process
        return engine, wf

    def _kick(self, engine: Engine) -> None:
        for runner in self._runners:
            if runner.engine is engine:
                runner.kick()

    def _require_handlers(self, engine: Engine, wf: WorkflowState) -> None:
        """In-process jobs need their handlers here: refuse before anything is changed."""
        if not engine.queue.in_process:
            return  # workers elsewhere run the jobs, with their own allow-list
        missing = sorted(
            {
                action
                for s in wf.steps
                for action in (
                    s.action_type,
                    s.compensation.action_type if s.compensation else None,
                )
                if action and not engine.registry.has_handler(action)
            }
        )
        if missing:
            raise StateError(
                f"{wf.id} would run in this server (inline queue) and needs the handlers "
                f"{', '.join(missing)}: start serve with --handlers or --definitions"
            )

    # -- the commands ---------------------------------------------------------------------
    def start(
        self,
        name: str,
        input: Mapping[str, Any],
        *,
        session_id: str | None,
        by: str,
    ) -> WorkflowState:
        definition = self.catalog.get(name)
        engine = self.engine(definition)
        wf = engine.start(definition, input, session_id=session_id, by=by)
        log.info("%s started %s (%s)", by, wf.id, definition.name)
        self._kick(engine)
        return wf

    def signal(self, workflow_id: str, name: str, payload: Any, *, by: str) -> WorkflowState:
        engine, current = self._engine_of(workflow_id)
        if not engine.has_ended(current.status.value):
            self._require_handlers(engine, current)
        wf = engine.signal(workflow_id, name, payload, by=by)
        log.info("%s sent the signal %s to %s", by, name, workflow_id)
        self._kick(engine)
        return wf

    def cancel(self, workflow_id: str, *, force: bool, by: str) -> WorkflowState:
        engine, current = self._engine_of(workflow_id)
        if not engine.has_ended(current.status.value):
            self._require_handlers(engine, current)
        wf = engine.cancel(workflow_id, force=force, by=by)
        log.info("%s cancelled %s%s", by, workflow_id, " (forced)" if force else "")
        self._kick(engine)
        return wf

    def restart(self, workflow_id: str, from_step: str, reason: str, *, by: str) -> WorkflowState:
        engine, current = self._engine_of(workflow_id)
        self._require_handlers(engine, current)
        wf = engine.restart(workflow_id, from_step, reason=reason, by=by)
        log.info("%s restarted %s from %s", by, workflow_id, from_step)
        self._kick(engine)
        return wf

    # -- agents' plans (statesaga.plans): the tools are those of the server's allow-list ----
    def start_plan(
        self, plan: Mapping[str, Any], *, session_id: str | None, by: str
    ) -> WorkflowState:
        from ..plans import start_plan

        engine = self.engine()
        wf, _ = start_plan(engine, plan, session_id=session_id, by=by)
        log.info("%s started the plan %s (%s)", by, wf.id, wf.name)
        self._kick(engine)
        return wf

    def revise_plan(self, workflow_id: str, patch: Mapping[str, Any], *, by: str) -> WorkflowState:
        from ..plans import revise_plan

        engine, _ = self._plan_engine(workflow_id)
        wf = revise_plan(engine, workflow_id, patch, by=by)
        assert wf.plan is not None
        log.info("%s revised %s to plan version %d", by, workflow_id, wf.plan.current.number)
        self._kick(engine)
        return wf

    def approve(
        self, workflow_id: str, item: str, hash: str, *, by: str, note: str | None = None
    ) -> WorkflowState:
        from ..plans import approve

        engine, _ = self._plan_engine(workflow_id)
        wf = approve(engine, workflow_id, item, hash, by=by, note=note)
        log.info("%s approved item %s of %s", by, item, workflow_id)
        self._kick(engine)
        return wf

    def reject(self, workflow_id: str, item: str, *, by: str, reason: str = "") -> WorkflowState:
        from ..plans import reject

        engine, _ = self._plan_engine(workflow_id)
        wf = reject(engine, workflow_id, item, by=by, reason=reason)
        log.info("%s rejected item %s of %s", by, item, workflow_id)
        self._kick(engine)
        return wf

    def _plan_engine(self, workflow_id: str) -> tuple[Engine, WorkflowState]:
        engine, current = self._engine_of(workflow_id)
        if not engine.has_ended(current.status.value):
            self._require_handlers(engine, current)
        return engine, current

    def close(self, timeout: float = 10.0) -> None:
        """Stop the job threads, then close the store. A job still running after `timeout`
        keeps the store open: closing a SQLite connection under a running query crashes."""
        for runner in self._runners:
            runner.stop()
        if all(runner.join(timeout) for runner in self._runners):
            self.store.close()
        else:
            log.warning("a job was still running at shutdown; the store is left open")


class _Runner:
    """Runs an in-process queue's jobs on a thread of its own, so a request never waits for a
    saga: each command kicks it. It drains in short slices, so a job due in three days (a
    wait's timeout) does not hold back the jobs enqueued meanwhile."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="statesaga-web-jobs", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait(_SLICE)
            self._wake.clear()
            try:
                self.engine.queue.drain(lambda: self._stopping, _SLICE)
            except Exception:  # one broken job must not stop the server's job thread
                log.exception("an in-process job failed")
