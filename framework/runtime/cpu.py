"""Running a process on one CPU of its own.

One Python process runs Python on one core at a time (the GIL). When its threads run on two
cores, every hand-over of the GIL (each SQLite call, each lock a thread waits on) wakes a
thread on the other core and moves the interpreter's data between the cores' caches: on the
2-core machine of issue 33, 8 sagas in flight on threads ran at 1,853-2,511 steps/s on the
memory store unpinned and 3,372 pinned, against 3,843 for one at a time. So a process that
runs sagas on threads goes faster on one core, and a machine's other cores are for other
processes (`statesaga worker --processes N --cpu each`, or one web server worker per core).
"""

from __future__ import annotations

import os

from ..errors import StatesagaError


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, in order (all of them where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def pin_to_cpu(cpu: int) -> None:
    """Run this process (every thread of it, and the children it starts) on `cpu` alone."""
    usable = usable_cpus()
    if cpu not in usable:
        raise StatesagaError(f"cpu {cpu} is not one this process may use (usable: {usable})")
    if not hasattr(os, "sched_setaffinity"):
        raise StatesagaError("this platform cannot pin a process to a cpu (no sched_setaffinity)")
    os.sched_setaffinity(0, {cpu})


def cpu_for(index: int) -> int:
    """The CPU of the `index`-th (0-based) of several processes, one per usable CPU in turn."""
    usable = usable_cpus()
    return usable[index % len(usable)]


__all__ = ["cpu_for", "pin_to_cpu", "usable_cpus"]
