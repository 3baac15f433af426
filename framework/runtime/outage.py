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

from ..errors import StoreFullError

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


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says a service is unreachable (worth waiting for), not a bug or bad input.

    The causes count too: an adapter reports a lost connection as its own one-line error
    (`AdapterError: cannot reach ...`) raised while handling the transport's.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if _unreachable(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _unreachable(exc: BaseException) -> bool:
    # A full disk passes like an outage: nothing was written, and writes resume with space.
    if isinstance(exc, ConnectionError | TimeoutError | StoreFullError):
        return True
    try:
        import redis
    except ImportError:
        return False
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)


__all__ = ["Outage", "is_outage"]
