"""`memory://`: a store in this process's memory, for tests and one-off runs.

Documents are kept as JSON text, so what comes back is a copy that went through the same
serialisation as a real store (no shared mutable objects between callers).
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterable
from datetime import datetime
from functools import partial

from statesaga.errors import ConflictError, NotFoundError
from statesaga.models import WorkflowState, WorkflowStatus, readable_documents


class MemoryStore:
    def __init__(self) -> None:
        self._docs: dict[str, str] = {}
        self._lock = threading.Lock()
        #: Documents listings found unreadable (and left out), id -> why, until read again.
        self.unreadable: dict[str, str] = {}

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        return cls()

    def initialize(self) -> None:
        pass

    def create(self, wf: WorkflowState) -> None:
        with self._lock:
            if wf.id in self._docs:
                raise ConflictError(
                    wf.id, None, WorkflowState.from_json(self._docs[wf.id]).revision
                )
            wf.revision = 1
            self._docs[wf.id] = wf.to_json()

    def get(self, workflow_id: str) -> WorkflowState:
        with self._lock:
            text = self._docs.get(workflow_id)
        if text is None:
            raise NotFoundError(workflow_id)
        return WorkflowState.from_json(text)

    def save(self, wf: WorkflowState) -> None:
        with self._lock:
            text = self._docs.get(wf.id)
            if text is None:
                raise NotFoundError(wf.id)
            stored = WorkflowState.from_json(text)
            if stored.revision != wf.revision:
                raise ConflictError(wf.id, wf.revision, stored.revision)
            new = wf.model_copy(update={"revision": wf.revision + 1})
            if stored.heartbeat_at and (
                new.heartbeat_at is None or stored.heartbeat_at > new.heartbeat_at
            ):
                new.heartbeat_at = stored.heartbeat_at
            self._docs[wf.id] = new.to_json()
            wf.revision = new.revision

    def heartbeat(self, workflow_id: str, at: datetime) -> None:
        with self._lock:
            text = self._docs.get(workflow_id)
            if text is None:
                raise NotFoundError(workflow_id)
            wf = WorkflowState.from_json(text)
            wf.heartbeat_at = at
            self._docs[workflow_id] = wf.to_json()

    def list(
        self,
        *,
        session_id: str | None = None,
        status: WorkflowStatus | None = None,
        limit: int | None = None,
    ) -> list[WorkflowState]:
        with self._lock:
            texts = list(self._docs.items())
        docs = readable_documents(
            ((wid, partial(WorkflowState.from_json, t, f"stored {wid}")) for wid, t in texts),
            self.unreadable,
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
