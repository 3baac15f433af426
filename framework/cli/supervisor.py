"""`statesaga worker --processes N [--recover-every S]`: keep N worker processes (and the
recovery loop) running on one host.

Each child is a fresh `statesaga worker` (or `statesaga recover --every S`) process started
with `subprocess`, not forked from this one, so it inherits no open connection. A child killed
by a signal from outside (the OOM killer, an operator's kill -9) is started again at once: the
pool stays full. A child that exits by itself soon after starting (a bad setting, an import
error) waits before its next start, a pause of its own slot that doubles while it keeps doing
so and resets once it has lived a while, so a crash loop does not spin; yet never are all
worker slots paused at once: the last one keeps trying every second. Each restart is one log
line saying why. SIGTERM or Ctrl+C is passed on to every child (their warm shutdown: the step
in flight finishes and is saved), and the supervisor waits for them; a second signal kills
them.

On Linux each child asks the kernel for SIGTERM when the supervisor dies (`prctl
PR_SET_PDEATHSIG`), so a supervisor killed with SIGKILL leaves no worker behind. URLs reach
the children through the environment (`STATESAGA_STORE`, `STATESAGA_QUEUE`), not their
command lines, where `ps` would show a password.

For more than one host, or to restart the supervisor itself, run it under systemd or
compose: see examples/deploy/.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# The name it logged under before the tree's split: operators filter and alert on it.
log = logging.getLogger("statesaga.supervisor")

#: A child that lived at least this long was healthy: its next restart is immediate.
HEALTHY_AFTER = 10.0
#: The longest pause between restarts of a child that keeps exiting by itself.
MAX_PAUSE = 30.0
#: The pause of the last worker slot when every other one is paused.
LAST_SLOT_PAUSE = 1.0
#: Signals a process raises against itself when it crashes: a death by one of them is the
#: child's own doing, like an exit; any other signal came from outside.
_CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}
)
_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """One supervised process: what to run, and its current incarnation."""

    label: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0
    start_at: float = 0.0
    restarts: int = 0
    #: A worker slot (the pool to keep full), not the recovery loop.
    worker: bool = True


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGTERM the child when this process dies (Linux);
    libc is loaded here, before the fork, so the child does no import."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Supervisor:
    def __init__(
        self,
        children: Sequence[Child],
        env: Mapping[str, str],
        *,
        poll: float = 0.2,
        stop_timeout: float = 60.0,
    ) -> None:
        self.children = list(children)
        self.env = dict(env)
        self.poll = poll
        self.stop_timeout = stop_timeout
        self._signals = 0

    def run(self) -> int:
        """Supervise until SIGTERM / SIGINT; returns the exit code (0)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        preexec = _die_with_parent()
        try:
            while not self._signals:
                now = time.monotonic()
                for child in self.children:
                    self._tend(child, now, preexec)
                time.sleep(self.poll)
            self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    # -- internals -------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        if self._signals > 1:  # a second signal: no more waiting
            for child in self.children:
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.kill()

    def _tend(self, child: Child, now: float, preexec: Callable[[], None] | None) -> None:
        if child.proc is not None:
            code = child.proc.poll()
            if code is None:
                return
            child.proc = None
            child.restarts += 1
            pause, why = self._pause_after(child, code, now - child.started, now)
            child.start_at = now + pause
            log.warning("%s %s; restarting it %s", child.label, why, _when(pause))
        if now < child.start_at:
            return
        # A process group of its own: Ctrl+C in a terminal reaches the supervisor alone, which
        # passes on one SIGTERM (a second signal would be RQ's cold shutdown, mid-step).
        child.proc = subprocess.Popen(child.argv, env=self.env, preexec_fn=preexec, process_group=0)
        child.started = now
        log.info("%s started (pid %d)", child.label, child.proc.pid)

    def _pause_after(self, child: Child, code: int, lived: float, now: float) -> tuple[float, str]:
        """How long `child`'s slot waits before its next start, and why, in words."""
        if code < 0 and -code not in _CRASH_SIGNALS:
            return 0.0, f"was killed by {_signal_name(-code)} after {lived:.1f} s"
        how = f"crashed with {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        if lived >= HEALTHY_AFTER:
            child.quick_deaths = 0
            return 0.0, f"{how} after {lived:.1f} s"
        child.quick_deaths += 1
        pause = min(MAX_PAUSE, 2.0 ** (child.quick_deaths - 1))
        why = f"{how} by itself after {lived:.1f} s ({child.quick_deaths} in a row so soon)"
        others = [c for c in self.children if c.worker and c is not child]
        if (
            child.worker
            and pause > LAST_SLOT_PAUSE
            and all(c.proc is None and c.start_at > now for c in others)
        ):
            return LAST_SLOT_PAUSE, f"{why}; every other worker slot is paused"
        return pause, why

    def _stop_all(self) -> None:
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _when(pause: float) -> str:
    return "now" if pause <= 0 else f"in {pause:.1f} s"


def worker_children(
    processes: int,
    worker_args: Sequence[str],
    name: str | None = None,
    recover_every: float | None = None,
    recover_args: Sequence[str] = (),
    cpus: Sequence[int] = (),
) -> list[Child]:
    """The children of `statesaga worker --processes N [--recover-every S] [--cpu each]`."""
    cli = [sys.executable, "-m", "statesaga.cli"]
    children = [
        Child(
            f"worker-{i}",
            [
                *cli,
                "worker",
                *worker_args,
                *(["--name", f"{name}-{i}"] if name else []),
                *([f"--cpu={cpus[i - 1]}"] if cpus else []),
            ],
        )
        for i in range(1, processes + 1)
    ]
    if recover_every is not None:
        children.append(
            Child(
                "recovery",
                [*cli, "recover", "--every", str(recover_every), *recover_args],
                worker=False,
            )
        )
    return children


__all__ = ["Child", "Supervisor", "worker_children"]
