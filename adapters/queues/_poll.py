"""Waiting while workers elsewhere run the jobs: the `drain` of a queue whose jobs run in other
processes (RQ's, the SQLite queue's), which can only look again later."""

from __future__ import annotations

import time
from collections.abc import Callable

#: The longest pause between two looks: a drain notices the end within half a second.
MAX_PAUSE = 0.5


def wait_until(until: Callable[[], bool], timeout: float | None, first_pause: float) -> None:
    """Poll `until()` until it holds or `timeout` seconds pass, pausing `first_pause` at first
    and backing off by half each time, to at most MAX_PAUSE."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = first_pause
    while not until():
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            pause = min(pause, left)
        time.sleep(pause)
        pause = min(pause * 1.5, MAX_PAUSE)
