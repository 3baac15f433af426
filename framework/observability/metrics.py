"""Metrics of workflows and of the fleet that runs them (OpenTelemetry metrics API; the SDK
and its readers are the application's, or the CLI's: see statesaga.observability.otel).

- Counters and histograms of committed transitions (each counted once, in the process that
  saved it): steps started, completed, failed, retried, timed out; compensations by outcome;
  workflows ended by state; recoveries; step, workflow and queue-wait durations.
- Gauges read at each collection (a Prometheus scrape, an OTLP export) by `watch_fleet`, in a
  worker: the queue's depth, delayed, failed and quarantined jobs, the live workers busy and
  idle, the workflows stuck (no heartbeat: `recover` would take them) and those waiting for a
  signal. Every worker exports the same fleet gauges: aggregate them with max() by queue.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentelemetry import metrics

from ..models import HistoryEntry, SagaStep, StepStatus, WorkflowState
from ..vocabulary import WORKFLOW_ENDED
from ..vocabulary import StepTrigger as S
from ..vocabulary import WorkflowTrigger as W
from .tracing import COMPENSATION_OUTCOMES, Attempt

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation

    from .fleet import Fleet

log = logging.getLogger("statesaga.telemetry")
_metrics_api = sys.modules.get("opentelemetry.metrics._internal", metrics)
_UNKNOWN = object()


#: A workflow's end states (FAILED halts: the run ends).
_ENDED = frozenset(s.value for s in WORKFLOW_ENDED)


def metrics_on() -> bool:
    """Whether a meter provider is installed (the API's own is a no-op)."""
    provider = getattr(_metrics_api, "_METER_PROVIDER", _UNKNOWN)
    if provider is _UNKNOWN:
        provider = metrics.get_meter_provider()
    return provider is not None and type(provider).__name__ not in (
        "_ProxyMeterProvider",
        "NoOpMeterProvider",
    )


#: step to a long human wait.
_SECONDS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600]


class Instruments:
    def __init__(self, meter: metrics.Meter) -> None:
        c = meter.create_counter

        def h(name: str, unit: str, description: str) -> metrics.Histogram:
            return meter.create_histogram(
                name, unit, description, explicit_bucket_boundaries_advisory=_SECONDS
            )

        self.started = c("statesaga.steps.started", "{attempt}", "step attempts claimed")
        self.completed = c("statesaga.steps.completed", "{step}", "steps completed")
        self.failed = c("statesaga.steps.failed", "{step}", "steps failed for good")
        self.retried = c("statesaga.steps.retried", "{attempt}", "failed attempts retried")
        self.timed_out = c(
            "statesaga.steps.timed_out", "{attempt}", "attempts timed out (or lost with a worker)"
        )
        self.compensations = c(
            "statesaga.compensations", "{attempt}", "compensation attempts, by outcome"
        )
        self.workflows = c("statesaga.workflows.ended", "{workflow}", "workflows by end state")
        self.recoveries = c("statesaga.recoveries", "{workflow}", "workflows resumed")
        self.step_duration = h("statesaga.step.duration", "s", "one attempt, claim to outcome")
        self.workflow_duration = h("statesaga.workflow.duration", "s", "start to end state")
        self.queue_wait = h("statesaga.queue.wait", "s", "a job ready (enqueued) to claimed")


def count_step(
    wf: WorkflowState,
    step: SagaStep,
    entry: HistoryEntry,
    m: Instruments,
    mine: Attempt | None,
) -> None:
    """The step counters and histograms one committed step transition moves."""
    attrs = {"statesaga.workflow.name": wf.name, "statesaga.step": step.name}
    dest = entry.dest.split(".", 1)[0]
    if mine is not None and not mine.waited and mine.job.ready_at and not mine.eager:
        # The first transition this attempt saved is its claim (a compensation's claim
        # is no transition, its outcome stands for it): the wait ended when it was taken.
        mine.waited = True
        wait = max(mine.taken - mine.job.ready_at, 0.0)
        m.queue_wait.record(wait, {**attrs, "statesaga.job.kind": mine.job.kind})
    if entry.trigger == S.DISPATCH:
        m.started.add(1, attrs)
        return
    if entry.trigger in COMPENSATION_OUTCOMES:
        outcome = "compensated" if entry.trigger == S.COMPENSATED else "failed"
        if entry.trigger == S.COMPENSATION_FAILED and dest != StepStatus.COMPENSATION_FAILED.value:
            outcome = "retried"
        m.compensations.add(1, {**attrs, "statesaga.outcome": outcome})
        return
    if entry.trigger == S.TIME_OUT:
        m.timed_out.add(1, attrs)
    if not entry.source.startswith(StepStatus.EXECUTING.value):
        if dest == StepStatus.FAILED.value:
            m.failed.add(1, attrs)  # a wait that timed out
        return
    settled = {"COMPLETED": "completed", "RETRYING": "retried", "FAILED": "failed"}.get(dest)
    if settled == "completed":
        m.completed.add(1, attrs)
    elif settled == "retried":
        m.retried.add(1, attrs)
    elif settled == "failed":
        m.failed.add(1, attrs)
    if settled is not None and step.started_at is not None:
        seconds = (entry.at - step.started_at).total_seconds()
        m.step_duration.record(max(seconds, 0.0), {**attrs, "statesaga.outcome": settled})


def count_workflow(
    wf: WorkflowState, entry: HistoryEntry, started: HistoryEntry | None, m: Instruments
) -> None:
    """The workflow counters one committed workflow transition moves."""
    if entry.trigger == W.RESUME:
        m.recoveries.add(1, {"statesaga.workflow.name": wf.name, "statesaga.by": entry.by or ""})
    if entry.dest not in _ENDED:
        return
    attrs = {"statesaga.workflow.name": wf.name, "statesaga.state": entry.dest}
    m.workflows.add(1, attrs)
    if started is not None:
        seconds = max((entry.at - started.at).total_seconds(), 0.0)
        m.workflow_duration.record(seconds, attrs)


# -- the fleet ----------------------------------------------------------------------------------
def watch_fleet(
    read_fleet: Callable[[], Fleet | None], attention: Callable[[], dict[str, int]]
) -> None:
    """Register the fleet's gauges, read at each collection: `read_fleet` (the queue's
    workers and depth, statesaga.observability.fleet; None when the queue cannot tell) and
    `attention` (workflows by what they need: `stuck`, `waiting_for_signal`). A read that
    fails leaves that collection without the series (a gap) and logs one line."""
    from opentelemetry.metrics import Observation

    from ..resources import __version__

    meter = metrics.get_meter("statesaga", __version__)
    cache: dict[str, list[Observation]] = {}

    def fleet_read(options: CallbackOptions) -> list[Observation]:
        try:
            fleet = read_fleet()
            if fleet is None:
                return []
        except Exception as exc:
            log.warning("the queue could not be read for metrics: %s: %s", type(exc).__name__, exc)
            cache.clear()
            return []
        for q in fleet.queues:
            at = {"statesaga.queue": q.name}
            cache["depth"] = [Observation(q.depth, at)]
            cache["delayed"] = [Observation(q.delayed, at)]
            cache["failed"] = [Observation(q.failed, at)]
            cache["quarantined"] = [Observation(q.quarantined, at)]
            cache["scheduler"] = [Observation(1 if q.scheduler else 0, at)]
        name = fleet.queues[0].name if fleet.queues else ""
        return [
            Observation(fleet.busy, {"statesaga.queue": name, "statesaga.worker.state": "busy"}),
            Observation(fleet.idle, {"statesaga.queue": name, "statesaga.worker.state": "idle"}),
            # Listed by the queue, but their saga has stopped beating: most likely dead.
            Observation(
                fleet.silent, {"statesaga.queue": name, "statesaga.worker.state": "silent"}
            ),
        ]

    def cached(key: str) -> Callable[[CallbackOptions], list[Observation]]:
        return lambda options: cache.get(key, [])

    def workflows(options: CallbackOptions) -> list[Observation]:
        try:
            counts = attention()
        except Exception as exc:
            log.warning("the store could not be read for metrics: %s: %s", type(exc).__name__, exc)
            return []
        return [Observation(n, {"statesaga.workflow.state": k}) for k, n in counts.items()]

    # The workers' gauge reads the queue once; the queue's gauges reuse what it read.
    meter.create_observable_gauge(
        "statesaga.workers", [fleet_read], "{worker}", "live workers on the queue, busy or idle"
    )
    for key, what in (
        ("depth", "jobs ready, waiting for a worker"),
        ("delayed", "jobs due later (retries, timers)"),
        ("failed", "jobs in the failed registry"),
        ("quarantined", "jobs refused unrun"),
        ("scheduler", "1 when a worker holds the scheduler's lock"),
    ):
        meter.create_observable_gauge(f"statesaga.queue.{key}", [cached(key)], "{job}", what)
    meter.create_observable_gauge(
        "statesaga.workflows.attention",
        [workflows],
        "{workflow}",
        "workflows stuck (no heartbeat) or waiting for a signal",
    )


__all__ = ["Instruments", "count_step", "count_workflow", "metrics_on", "watch_fleet"]
