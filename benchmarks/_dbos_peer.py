"""The DBOS side of row 2, run in its own process (DBOS is a process-wide singleton).

    python -m benchmarks._dbos_peer --db PATH [--wal]

Launches DBOS on its SQLite system database, then reads requests from stdin, one per line:
`N` runs N workflows of five no-op `@DBOS.step`s one after another, `N K` runs them K at a
time (K threads), each printing one JSON line {"workflows", "seconds"}; `latency N` runs N
three-step workflows one at a time and prints {"latencies": [seconds, ...]}. The caller
interleaves these blocks with its own, so that both sides run under the same disk and CPU
conditions (fsync latency on a shared disk drifts by several times within minutes). At end of
input it prints {"journal_mode", "synchronous"}. DBOS checkpoints every step's output in its
system database before the workflow goes on, with SQLite's default synchronous=FULL, so each
step's outcome is on disk before the next starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument(
        "--wal", action="store_true", help="put the database in WAL mode first (as ours is)"
    )
    args = parser.parse_args()

    if args.wal:
        # journal_mode=WAL is stored in the file, so DBOS's own connections open it in WAL.
        conn = sqlite3.connect(args.db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()

    from dbos import DBOS, DBOSConfig

    config: DBOSConfig = {
        "name": "statesaga-bench",
        "system_database_url": f"sqlite:///{args.db}",
        "log_level": "WARNING",
    }
    DBOS(config=config)

    @DBOS.step()
    def noop(i: int) -> None:
        return None

    @DBOS.workflow()
    def five_steps() -> None:
        for i in range(5):
            noop(i)

    @DBOS.workflow()
    def three_steps() -> None:
        for i in range(3):
            noop(i)

    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    five_steps()  # warm-up: first-call costs (imports, prepared statements) are not per-step
    print(json.dumps({"ready": True}), flush=True)
    pools: dict[int, ThreadPoolExecutor] = {}
    for line in sys.stdin:
        words = line.split()
        if words[0] == "latency":
            # start -> completed of one 3-step workflow at a time, in seconds
            samples = []
            for _ in range(int(words[1])):
                t0 = time.perf_counter()
                three_steps()
                samples.append(time.perf_counter() - t0)
            print(json.dumps({"latencies": samples}), flush=True)
            continue
        n = int(words[0])
        in_flight = int(words[1]) if len(words) > 1 else 1
        t0 = time.perf_counter()
        if in_flight == 1:
            for _ in range(n):
                five_steps()
        else:
            # `in_flight` workflows at once, each on its own thread, as DBOS runs them
            pool = pools.setdefault(in_flight, ThreadPoolExecutor(in_flight))
            list(pool.map(lambda _: five_steps(), range(n)))
        print(json.dumps({"workflows": n, "seconds": time.perf_counter() - t0}), flush=True)
    for pool in pools.values():
        pool.shutdown()
    DBOS.destroy()
    probe = sqlite3.connect(args.db)
    journal = probe.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = probe.execute("PRAGMA synchronous").fetchone()[0]
    probe.close()
    print(
        json.dumps(
            {
                "journal_mode": journal,
                "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
                    synchronous, synchronous
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
