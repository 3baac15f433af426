"""Two processes share one SQLite file: no lost update and no "database is locked" escapes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.errors import ConflictError
from statesaga.models import WorkflowState
from statesaga.ports import Store

ROUNDS = 200

# The child waits for "go" on stdin so both loops start together, then reports its timings.
CHILD = """
import json, sys, time
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.errors import ConflictError

store = SQLiteStore.from_url(sys.argv[1])
workflow_id, rounds = sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
started, conflicts = time.time(), 0
for _ in range(rounds):
    while True:
        wf = store.get(workflow_id)
        wf.input["counter"] += 1
        wf.input["by_child"] = wf.input.get("by_child", 0) + 1
        try:
            store.save(wf)
            break
        except ConflictError:
            conflicts += 1
store.close()
print(json.dumps({"started": started, "ended": time.time(), "conflicts": conflicts}), flush=True)
"""


def _increment(store: Store, workflow_id: str, rounds: int) -> int:
    conflicts = 0
    for _ in range(rounds):
        while True:
            wf = store.get(workflow_id)
            wf.input["counter"] += 1
            try:
                store.save(wf)
                break
            except ConflictError:
                conflicts += 1
    return conflicts


@pytest.mark.slow
def test_two_processes_increment_one_counter(sqlite_url: str) -> None:
    store = SQLiteStore.from_url(sqlite_url)
    wf = WorkflowState(name="counter", input={"counter": 0})
    store.create(wf)

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, sqlite_url, wf.id, str(ROUNDS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.stdin.write("go\n")
    child.stdin.flush()
    started = time.time()
    _increment(store, wf.id, ROUNDS)
    ended = time.time()
    out, err = child.communicate(timeout=120)

    assert "database is locked" not in err
    assert child.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    # Both loops must have run at the same time, or this test proves nothing about sharing.
    assert report["started"] < ended and started < report["ended"]
    final = store.get(wf.id)
    assert final.input["counter"] == 2 * ROUNDS
    assert final.input["by_child"] == ROUNDS
    assert final.revision == 2 * ROUNDS + 1
    store.close()
