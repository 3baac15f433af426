"""What a handler receives: the step's resolved params and everything it may need to know."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepContext:
    """The argument of every action and compensation handler.

    `idempotency_key` names the operation (workflow id and step; `:undo` for a compensation)
    and is the same for every attempt, so a handler that passes it to an external API makes a
    re-run harmless even when a worker died after the call but before its outcome was saved.
    `attempt_key` adds the attempt number, for calls that must differ per attempt.
    """

    workflow_id: str
    step: str
    attempt: int
    params: Mapping[str, Any]
    input: Mapping[str, Any]
    results: Mapping[str, Any]
    idempotency_key: str
    attempt_key: str = ""
    session_id: str | None = None
    compensating: bool = False
    #: For a compensation: the result of the action being undone.
    result: Any = None
    #: With an extended step lifecycle: the sub-state an earlier attempt reached, so a retried
    #: or resumed handler can pick up where it was (None on a first attempt).
    resumed_from: str | None = None
    _beat: Callable[[], None] | None = field(default=None, repr=False)
    _progress: Callable[..., Any] | None = field(default=None, repr=False)

    def heartbeat(self) -> None:
        """Record that this long-running handler is alive (recovery looks for stale ones)."""
        if self._beat is not None:
            self._beat()

    def progress(self, trigger: str, detail: str | None = None) -> None:
        """Fire a sub-state trigger of this step's lifecycle (e.g. `tool_called`), so the
        stored document, the history and the live diagram show where the handler is."""
        if self._progress is None:
            raise RuntimeError("progress triggers apply to a running step's action only")
        self._progress(trigger, detail)
