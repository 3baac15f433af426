"""Riding out an outage: how a long-running process (a worker, the recovery loop, the
scheduler thread) waits for Redis or the store to come back without exiting and without
filling its log.

An outage is logged twice: a warning when it starts (with the error) and an info line when
the service answers again (with how long it was gone). The retries in between back off
exponentially with jitter, so many processes coming back together do not hammer the server
in step.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import BackendPaused, BackendUnreachable, StoreFullError

T = TypeVar("T")

# The name it logged under before the tree's split: operators filter and alert on it.
log = logging.getLogger("statesaga.outage")


class Outage:
    """The state of one process's link to a service: up, or down since a moment."""

    def __init__(
        self,
        what: str,
        *,
        initial: float = 0.5,
        factor: float = 2.0,
        ceiling: float = 15.0,
        logger: logging.Logger = log,
    ) -> None:
        self.what = what
        self.initial = initial
        self.factor = factor
        self.ceiling = ceiling
        self.log = logger
        self.since: float | None = None
        self.failures = 0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        """Record a failed attempt; returns the seconds to wait before the next one."""
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning(
                "%s: service unreachable (%s: %s); retrying with backoff",
                self.what,
                type(exc).__name__,
                exc,
            )
        self.failures += 1
        pause = min(self.ceiling, self.initial * self.factor ** (self.failures - 1))
        return pause * random.uniform(0.5, 1.0)

    def ok(self) -> None:
        """Record a successful attempt (logs once when it ends an outage)."""
        if self.since is None:
            return
        self.log.info(
            "%s: service back after %.1f s (%d failed attempts)",
            self.what,
            time.monotonic() - self.since,
            self.failures,
        )
        self.since = None
        self.failures = 0


def is_outage(exc: BaseException, *, full_disk: bool = True) -> bool:
    """Whether `exc` says a service is unreachable (worth waiting for), not a bug or bad input.
    A store whose disk is full counts too (nothing was written; writes resume with space),
    unless `full_disk` is False: a pause of a server passes in seconds, a full disk does not.

    The causes count too: an adapter reports a lost connection as its own one-line error
    (`AdapterError: cannot reach ...`) raised while handling the transport's.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if _unreachable(current) or (full_disk and isinstance(current, StoreFullError)):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


#: Seconds of outage a call in flight waits out (`ride_out`) before it gives up: a pause of
#: the server (a fork for a snapshot, `DEBUG SLEEP`, `CLIENT PAUSE`, a failover) is seconds.
PATIENCE = 30.0


def ride_out(call: Callable[[], T], what: str, patience: float = PATIENCE) -> T:
    """`call()`, called again with backoff while its service does not answer in time (a
    pause: `is_pause`), for up to `patience` seconds; then the last error is raised. A refused
    connection (a server down) raises at once: a command says so rather than hang. The pause
    is logged as `Outage` logs it: a warning when it starts, a line when it ends."""
    outage = Outage(what)
    deadline: float | None = None
    while True:
        try:
            got = call()
        except Exception as exc:
            if not is_pause(exc):
                raise
            now = time.monotonic()
            deadline = now + patience if deadline is None else deadline
            if now >= deadline:
                raise
            time.sleep(min(outage.failed(exc), max(deadline - now, 0.0)))
            continue
        outage.ok()
        return got


def is_pause(exc: BaseException) -> bool:
    """Whether `exc` (or a cause) is a service that did not answer in time: a timeout, which
    a paused server gives (`DEBUG SLEEP`, `CLIENT PAUSE`, a fork for a snapshot), unlike one
    that is down and refuses the connection."""
    kinds = (TimeoutError, BackendPaused)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _unreachable(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError | TimeoutError | BackendUnreachable)


__all__ = ["PATIENCE", "Outage", "is_outage", "is_pause", "ride_out"]
