"""Real processes for the plans' chaos tests: a private redis-server (the RQ queue), a SQLite
store, three `statesaga worker` processes of the example tools (one SIGKILLed every 1-2 s and
replaced) and `statesaga recover --every 1`; and the ledger the example tools write."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ops_redis import RedisServer
from statesaga.app import EngineOptions
from statesaga.ports import Store

TOOLS = "statesaga.examples.agent_tools"

#: The retry policy the chaos runs give their plans: a worker is SIGKILLed every 1-2 s and each
#: lost attempt counts as one, so the example's default of 3 attempts lets a plan unwind before
#: its approval by bad luck alone (seen once in a loaded run: `search` lost three times). The
#: runs are about revisions and approvals racing the kills, not about running out of retries.
CHAOS_RETRY = {"max_attempts": 10, "initial_interval": 0.2, "backoff_rate": 1.5, "max_interval": 2}


def chaos_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """`plan` with the chaos runs' retry policy for every tool call."""
    return {**plan, "retry": CHAOS_RETRY}


class PlanCluster:
    def __init__(self, tmp: Path, seed: int = 27) -> None:
        self.tmp = tmp
        self.redis = RedisServer(tmp, "--save", "", "--appendonly", "yes")
        self.redis.start()
        self.env = {
            **os.environ,
            "STATESAGA_QUEUE": f"rq://127.0.0.1:{self.redis.port}/0?queue=plans",
            "STATESAGA_STORE": f"sqlite:///{tmp / 'plans.db'}",
            "STATESAGA_TOOLS_LEDGER": str(tmp / "l.jsonl"),
            "STATESAGA_TOOLS_DELAY": "0.3",
            "STATESAGA_HANDLERS": TOOLS,
        }
        self.log = (tmp / "workers.log").open("ab")
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.kills = 0
        self.workers = [self._worker() for _ in range(3)]
        self.recovery = self.spawn("recover", "--every", "1", "--timeout", "3")
        self.store: Store = EngineOptions(self.env["STATESAGA_STORE"], "inline://").build().store
        self.chaos = threading.Thread(target=self._killer, daemon=True)
        self.chaos.start()

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "statesaga.cli", *args],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
            cwd=self.tmp,
        )

    def _worker(self) -> subprocess.Popen[bytes]:
        return self.spawn(
            "worker", "--with-scheduler", "--heartbeat", "0.5", "--log-level", "WARNING"
        )

    def _killer(self) -> None:
        while not self.stop.wait(self.rng.uniform(1.0, 2.0)):
            with self.lock:
                victim = self.rng.choice(self.workers)
                victim.kill()
                victim.wait()
                self.workers.remove(victim)
                self.workers.append(self._worker())
                self.kills += 1

    def wait_for(self, wf_id: str, cond: Any, what: str, within: float = 120) -> Any:
        end = time.monotonic() + within
        while time.monotonic() < end:
            wf = self.store.get(wf_id)
            if cond(wf):
                return wf
            time.sleep(0.1)
        pytest.fail(f"{what}: {self.store.get(wf_id).model_dump_json(indent=1)[:3000]}")

    def ledger(self) -> list[dict[str, Any]]:
        path = self.tmp / "l.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def close(self) -> None:
        self.stop.set()
        self.chaos.join(10)
        with self.lock:
            procs = [*self.workers, self.recovery]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.log.close()
        self.redis.stop()


def one_key_per_item(entries: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Each item's idempotency keys (a call repeated after a worker died keeps its key)."""
    keys: dict[str, set[str]] = {}
    for e in entries:
        keys.setdefault(e["step"], set()).add(e["key"])
    return keys
