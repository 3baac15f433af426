"""Runs benchmarks/rq_throughput.py's measurements for row 3 and counts Redis commands (row 5).

    python -m benchmarks._rq_driver --workflows N [--store redis|sqlite]

Prints one JSON line. Throughput comes from rq_throughput's own `run_statesaga` / `run_raw`
(worker processes started before the clock starts). Redis commands per step are counted with
`INFO commandstats` deltas on a private server around an in-process burst: N workflows started,
then one SimpleWorker (the class `statesaga worker` uses) runs every job until the queue is
empty; the raw side does the same with N five-link chains. No polling client runs while
counting, so the counts are what the jobs themselves cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STEPS = 5


def _commands(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    out = {k: after[k] - before.get(k, 0) for k in after}
    # INFO itself is the measurement, not the workload.
    out.pop("info", None)
    return {k: v for k, v in sorted(out.items()) if v}


def count_commands(url: str, n: int, store_kind: str, tmp: Path) -> dict[str, Any]:
    import redis
    import rq_throughput as rt
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer
    from statesaga.adapters.queues.rq.queue import RQQueue
    from statesaga.adapters.queues.rq.worker import make_rq_worker
    from statesaga.definitions.load import load_definition
    from statesaga.engine import Engine
    from statesaga.models import WorkflowStatus
    from statesaga.plugins import open_store
    from statesaga.security.allowlist import AllowList
    from statesaga.worker import serving

    client = redis.Redis.from_url(url)
    name = f"count-{uuid.uuid4().hex[:8]}"
    store_url = (
        f"{url}?prefix={name}:" if store_kind == "redis" else f"sqlite:///{tmp / (name + '.db')}"
    )
    store = open_store(store_url)
    store.initialize()
    queue = RQQueue.from_url(url.replace("redis://", "rq://", 1) + f"?queue={name}")
    engine = Engine(store, queue, heartbeat_interval=0, allowed=AllowList.of(["rq_throughput"]))
    definition = load_definition(rt.SAGA)
    engine.load(definition)
    worker = make_rq_worker(queue.rq_queue)
    before = _commands(client)
    ids = [engine.start(definition, {}).id for _ in range(n)]
    with serving(engine.run_job):
        worker.work(burst=True, logging_level="WARNING")
    ours = _delta(before, _commands(client))
    done = sum(store.get(i).status is WorkflowStatus.COMPLETED for i in ids)
    if done != n:
        raise RuntimeError(f"only {done} of {n} workflows completed in the counting run")

    raw_queue = Queue(f"raw-{name}", connection=client, serializer=JSONSerializer)
    # A plain RQ worker: statesaga's own refuses any job function but statesaga's.
    raw_worker = SimpleWorker([raw_queue], connection=client, serializer=JSONSerializer)
    counter = f"raw-{name}:count"
    before = _commands(client)
    for _ in range(n):
        raw_queue.enqueue("rq_throughput.chain", counter, STEPS)
    raw_worker.work(burst=True, logging_level="WARNING")
    raw = _delta(before, _commands(client))
    # The chain's own counter (redis-py sends INCR as INCRBY) is the probe, not RQ's cost.
    raw["incrby"] = raw.get("incrby", 0) - n * STEPS
    queue.close()
    store.close()
    steps = n * STEPS
    return {
        "steps": steps,
        "statesaga_per_step": sum(ours.values()) / steps,
        "raw_per_step": sum(raw.values()) / steps,
        "statesaga_commands": ours,
        "raw_commands": raw,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflows", type=int, default=100)
    parser.add_argument("--store", choices=["redis", "sqlite"], default="redis")
    parser.add_argument("--redis", default=None)
    args = parser.parse_args()
    # rq_throughput is written as a script: its handler module is the top-level name
    # `rq_throughput`, importable by the workers it starts and by this process alike.
    sys.path.insert(0, str(HERE))
    import rq_throughput as rt

    n = args.workflows
    result: dict[str, Any] = {"workflows": n, "store": args.store, "workers": {}}
    with rt.redis_server(args.redis) as url, tempfile.TemporaryDirectory() as tmp:
        for w in (1, 2):
            s = rt.run_statesaga(url, w, n, args.store, Path(tmp))
            raw = rt.run_raw(url, w, n, "rq.worker.SimpleWorker")
            result["workers"][str(w)] = {"statesaga_steps_per_s": s, "raw_jobs_per_s": raw}
        result["commands"] = count_commands(url, max(10, n // 4), args.store, Path(tmp))
        samples = max(10, n // 2)
        result["latency"] = {
            "statesaga": rt.latency_statesaga(url, samples, Path(tmp)),
            "raw": rt.latency_raw(url, samples),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
