"""The one exception tree of statesaga: every error a user can catch derives from StatesagaError."""

from __future__ import annotations

from abc import ABC
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from .security.redact import redact


class StatesagaError(Exception):
    """Raised for anything statesaga itself reports; the root of every framework error.

    Its message never holds a secret: passwords in URLs are masked (statesaga.security.redact)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a table or definition, located as precisely as the input allows."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file or "<dict>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        field = f" [{self.field}]" if self.field else ""
        return f"{where}:{field} {self.message}"


class DefinitionError(StatesagaError):
    """Raised when a chart, a workflow definition or a stored document is invalid.

    Carries every problem found (validation collects, it does not stop at the first).
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__(self._render())

    #: Problems a message lists; the rest are counted (a 3000-item plan with one tool
    #: misspelt is one mistake, not 3000 lines), and kept in `problems`.
    SHOWN = 20

    def _render(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problems:"] + [f"  {p}" for p in self.shown()[0]]
        more = self.shown()[1]
        if more:
            lines.append(f"  ... and {more} more")
        return "\n".join(lines)

    def shown(self) -> tuple[list[Problem], int]:
        """The problems to print, and how many are left out."""
        return self.problems[: self.SHOWN], max(len(self.problems) - self.SHOWN, 0)


class TransitionError(StatesagaError):
    """Raised when a trigger cannot fire from the current state; the state is left unchanged."""

    def __init__(
        self,
        chart: str,
        state: str,
        trigger: str,
        allowed: Sequence[str],
        reason: str | None = None,
    ) -> None:
        self.chart = chart
        self.state = state
        self.trigger = trigger
        self.allowed = sorted(allowed)
        self.reason = reason
        allowed_text = ", ".join(self.allowed) if self.allowed else "none (final state)"
        why = reason or "not allowed"
        super().__init__(
            f"{chart}: can't {trigger!r} when in {state} ({why}); allowed triggers: {allowed_text}"
        )


class ConflictError(StatesagaError):
    """Raised when a save loses the revision check (another writer saved first) or an id exists."""

    def __init__(self, workflow_id: str, expected: int | None, actual: int | None) -> None:
        self.workflow_id = workflow_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{workflow_id}: revision conflict (expected {expected}, store has {actual})"
        )


class NotFoundError(StatesagaError):
    """Raised when a workflow id is not in the store."""

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"workflow {workflow_id} not found")


class CompensationError(StatesagaError):
    """Raised when a compensation cannot succeed and the workflow is left FAILED."""


class AdapterError(StatesagaError):
    """Raised when an adapter cannot be found, loaded or reached (URL, plugin, connection)."""


class StoreFullError(AdapterError):
    """Raised when a store cannot write for now because its disk is full: nothing was written,
    reads still work, and long-running processes wait for space as for an outage
    (statesaga.runtime.outage)."""


class BackendError(ABC):  # noqa: B024 (a marker: adapters register their client's classes)
    """An error a store's or queue's client library raised about its backend (not a bug), as
    the adapter declared it: the core knows these only by these classes, never the library's.
    An adapter declares its client's classes at import (`declare`); those that mean the
    backend cannot serve now, cannot be reached, or did not answer in time go under the
    subclasses, which the outage handling and the HTTP status read."""

    _shown: ClassVar[dict[type[BaseException], tuple[str, bool]]] = {}

    @classmethod
    def declare(cls, kind: type[BaseException], backend: str, *, show_type: bool = False) -> None:
        """`kind` (and its subclasses) is this sort of backend error of `backend`, shown as
        one line `backend: [Type: ]message`."""
        cls.register(kind)
        BackendError._shown[kind] = (backend, show_type)

    @staticmethod
    def line(exc: BaseException) -> str:
        """The one line a command shows for it."""
        for kind in type(exc).__mro__:
            if kind in BackendError._shown:
                backend, show_type = BackendError._shown[kind]
                typed = f"{type(exc).__name__}: " if show_type else ""
                return f"{backend}: {typed}{exc}".strip()
        return f"{type(exc).__name__}: {exc}"


class BackendUnavailable(BackendError):  # noqa: B024
    """The backend cannot serve now (a locked database, a server out of reach): an HTTP
    request is answered 503."""


class BackendUnreachable(BackendUnavailable):  # noqa: B024
    """The backend's server cannot be reached: an outage, which long-running processes wait
    out (statesaga.runtime.outage)."""


class BackendPaused(BackendUnreachable):  # noqa: B024
    """The backend's server did not answer in time (a pause: a fork for a snapshot, `CLIENT
    PAUSE`, a failover), unlike one that refuses the connection."""


class RegistryError(StatesagaError):
    """Raised when a handler, effect or guard name is unknown or registered twice."""


class StateError(StatesagaError):
    """Raised when an operation does not apply to a workflow in its current state (e.g. cancel
    of a finished workflow)."""


class InputError(DefinitionError):
    """Raised when a workflow's input does not fit its definition (too large, not plain JSON,
    against its declared `input` schema, or missing a value a step's params reference);
    nothing is stored."""
