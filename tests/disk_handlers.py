"""Handlers for the full-disk test (tests/test_full_disk.py), imported by name by real
`statesaga` processes (PYTHONPATH=tests): `fill_disk` fills the disk the store is on (the
file named by $DISK_TEST_FILL) and keeps running past a heartbeat, whose write then fails."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from statesaga.context import StepContext
from statesaga.registry import handler


def fill(path: Path) -> None:
    """Write zeros to `path` until the disk is full."""
    try:
        with path.open("ab", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass


@handler()
def fill_disk(ctx: StepContext) -> dict[str, Any]:
    target = os.environ.get("DISK_TEST_FILL")
    if target and ctx.attempt == 1:
        fill(Path(target))
        time.sleep(float(os.environ.get("DISK_TEST_WAIT", "0")))
    return {"filled": bool(target)}
