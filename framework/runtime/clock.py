"""Time that one host's clock cannot skew: the store's clock.

Leases are judged by comparing times written by one process (a worker's heartbeat) with times
read by another (the recovery loop's cutoff), and delayed work is due by a time written by one
process and compared by another (a retry's backoff, a sleep). If each process used its own
clock, a host whose clock runs two minutes ahead would find every healthy heartbeat two minutes
old and steal the attempts. So every process of a store uses the store's clock: a store with a
clock of its own (a server, such as Redis's `TIME`) says its time through `Store.server_time()`;
a store without one (an SQLite file: every process on its one host) leaves the host's clock.

Asking the server at every `now()` would add a round trip to every transition, so the server's
time is read once in a while and carried forward on this process's monotonic clock (which no
clock step, NTP slew or skew between hosts moves). Between two reads the error is half the
round trip of the read plus the drift of the local oscillator (parts per million); both are far
below any heartbeat timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ..ports import Clock, Store
from .outage import is_outage

log = logging.getLogger("statesaga.clock")

#: Seconds between two reads of the store's clock.
REFRESH = 60.0
#: Seconds before a failed read is tried again (the last reading still holds meanwhile).
RETRY = 5.0


def server_time(store: Store) -> datetime | None:
    """`store.server_time()`: None for a store with no clock of its own (the port's
    default)."""
    return store.server_time()


class StoreClock:
    """A Clock that follows a store's clock (see the module docstring)."""

    def __init__(
        self,
        read: Callable[[], datetime | None],
        *,
        refresh: float = REFRESH,
        retry: float = RETRY,
    ) -> None:
        self._read = read
        self._refresh = refresh
        self._retry = retry
        #: (the store's time, this process's monotonic time at that instant), once read.
        self._base: tuple[datetime, float] | None = None
        #: False once the store said it has no clock of its own: the host's is used.
        self._own = True
        self._next = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        if not self._own:
            return datetime.now(UTC)
        mono = time.monotonic()
        if mono >= self._next:
            self._sample()
        base = self._base
        if base is None:
            return datetime.now(UTC)  # the store has no clock (set by _sample)
        at, then = base
        return at + timedelta(seconds=time.monotonic() - then)

    def _sample(self) -> None:
        # One reader at a time; the others go on with the last reading. Before the first
        # reading there is none to go on with: they wait for it.
        if not self._lock.acquire(blocking=self._base is None):
            return
        try:
            if not self._own or (self._base is not None and time.monotonic() < self._next):
                return
            before = time.monotonic()
            try:
                got = self._read()
            except Exception as exc:
                if not is_outage(exc):
                    # Refused (a server with TIME renamed away): the host's clock it is.
                    log.warning("the store's clock cannot be read (%s); using this host's", exc)
                    self._own = False
                    return
                if self._base is None:
                    raise  # no time to give: the caller's store call would fail the same way
                log.debug("the store's clock could not be read (%s); the last reading holds", exc)
                self._next = time.monotonic() + self._retry
                return
            after = time.monotonic()
            if got is None:
                self._own = False
                return
            if got.tzinfo is None:
                got = got.replace(tzinfo=UTC)
            # The server read its clock somewhere in the round trip: take the middle.
            self._base = (got, (before + after) / 2)
            self._next = after + self._refresh
        finally:
            self._lock.release()


def store_clock(store: Store) -> Clock:
    """The clock every process of `store` shares: the store's own, else the host's."""
    return StoreClock(lambda: server_time(store))


__all__ = ["REFRESH", "StoreClock", "server_time", "store_clock"]
