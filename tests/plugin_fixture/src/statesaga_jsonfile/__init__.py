"""A statesaga plugin written outside the statesaga tree: a store, an effect and a guard.

It uses only statesaga's public modules (errors, models, the public store base
statesaga.adapters.stores.document, the transition context the engine passes to effects and
guards), as any third-party plugin must.
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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from statesaga.adapters.stores.document import (
    MISSING,
    WRITTEN,
    DocumentStore,
    Outcome,
    Record,
    Stored,
    micros,
    taken,
)
from statesaga.errors import AdapterError, NotFoundError

__all__ = ["JsonFileStore", "notify", "notify_wanted"]


class JsonFileStore(DocumentStore):
    """`jsonfile:///abs/dir` (or `jsonfile://rel/dir`): one JSON document per workflow.

    The shared store algorithm (DocumentStore) does the Store port; this class writes only its
    six primitives over files. `<id>.json` is the document; `<id>.beat` its heartbeat field,
    in microseconds, so a heartbeat writes only that and never touches the document or its
    revision. Every write holds an exclusive lock on `.lock` in the directory (threads of this
    process are serialised by a mutex first, since flock is per open file), reads the stored
    revision, and replaces the file atomically, so of two writers with the same revision one
    conflicts.
    """

    def __init__(self, directory: str | Path) -> None:
        super().__init__()
        self.directory = Path(directory)
        self._mutex = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> JsonFileStore:
        parts = urlsplit(url)
        path = parts.netloc + parts.path
        if parts.scheme != "jsonfile" or not path:
            raise AdapterError(f"not a jsonfile store URL: {url!r} (expected jsonfile:///dir)")
        return cls(path)

    def initialize(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        pass

    # -- files ---------------------------------------------------------------------------
    def _file(self, workflow_id: str, suffix: str = ".json") -> Path:
        if not workflow_id or "/" in workflow_id or workflow_id.startswith("."):
            raise NotFoundError(workflow_id)
        return self.directory / f"{workflow_id}{suffix}"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.initialize()
        with self._mutex, open(self.directory / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _put(self, path: Path, text: str) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)  # readers see the old or the new file, never half of one

    def _beat_of(self, workflow_id: str) -> int | None:
        try:
            return int(self._file(workflow_id, ".beat").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def _stored(self, path: Path) -> Stored:
        # Bytes, unchecked: whatever is damaged is the base's to find and name (Stored).
        return Stored(path.stem, path.read_bytes(), heartbeat_us=self._beat_of(path.stem))

    def _all(self) -> builtins.list[tuple[Stored, dict[str, Any] | None]]:
        """Every stored document, oldest first, with its fields when its JSON can be read (a
        damaged one has none, so every selection keeps it for the base to name)."""
        if not self.directory.exists():
            return []
        found = []
        for path in self.directory.glob("*.json"):
            stored = self._stored(path)
            found.append((stored, _fields(stored.text)))
        found.sort(key=lambda sf: (str((sf[1] or {}).get("created_at", "")), sf[0].id))
        return found

    # -- the primitives of the store algorithm -------------------------------------------
    def _insert(self, record: Record) -> Outcome:
        with self._locked():
            target = self._file(record.id)
            if target.exists():
                fields = _fields(target.read_bytes()) or {}
                revision = fields.get("revision")
                return taken(revision if isinstance(revision, int) else None)
            self._put(target, record.text)
            if record.heartbeat_us is not None:
                self._put(self._file(record.id, ".beat"), str(record.heartbeat_us))
            return WRITTEN

    def _replace(self, record: Record, expected: int) -> Outcome:
        with self._locked():
            target = self._file(record.id)
            if not target.exists():
                return MISSING
            revision = (_fields(target.read_bytes()) or {}).get("revision")
            if revision != expected:
                return taken(revision if isinstance(revision, int) else None)
            self._put(target, record.text)
            # A heartbeat written since this copy was loaded must not be moved backwards.
            beats = [b for b in (self._beat_of(record.id), record.heartbeat_us) if b is not None]
            if beats:
                self._put(self._file(record.id, ".beat"), str(max(beats)))
            return WRITTEN

    def _read(self, workflow_id: str) -> Stored | None:
        path = self._file(workflow_id)
        return self._stored(path) if path.exists() else None

    def _beat(self, workflow_id: str, at_us: int) -> bool:
        with self._locked():
            if not self._file(workflow_id).exists():
                return False
            beat = max(at_us, self._beat_of(workflow_id) or at_us)
            self._put(self._file(workflow_id, ".beat"), str(beat))
            return True

    def _select(
        self, session_id: str | None, status: str | None, limit: int | None
    ) -> Iterable[Stored]:
        chosen = [
            stored
            for stored, fields in self._all()
            if fields is None
            or (
                (session_id is None or fields.get("session_id") == session_id)
                and (status is None or fields.get("status") == status)
            )
        ]
        return chosen[:limit] if limit is not None else chosen

    def _select_stale(self, statuses: builtins.list[str], before_us: int) -> Iterable[Stored]:
        chosen = []
        for stored, fields in self._all():
            if fields is None:
                chosen.append(stored)
                continue
            if fields.get("status") not in statuses:
                continue
            beats = [b for b in (stored.heartbeat_us, _micros(fields.get("heartbeat_at"))) if b]
            if not beats or max(beats) < before_us:
                chosen.append(stored)
        return chosen


def _fields(raw: str | bytes) -> dict[str, Any] | None:
    """A document's top-level fields, or None when it is no JSON object."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _micros(text: object) -> int | None:
    try:
        return micros(datetime.fromisoformat(str(text))) if text else None
    except ValueError:
        return None


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
