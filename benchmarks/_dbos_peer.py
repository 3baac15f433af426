"""The DBOS side of row 2, run in its own process (DBOS is a process-wide singleton).

    python -m benchmarks._dbos_peer --db PATH [--wal]

Launches DBOS on its SQLite system database, then reads block sizes from stdin, one per line:
for each it runs that many workflows of five no-op `@DBOS.step`s and prints one JSON line
{"workflows", "seconds"}. The caller interleaves these blocks with its own, so that both sides
run under the same disk and CPU conditions (fsync latency on a shared disk drifts by several
times within minutes). At end of input it prints {"journal_mode", "synchronous"}. DBOS checkpoints
every step's output in its system database before the workflow goes on, with SQLite's default
synchronous=FULL, so each step's outcome is on disk before the next starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time


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

    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    five_steps()  # warm-up: first-call costs (imports, prepared statements) are not per-step
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        n = int(line)
        t0 = time.perf_counter()
        for _ in range(n):
            five_steps()
        print(json.dumps({"workflows": n, "seconds": time.perf_counter() - t0}), flush=True)
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
