"""A statesaga plugin written outside the statesaga tree: a store, an effect and a guard.

It uses only statesaga's public modules (errors, models, ports, the transition context the
engine passes to effects and guards), as any third-party plugin must.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from statesaga.errors import AdapterError, ConflictError, NotFoundError
from statesaga.models import WorkflowState, WorkflowStatus, readable_documents
from statesaga.ports import Store

__all__ = ["JsonFileStore", "notify", "notify_wanted"]


class JsonFileStore(Store):
    """`jsonfile:///abs/dir` (or `jsonfile://rel/dir`): one JSON document per workflow.

    Every write holds an exclusive lock on `.lock` in the directory (threads of this process
    are serialised by a mutex first, since flock is per open file), reads the stored revision,
    and replaces the file atomically, so of two writers with the same revision one conflicts.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._mutex = threading.Lock()
        #: Documents the last listing skipped (the port's `unreadable`), id -> why.
        self.unreadable: dict[str, str] = {}

    @classmethod
    def from_url(cls, url: str) -> JsonFileStore:
        parts = urlsplit(url)
        path = parts.netloc + parts.path
        if parts.scheme != "jsonfile" or not path:
            raise AdapterError(f"not a jsonfile store URL: {url!r} (expected jsonfile:///dir)")
        return cls(path)

    # -- files ---------------------------------------------------------------------------
    def _file(self, workflow_id: str) -> Path:
        if not workflow_id or "/" in workflow_id or workflow_id.startswith("."):
            raise NotFoundError(workflow_id)
        return self.directory / f"{workflow_id}.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.initialize()
        with self._mutex, open(self.directory / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, workflow_id: str) -> WorkflowState:
        try:
            # Bytes: one that is not UTF-8 is a DefinitionError naming the file, as any damage.
            text = self._file(workflow_id).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(workflow_id) from None
        return WorkflowState.from_json(text, source=str(self._file(workflow_id)))

    def _write(self, wf: WorkflowState) -> None:
        target = self._file(wf.id)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(wf.to_json(), encoding="utf-8")
        os.replace(tmp, target)  # readers see the old or the new document, never half of one

    # -- the Store port ------------------------------------------------------------------
    def initialize(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def create(self, wf: WorkflowState) -> None:
        with self._locked():
            if self._file(wf.id).exists():
                raise ConflictError(wf.id, None, self._read(wf.id).revision)
            self._write(wf.model_copy(update={"revision": 1}))
            wf.revision = 1

    def get(self, workflow_id: str) -> WorkflowState:
        return self._read(workflow_id)

    def save(self, wf: WorkflowState) -> None:
        with self._locked():
            stored = self._read(wf.id)
            if stored.revision != wf.revision:
                raise ConflictError(wf.id, wf.revision, stored.revision)
            new = wf.model_copy(update={"revision": wf.revision + 1})
            # A heartbeat written since this copy was loaded must not be moved backwards.
            if stored.heartbeat_at and (
                new.heartbeat_at is None or stored.heartbeat_at > new.heartbeat_at
            ):
                new.heartbeat_at = stored.heartbeat_at
            self._write(new)
            wf.revision = new.revision

    def heartbeat(self, workflow_id: str, at: datetime) -> None:
        with self._locked():
            stored = self._read(workflow_id)
            stored.heartbeat_at = at
            self._write(stored)

    def list(
        self,
        *,
        session_id: str | None = None,
        status: WorkflowStatus | None = None,
        limit: int | None = None,
    ) -> builtins.list[WorkflowState]:
        if not self.directory.exists():
            return []
        # A document no model reads is left out (and noted), not a failure of every listing.
        paths = self.directory.glob("*.json")
        docs = readable_documents(
            ((p.stem, partial(self._read, p.stem)) for p in paths), self.unreadable
        )
        out = [
            d
            for d in docs
            if (session_id is None or d.session_id == session_id)
            and (status is None or d.status == status)
        ]
        out.sort(key=lambda d: (d.created_at, d.id))
        return out[:limit] if limit is not None else out

    def list_stale(
        self, before: datetime, statuses: Iterable[WorkflowStatus]
    ) -> builtins.list[WorkflowState]:
        wanted = set(statuses)
        return [
            d
            for d in self.list()
            if d.status in wanted and (d.heartbeat_at is None or d.heartbeat_at < before)
        ]

    def close(self) -> None:
        pass


# -- an effect and a guard ----------------------------------------------------------------
def notify(ctx: Any, file: str) -> Any:
    """`{notify: {file: PATH}}`: append one JSON line about this transition, after the save.

    An effect runs before the save and may change only the working copy, so the outward
    action is returned as a callable; the engine calls it once the save succeeded. The line
    records what the store held at that moment, which shows it ran after the commit.
    """
    wf, step, entry, store = ctx.workflow, ctx.step, ctx.entry, ctx.store
    workflow_id = wf.id
    step_name = step.name if step is not None else None
    trigger = entry.trigger if entry is not None else None
    dest = entry.dest if entry is not None else None

    def post() -> None:
        stored = store.get(workflow_id)
        stored_step = stored.step(step_name).status.value if step_name else None
        line = {
            "workflow_id": workflow_id,
            "step": step_name,
            "trigger": trigger,
            "dest": dest,
            "stored_step_status": stored_step,
            "stored_revision": stored.revision,
        }
        with open(file, "a", encoding="utf-8") as out:
            out.write(json.dumps(line, sort_keys=True) + "\n")

    return post


def notify_wanted(ctx: Any) -> bool:
    """True for a step the workflow's input lists under `notify`."""
    wanted = ctx.workflow.input.get("notify") or []
    return ctx.step is not None and ctx.step.name in wanted
