"""What tracing and metrics cost per step: the engine with its telemetry hooks against the same
engine with them cut out (a null observer: the engine as it was before
statesaga.observability.telemetry).

    python -m benchmarks.telemetry_cost [--sagas 200] [--rounds 15] [--store memory|sqlite]

Two runs, each an A/B in one process (the SDK's global providers can be set once per process):

- tracing off: no SDK provider installed (the library default). The ratio hooks/null should
  be 1.00 within noise: every hook returns after a type check.
- tracing on: the real SDK with an in-memory span exporter (SimpleSpanProcessor) and an
  in-memory metric reader; the difference per step is what a traced step costs.

Sagas of five no-op steps on an in-process queue; the memory store shows the overhead at its
largest relative to the rest (a SQLite file store adds an fsync per save).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.memory import MemoryStore
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.definitions.load import WorkflowDefinition, load_definition
from statesaga.engine import Engine
from statesaga.models import WorkflowState
from statesaga.ports import Job
from statesaga.registry import Registry

STEPS = 5


class NullTelemetry:
    """The engine's observer, doing nothing: the baseline."""

    def begin(self, wf: WorkflowState) -> None:
        return None

    def stamp(self, job: Job, delay: float, wf: WorkflowState) -> Job:
        return job

    def job(self, job: Job) -> AbstractContextManager[None]:
        return nullcontext()


def _definition() -> WorkflowDefinition:
    steps = [{"name": f"s{i}", "action": "noop"} for i in range(STEPS)]
    return load_definition({"workflow": "bench_telemetry", "steps": steps})


def _engine(store: str, tmp: Path, null: bool) -> Engine:
    reg = Registry()
    reg.register_handler("noop", lambda ctx: {"ok": ctx.attempt})
    backend = MemoryStore() if store == "memory" else SQLiteStore(tmp / f"{null}.db")
    engine = Engine(backend, InlineQueue(), reg, heartbeat_interval=0)
    if null:
        engine.runtime.telemetry = NullTelemetry()  # type: ignore[assignment]
        engine.listeners.clear()
    return engine


def measure(store: str, sagas: int, rounds: int, reset: Any = None) -> dict[str, float]:
    """Median seconds per saga, hooks against null, alternating rounds to cancel drift."""
    definition = _definition()
    with tempfile.TemporaryDirectory() as tmp:
        engines = {name: _engine(store, Path(tmp), name == "null") for name in ("hooks", "null")}
        for engine in engines.values():  # warm up (imports, caches, the SQLite schema)
            engine.run(definition, {})
        samples: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(rounds):
            for name, engine in engines.items():
                t = time.perf_counter()
                for _ in range(sagas):
                    engine.run(definition, {})
                samples[name].append((time.perf_counter() - t) / sagas)
                if reset is not None:
                    reset()
    hooks, null = (statistics.median(samples[n]) for n in ("hooks", "null"))
    return {"hooks": hooks, "null": null}


def hooks_alone(rounds: int = 20_000) -> float:
    """Seconds the telemetry hooks of one step take by themselves (a job run around nothing,
    the four transitions a step commits, one job stamped): what tracing off costs a step."""
    engine = _engine("memory", Path("."), null=False)
    wf = engine.run(_definition(), {})
    entries = [e for e in wf.history if e.step == "s0"][:3] + [wf.history[-1]]
    job = engine.step_job(wf, wf.step("s1"))
    telemetry = engine.telemetry
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(rounds):
            with telemetry.job(job):
                for entry in entries:
                    telemetry.observe(wf, entry)
            telemetry.stamp(job, 0.0, wf)
        best = min(best, (time.perf_counter() - t) / rounds)
    return best


def _traced(args: argparse.Namespace) -> dict[str, float]:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    result = measure(args.store, args.sagas, args.rounds, reset=exporter.clear)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.traced:
        print(json.dumps(_traced(args)))
        return
    off = measure(args.store, args.sagas, args.rounds)
    alone = hooks_alone()
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.telemetry_cost", "--traced", *(argv or sys.argv[1:])],
        check=True,
        capture_output=True,
        text=True,
    )
    on = json.loads(child.stdout)
    us = 1e6 / STEPS
    print(f"store {args.store}, {args.sagas} sagas of {STEPS} steps x {args.rounds} rounds")
    print(
        f"tracing off: {off['hooks'] * us:7.1f} us/step with the hooks, "
        f"{off['null'] * us:7.1f} without: ratio {off['hooks'] / off['null']:.3f}"
    )
    print(
        f"tracing off, the hooks alone: {alone * 1e6:.2f} us per step "
        f"({alone * 1e6 / (off['null'] * us):.2%} of a step)"
    )
    print(
        f"tracing on:  {on['hooks'] * us:7.1f} us/step with the hooks, "
        f"{on['null'] * us:7.1f} without: ratio {on['hooks'] / on['null']:.3f}, "
        f"+{(on['hooks'] - on['null']) * us:.1f} us per step (spans and metrics)"
    )


if __name__ == "__main__":
    main()
