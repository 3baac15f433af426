"""Cost of one heartbeat: `store.heartbeat()` (SQLite file, Redis store) against a plain Redis
key with a TTL (`SET key 1 EX ttl`), the alternative the distributed-execution issue weighs.

    python benchmarks/heartbeat_cost.py [--rounds 1000] [--redis redis://127.0.0.1:6379/0]

Prints the p50/p95 latency of each and the ratio of each store's beat to the TTL key. A beat
is sent every `heartbeat_interval` (5 s by default) per running step, from a thread beside the
handler; the figure that matters is what recovery can do with it: only a beat in the store is
found by `store.list_stale`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import redis
from statesaga.adapters.stores.redis import RedisStore
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.models import WorkflowState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rq_throughput import redis_server  # noqa: E402


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.95)] * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--redis", default=None)
    args = parser.parse_args(argv)
    with redis_server(args.redis) as url, tempfile.TemporaryDirectory(dir=".") as tmp:
        sqlite = SQLiteStore.from_url(f"sqlite:///{Path(tmp) / 'hb.db'}")
        rstore = RedisStore.from_url(f"{url}?prefix=hb-bench:")
        client = redis.Redis.from_url(url)
        wf = WorkflowState(name="hb")
        sqlite.create(wf)
        rstore.create(wf.model_copy())
        results = {
            "sqlite store.heartbeat (synchronous=FULL)": timed(
                lambda: sqlite.heartbeat(wf.id, datetime.now(UTC)), args.rounds
            ),
            "redis store.heartbeat (Lua, 1 round trip)": timed(
                lambda: rstore.heartbeat(wf.id, datetime.now(UTC)), args.rounds
            ),
            "redis SET key EX 15 (TTL key)": timed(
                lambda: client.set(f"hb-bench:ttl:{wf.id}", 1, ex=15), args.rounds
            ),
        }
        ttl = results["redis SET key EX 15 (TTL key)"][0]
        for name, (p50, p95) in results.items():
            print(f"{name:44s} p50 {p50:8.1f} us  p95 {p95:8.1f} us  x{p50 / ttl:.2f} of TTL key")
        sqlite.close()
        rstore.close()
        client.close()


if __name__ == "__main__":
    main()
