"""What the tests that start real processes share (no selenium here, unlike browser_helpers):
a free port, and stopping processes as an operator would (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Sequence
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop(procs: Sequence[subprocess.Popen[Any]], wait: float = 20.0) -> None:
    """SIGTERM every process still running, then wait for each (SIGKILL after `wait`)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
