"""A redis-server of one test alone, on its own port and directory, so a test can restart it,
kill it, or start it with the persistence settings it needs."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

START_WAIT = 30.0


class RedisServer:
    def __init__(self, workdir: Path, *args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not on PATH: install it (apt-get install -y redis-server) "
                "or set STATESAGA_TEST_REDIS_URL=redis://host:port/db"
            )
        self.binary = binary
        self.workdir = workdir
        self.args = list(args)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_WAIT
        while not self.answers():
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self, *, kill: bool = True) -> None:
        """SIGKILL (a crash: only what the AOF holds survives) or SIGTERM (a clean shutdown)."""
        if self.proc is not None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait()
            self.proc = None

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
                # A server loading its AOF answers -LOADING: up, not ready. One that wants a
                # password answers -NOAUTH: up and ready.
                return reply.startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False
