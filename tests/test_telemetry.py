"""Traces, metrics and logs, with the real OpenTelemetry SDK (in-memory exporter and reader).

The SDK's global providers can be set once per process: this module sets them for the whole
test session (other modules then run with tracing on, which is the code path under test too).
Worker processes export with `OTEL_TRACES_EXPORTER=console`; their stderr is parsed back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.context import StepContext
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.models import WorkflowState, WorkflowStatus
from statesaga.observability.logs import StepFilter
from statesaga.registry import Registry
from statesaga.runtime.recovery import Recovery

TRIP = files("statesaga.examples") / "trip.yaml"
BASE = {"origin": "CDG", "destination": "NRT", "nights": 3, "amount": 1200, "email": "z@x.io"}


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()

    def trace_of(self, wf: WorkflowState) -> list[ReadableSpan]:
        """Every finished span of the workflow's trace."""
        trace_id = int(wf.trace["traceparent"].split("-")[1], 16)
        return [s for s in self.spans.get_finished_spans() if s.context.trace_id == trace_id]

    def points(self) -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
        """statesaga's metric points: counter sums and histogram counts, by attributes."""
        out: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                if sm.scope.name != "statesaga":
                    continue
                for m in sm.metrics:
                    for p in m.data.data_points:
                        key = (m.name, tuple(sorted(p.attributes.items())))
                        out[key] = getattr(p, "value", None) or getattr(p, "count", 0)
        return out


_SESSION: Telemetry | None = None


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    global _SESSION
    if _SESSION is None:
        t = Telemetry()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(t.spans))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[t.reader]))
        assert trace.get_tracer_provider() is provider, "another test installed a provider"
        _SESSION = t
    _SESSION.spans.clear()
    yield _SESSION
    _SESSION.spans.clear()


def delta(
    before: dict[tuple[str, tuple[tuple[str, Any], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, Any], ...]], float],
    workflow: str,
) -> Counter[tuple[str, str]]:
    """Per metric and (step or state or outcome), what changed for one workflow name."""
    out: Counter[tuple[str, str]] = Counter()
    for key, value in after.items():
        name, attrs = key
        a = dict(attrs)
        if a.get("statesaga.workflow.name") != workflow:
            continue
        label = "/".join(
            str(a[k]) for k in ("statesaga.step", "statesaga.state", "statesaga.outcome") if k in a
        )
        out[(name, label)] += value - before.get(key, 0)
    return +out


def tree(spans: list[ReadableSpan]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The root span and its attempts' spans, checking there is exactly one root (the
    workflow's start and the operations asked of it are children too: see `moments`)."""
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 1, [s.name for s in roots]
    root = roots[0]
    children = [
        s
        for s in spans
        if s.parent is not None
        and s.parent.span_id == root.context.span_id
        and s.name.startswith(("step ", "compensate "))
    ]
    for child in children:  # the workflow span covers its attempts
        assert (root.start_time or 0) <= (child.start_time or 0), child.name
        assert (child.end_time or 0) <= (root.end_time or 0), child.name
    return root, sorted(children, key=lambda s: s.start_time or 0)


def moments(spans: list[ReadableSpan], root: ReadableSpan) -> list[str]:
    """The workflow's start and the operations asked of it, children of its span, in order."""
    return [
        s.name
        for s in sorted(spans, key=lambda s: s.start_time or 0)
        if s.parent is not None
        and s.parent.span_id == root.context.span_id
        and s.name.startswith("workflow ")
    ]


def history_count(wf: WorkflowState, **match: str) -> Counter[str]:
    """How many history entries match, by step."""
    c: Counter[str] = Counter()
    for e in wf.history:
        if all(
            (getattr(e, k).split(".")[0] if k in ("source", "dest") else getattr(e, k)) == v
            for k, v in match.items()
        ):
            c[e.step or ""] += 1
    return c


# -- a saga that retries, with the handler's own span and log records ---
class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(StepFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_saga_that_retries_is_one_trace_with_a_span_per_attempt_and_handler_spans_inside(
    otel: Telemetry, tmp_path: Path
) -> None:
    app_tracer = trace.get_tracer("the.application")
    handler_log = logging.getLogger("the.application.handlers")
    records = Records()
    handler_log.addHandler(records)
    handler_log.setLevel(logging.INFO)

    reg = Registry()

    def fetch(ctx: StepContext) -> dict[str, str]:
        with app_tracer.start_as_current_span("GET https://api.example/quote"):
            handler_log.info("asking for a quote")
            if ctx.attempt == 1:
                raise ConnectionError("the quote service timed out")
        return {"quote": "42"}

    reg.register_handler("fetch", fetch)
    reg.register_handler("store", lambda ctx: {"stored": ctx.params["quote"]})
    definition = load_definition(
        {
            "workflow": "quote_retry",
            "defaults": {"retry": {"max_attempts": 3, "initial_interval": 0.01}},
            "steps": [
                # With a timeout, a sync handler runs on a thread of its own.
                {"name": "fetch", "action": "fetch", "timeout": 10},
                {"name": "store", "action": "store", "params": {"quote": "${steps.fetch.quote}"}},
            ],
        }
    )
    engine = Engine(SQLiteStore(tmp_path / "t.db"), InlineQueue(), reg, heartbeat_interval=0)
    before = otel.points()
    try:
        wf = engine.run(definition, {}, session_id="S-1")
    finally:
        handler_log.removeHandler(records)
    assert wf.status is WorkflowStatus.COMPLETED

    spans = otel.trace_of(wf)
    root, children = tree(spans)
    assert root.name == "workflow quote_retry"
    assert root.attributes is not None
    assert root.attributes["statesaga.workflow.id"] == wf.id
    assert root.attributes["statesaga.session.id"] == "S-1"
    assert root.attributes["statesaga.state"] == "COMPLETED"
    assert root.status.status_code is not StatusCode.ERROR
    assert [e.name for e in root.events].count("retry") == 1
    assert [(s.name, dict(s.attributes or {})["statesaga.attempt"]) for s in children] == [
        ("step fetch", 1),
        ("step fetch", 2),
        ("step store", 1),
    ]
    first, second, store = (dict(s.attributes or {}) for s in children)
    assert first["statesaga.outcome"] == "failed"
    assert first["statesaga.error.type"] == "ConnectionError"
    assert first["statesaga.idempotency_key"] == f"{wf.id}:fetch"
    assert first["statesaga.session.id"] == "S-1"
    assert children[0].status.status_code is StatusCode.ERROR
    assert [e.name for e in children[0].events] == ["exception", "retry"]
    failure = dict(children[0].events[0].attributes or {})
    assert failure["exception.type"] == "ConnectionError"
    assert failure["exception.message"] == "the quote service timed out"
    assert second["statesaga.outcome"] == store["statesaga.outcome"] == "completed"
    # every span statesaga made names the workflow it belongs to
    for span in spans:
        if span.instrumentation_scope and span.instrumentation_scope.name == "statesaga":
            attrs = dict(span.attributes or {})
            assert attrs.get("statesaga.workflow.name") == "quote_retry", (span.name, attrs)
            assert attrs["statesaga.workflow.id"] == wf.id, span.name
    # its start was exported as soon as it was saved, a child of the workflow span
    assert moments(spans, root) == ["workflow quote_retry start"]
    # The handler's own spans nest under its attempt's span.
    calls = [s for s in spans if s.name == "GET https://api.example/quote"]
    assert [c.parent.span_id for c in calls if c.parent] == [
        children[0].context.span_id,
        children[1].context.span_id,
    ]
    assert len(spans) == 1 + 1 + 3 + 2  # nothing else, nothing twice
    # Every log record of a step names the workflow, the step, the attempt and the trace.
    assert [(r.workflow_id, r.step, r.attempt) for r in records.records] == [  # type: ignore[attr-defined]
        (wf.id, "fetch", 1),
        (wf.id, "fetch", 2),
    ]
    assert {r.trace_id for r in records.records} == {f"{root.context.trace_id:032x}"}  # type: ignore[attr-defined]

    got = delta(before, otel.points(), "quote_retry")
    assert (
        got[("statesaga.steps.started", "fetch")]
        == history_count(wf, trigger="dispatch")["fetch"]
        == 2
    )
    assert (
        got[("statesaga.steps.retried", "fetch")]
        == history_count(wf, dest="RETRYING")["fetch"]
        == 1
    )
    assert (
        got[("statesaga.steps.completed", "fetch")]
        == got[("statesaga.steps.completed", "store")]
        == 1
    )
    assert got[("statesaga.workflows.ended", "COMPLETED")] == 1
    assert got[("statesaga.workflow.duration", "COMPLETED")] == 1
    assert got[("statesaga.step.duration", "fetch/retried")] == 1
    assert got[("statesaga.step.duration", "fetch/completed")] == 1
    assert got[("statesaga.queue.wait", "fetch")] == 2
    assert ("statesaga.steps.failed", "fetch") not in got


# -- a saga that fails after compensating ---
def test_a_saga_that_unwinds_has_its_compensations_under_the_workflow_span(
    otel: Telemetry, tmp_path: Path
) -> None:
    engine = Engine(SQLiteStore(tmp_path / "t.db"), InlineQueue(), heartbeat_interval=0)
    definition = load_definition(str(TRIP))
    before = otel.points()
    wf = engine.run(definition, {**BASE, "fail_at": "charge_payment"})
    assert wf.status is WorkflowStatus.COMPENSATED

    root, children = tree(otel.trace_of(wf))
    assert root.name == "workflow trip_booking"
    # A compensated saga did what a saga is for: not an error (its failed step's span is).
    assert root.status.status_code is not StatusCode.ERROR
    assert dict(root.attributes or {})["statesaga.state"] == "COMPENSATED"
    assert dict(root.attributes or {})["statesaga.error.type"] == "BookingError"
    names = [s.name for s in children]
    assert names == [
        "step reserve_flight",
        "step reserve_hotel",
        "step reserve_car",
        "step charge_payment",
        "compensate reserve_car",
        "compensate reserve_hotel",
        "compensate reserve_flight",
    ]
    pay = dict(children[3].attributes or {})
    assert pay["statesaga.outcome"] == "failed"
    assert pay["statesaga.error.type"] == "BookingError"
    for span in children[4:]:
        attrs = dict(span.attributes or {})
        assert attrs["statesaga.outcome"] == "compensated"
        assert attrs["statesaga.idempotency_key"].endswith(":undo")
    assert "step_failed" in [e.name for e in root.events]

    got = delta(before, otel.points(), "trip_booking")
    undone = history_count(wf, trigger="compensated")
    assert sum(v for (n, _), v in got.items() if n == "statesaga.compensations") == 3
    for step in ("reserve_flight", "reserve_hotel", "reserve_car"):
        assert got[("statesaga.compensations", f"{step}/compensated")] == undone[step] == 1
    assert got[("statesaga.steps.failed", "charge_payment")] == 1
    assert got[("statesaga.workflows.ended", "COMPENSATED")] == 1
    assert sum(v for (n, _), v in got.items() if n == "statesaga.steps.started") == 4


# -- a worker that dies mid-step: recovery closes its span ---
class WorkerDied(BaseException):
    """Stands for the process dying after the handler ran, before its outcome was saved."""


def test_recovery_closes_the_span_of_an_attempt_whose_worker_died(
    otel: Telemetry, tmp_path: Path
) -> None:
    app_tracer = trace.get_tracer("the.application")
    reg = Registry()

    def charge(ctx: StepContext) -> dict[str, int]:
        with app_tracer.start_as_current_span("POST /charges"):
            return {"charged": ctx.attempt}

    reg.register_handler("charge", charge)
    definition = load_definition(
        {"workflow": "lost_worker", "steps": [{"name": "charge", "action": "charge"}]}
    )

    def die(boundary: str, job: Any) -> None:
        if boundary == "after_action" and job.attempt == 1:
            raise WorkerDied()

    store = SQLiteStore(tmp_path / "t.db")
    doomed = Engine(store, InlineQueue(), reg, heartbeat_interval=0, probe=die, worker="w1")
    wf = doomed.start(definition, {})
    with pytest.raises(WorkerDied):
        doomed.wait(wf.id, timeout=10)
    # Dead before saving the outcome: only the handler's own span got out, not the attempt's
    # (and the start, exported as soon as it was saved: the saga showed while it ran).
    assert [s.name for s in otel.trace_of(wf)] == ["workflow lost_worker start", "POST /charges"]

    rescuer = Engine(store, InlineQueue(), reg, heartbeat_interval=0, worker="w2")
    report = Recovery(rescuer, timeout=0).run_once()
    assert report.resumed == [wf.id]
    wf = rescuer.wait(wf.id, timeout=10)
    assert wf.status is WorkflowStatus.COMPLETED

    spans = otel.trace_of(wf)
    root, children = tree([s for s in spans if s.name != "POST /charges"])
    assert [(s.name, dict(s.attributes or {})["statesaga.attempt"]) for s in children] == [
        ("step charge", 1),
        ("step charge", 2),
    ]
    # recovery is an operation of its own in the trace, after the start
    assert moments(spans, root) == ["workflow lost_worker start", "workflow lost_worker resume"]
    lost = dict(children[0].attributes or {})
    assert lost["statesaga.outcome"] == "lost"
    assert lost["statesaga.closed_by"] == "recovery"
    assert [e.name for e in children[0].events] == ["recovery"]
    assert "recovery" in [e.name for e in root.events]
    # The dead worker's handler span stays attached to the attempt recovery closed.
    calls = sorted((s for s in spans if s.name == "POST /charges"), key=lambda s: s.start_time or 0)
    assert [c.parent.span_id for c in calls if c.parent] == [
        children[0].context.span_id,
        children[1].context.span_id,
    ]


# -- two real RQ worker processes ---
def _statesaga() -> list[str]:
    script = Path(sys.executable).with_name("statesaga")
    return [str(script)] if script.exists() else [sys.executable, "-m", "statesaga.cli"]


def parse_console_spans(text: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter wrote (JSON objects starting a line), among log lines."""
    decoder = json.JSONDecoder()
    spans = []
    pos = 0
    while True:
        start = text.find("\n{", pos)
        if start < 0:
            break
        try:
            obj, end = decoder.raw_decode(text, start + 1)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        if isinstance(obj, dict) and "context" in obj:
            spans.append(obj)
        pos = end
    return spans


class Shared:
    """A store file and an RQ queue on the test Redis, shared with worker processes that
    export their spans with the console exporter (stderr, into NAME.log)."""

    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        from statesaga.adapters.queues.rq.queue import RQQueue

        self.dir = tmp_path
        self.queue_url = (
            redis_url.replace("redis://", "rq://", 1) + f"?queue=t-{uuid.uuid4().hex[:8]}"
        )
        self.store_url = f"sqlite:///{tmp_path / 'shared.db'}"
        self.store = SQLiteStore(tmp_path / "shared.db")
        self.store.initialize()
        self.queue = RQQueue.from_url(self.queue_url)

    def worker(self, name: str, handlers: str, **env: str) -> subprocess.Popen[bytes]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        environ.update(OTEL_TRACES_EXPORTER="console", **env)
        cmd = [*_statesaga(), "worker", "--queue", self.queue_url, "--store", self.store_url,
               "--handlers", handlers, "--with-scheduler", "--heartbeat", "0.5",
               "--name", f"{name}-{uuid.uuid4().hex[:6]}"]  # fmt: skip
        log = (self.dir / f"{name}.log").open("wb")
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=environ)

    def spans(self, name: str) -> list[dict[str, Any]]:
        return parse_console_spans("\n" + self.log(name))

    def log(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def shared(tmp_path: Path, redis_url: str, redis_client: Any) -> Shared:
    return Shared(tmp_path, redis_url)  # redis_client flushes the database around the test


@pytest.mark.redis
@pytest.mark.slow
def test_two_rq_workers_add_their_spans_to_the_one_trace_of_each_workflow(
    otel: Telemetry, shared: Shared
) -> None:
    store = shared.store
    engine = Engine(store, shared.queue)
    definition = load_definition(str(TRIP))
    names = ["otel-0", "otel-1"]
    procs = [
        shared.worker(n, "statesaga.examples.trip_handlers", OTEL_SERVICE_NAME="trip-worker")
        for n in names
    ]
    try:
        flaky = engine.start(definition, {**BASE, "flaky": "reserve_hotel"})
        unwound = engine.start(definition, {**BASE, "fail_at": "reserve_car"})
        for wf in (flaky, unwound):
            engine.wait(wf.id, timeout=60)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    text = "\n".join(shared.log(n) for n in names)
    exported = [span for n in names for span in shared.spans(n)]
    flaky, unwound = store.get(flaky.id), store.get(unwound.id)
    assert flaky.status is WorkflowStatus.COMPLETED, text[-3000:]
    assert unwound.status is WorkflowStatus.COMPENSATED, text[-3000:]

    for wf, expected in (
        (flaky, ["step reserve_flight", "step reserve_hotel", "step reserve_hotel",
                 "step reserve_car", "step charge_payment", "step send_confirmation"]),
        (unwound, ["step reserve_flight", "step reserve_hotel", "step reserve_car",
                   "compensate reserve_hotel", "compensate reserve_flight"]),
    ):  # fmt: skip
        trace_id = "0x" + wf.trace["traceparent"].split("-")[1]
        mine = [s for s in exported if s["context"]["trace_id"] == trace_id]
        roots = [s for s in mine if s["parent_id"] is None]
        assert [r["name"] for r in roots] == ["workflow trip_booking"], mine
        root = roots[0]
        assert root["attributes"]["statesaga.workflow.id"] == wf.id
        assert root["attributes"]["statesaga.state"] == wf.status.value
        assert root["resource"]["attributes"]["service.name"] == "trip-worker"
        children = sorted(
            (s for s in mine if s["parent_id"] == root["context"]["span_id"]),
            key=lambda s: s["start_time"],
        )
        assert [s["name"] for s in children] == expected
        assert len(mine) == 1 + len(expected)
        for s in children:
            assert s["attributes"]["statesaga.workflow.id"] == wf.id
    # Log records written during a step carry its workflow, step, attempt and trace.
    tagged = [
        line for line in text.splitlines() if f"wf={flaky.id} step=reserve_hotel attempt=2" in line
    ]
    assert tagged and all(
        "trace=" + flaky.trace["traceparent"].split("-")[1] in line for line in tagged
    )
    assert "worker otel-0" in text or "worker otel-1" in text  # the start-up line


@pytest.mark.redis
@pytest.mark.slow
def test_a_prometheus_scrape_of_a_worker_returns_the_queue_depth_redis_holds(
    shared: Shared, free_port: int
) -> None:
    import urllib.request

    tests = str(Path(__file__).parent)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    cmd = [*_statesaga(), "worker", "--queue", shared.queue_url, "--store", shared.store_url,
           "--handlers", "web_handlers", "--metrics-port", str(free_port)]  # fmt: skip
    log = (shared.dir / "metrics-port.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=environ)
    reg = Registry()  # the name only: the worker runs the real one
    reg.register_handler("order_step", lambda ctx: {})
    engine = Engine(shared.store, shared.queue, reg)
    # web_handlers' order_step sleeps `delay` seconds; only the worker imports it.
    order = load_definition(
        {"workflow": "web_order", "steps": [
            {"name": n, "action": "order_step"} for n in ("reserve", "pack", "charge", "notify")
        ]}
    )  # fmt: skip
    url = f"http://127.0.0.1:{free_port}/metrics"

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("statesaga_") and " " in line:
                key, value = line.rsplit(" ", 1)
                # the SDK adds its scope's labels to every series; the test reads its own
                out[re.sub(r'otel_scope_\w+="[^"]*",?', "", key)] = float(value)
        return out

    try:
        deadline = time.monotonic() + 60
        points: dict[str, float] = {}
        queue = shared.queue.name
        idle = f'statesaga_workers{{statesaga_queue="{queue}",statesaga_worker_state="idle"}}'
        while points.get(idle) != 1.0:  # the port opens before the worker has registered
            assert time.monotonic() < deadline, (points, shared.log("metrics-port")[-2000:])
            try:
                points = scrape()
            except OSError:
                assert proc.poll() is None, shared.log("metrics-port")
            time.sleep(0.2)
        # One slow saga keeps the worker busy; the next two wait in the queue.
        ids = [engine.start(order, {"delay": 1.5}).id for _ in range(3)]
        depth_key = f'statesaga_queue_depth{{statesaga_queue="{queue}"}}'
        busy = f'statesaga_workers{{statesaga_queue="{queue}",statesaga_worker_state="busy"}}'
        seen = None
        while time.monotonic() < deadline:
            points = scrape()
            depth = shared.queue.connection.llen(f"rq:queue:{queue}")
            if points.get(busy) == 1.0 and points.get(depth_key) == depth == 2:
                seen = points
                break
            time.sleep(0.2)
        assert seen is not None, (points, shared.log("metrics-port")[-2000:])
        assert seen['statesaga_workflows_attention{statesaga_workflow_state="stuck"}'] == 0
        for wf_id in ids:
            engine.wait(wf_id, timeout=60)
        final = scrape()
        assert final[depth_key] == 0 and shared.queue.connection.llen(f"rq:queue:{queue}") == 0
        done = (
            'statesaga_steps_completed_total{statesaga_step="notify",'
            'statesaga_workflow_name="web_order"}'
        )
        assert final[done] == 3.0  # this worker's own counters are on the same page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


# -- the CLI ---
def _run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STATESAGA_"))}
    return subprocess.run(
        [*_statesaga(), *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_statesaga_run_prints_the_trace_with_the_console_exporter(tmp_path: Path) -> None:
    inp = json.dumps({**BASE, "flaky": "reserve_car"})
    db = f"sqlite:///{tmp_path / 's.db'}"
    done = _run_cli("run", str(TRIP), "--input", inp, "--store", db, "--json",
                    env={"OTEL_TRACES_EXPORTER": "console"}, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    wf = WorkflowState.model_validate_json(done.stdout)  # stdout stays the document alone
    spans = parse_console_spans("\n" + done.stderr)
    trace_id = "0x" + wf.trace["traceparent"].split("-")[1]
    assert {s["context"]["trace_id"] for s in spans} == {trace_id}
    names = Counter(s["name"] for s in spans)
    assert names["workflow trip_booking"] == 1
    assert names["step reserve_car"] == 2
    # the command's own span, the workflow's under it, its start (exported at once), 6 attempts
    assert names["statesaga run"] == names["workflow trip_booking start"] == 1
    assert sum(names.values()) == 1 + 1 + 1 + 6
    command = next(s for s in spans if s["name"] == "statesaga run")
    workflow = next(s for s in spans if s["name"] == "workflow trip_booking")
    assert command["parent_id"] is None and workflow["parent_id"] == command["context"]["span_id"]
    assert command["attributes"]["statesaga.workflow.id"] == wf.id
    for span in spans:  # every span names its workflow
        assert span["attributes"]["statesaga.workflow.name"] == "trip_booking", span["name"]


def test_a_signal_from_the_cli_is_a_span_of_its_own_linked_from_the_workflow_trace(
    tmp_path: Path,
) -> None:
    expense = str(files("statesaga.examples") / "expense.yaml")
    db = f"sqlite:///{tmp_path / 's.db'}"
    env = {"OTEL_TRACES_EXPORTER": "console"}
    started = _run_cli("run", expense, "--input", '{"employee": "bob", "amount": 120}',
                       "--store", db, env=env, cwd=tmp_path)  # fmt: skip
    wf = SQLiteStore(tmp_path / "s.db").get("WF-" + started.stdout.split("WF-", 1)[1][:17])
    assert wf.status is WorkflowStatus.RUNNING, started.stderr[-1500:]
    # its start is out while it waits: a person looking at the trace sees it
    early = parse_console_spans("\n" + started.stderr)
    assert "workflow expense_claim start" in [s["name"] for s in early]
    assert "workflow expense_claim" not in [s["name"] for s in early]

    handlers = "statesaga.examples.expense_handlers"
    sent = _run_cli("signal", wf.id, "approve", "--payload", '{"by": "ann"}', "--store", db,
                    "--handlers", handlers, env=env, cwd=tmp_path)  # fmt: skip
    assert sent.returncode == 0, sent.stderr[-2000:]
    spans = {s["name"]: s for s in parse_console_spans("\n" + sent.stderr)}
    command, signal = spans["statesaga signal"], spans["workflow expense_claim signal"]
    trace_id = "0x" + wf.trace["traceparent"].split("-")[1]
    assert signal["context"]["trace_id"] == trace_id  # in the workflow's trace
    assert [link["context"]["span_id"] for link in signal["links"]] == [
        command["context"]["span_id"]
    ]
    assert command["attributes"]["statesaga.workflow.id"] == wf.id
    assert spans["workflow expense_claim"]["status"]["status_code"] == "UNSET"  # COMPLETED


@pytest.mark.slow
def test_tracing_off_stores_no_trace_and_prints_no_span(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    done = _run_cli("run", str(TRIP), "--input", json.dumps(BASE), "--store", db, "--json",
                    env={}, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert WorkflowState.model_validate_json(done.stdout).trace == {}
    assert '"trace_id"' not in done.stderr


def _trip_in_python(before: str, after: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `before`, one trip on an in-process engine (as `wf`), then `after`, in a fresh
    interpreter (the SDK's global providers are set once per process)."""
    code = (
        f"{before}\n"
        "from statesaga import Engine, load_definition\n"
        "from statesaga.adapters.stores.memory import MemoryStore\n"
        "from statesaga.adapters.queues.inline import InlineQueue\n"
        f"d = load_definition({str(TRIP)!r})\n"
        f"wf = Engine(MemoryStore(), InlineQueue()).run(d, {BASE!r})\n"
        f"{after}\n"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_a_library_user_gets_no_provider_installed() -> None:
    _trip_in_python(
        "from opentelemetry import trace, metrics",
        "assert wf.status.value == 'COMPLETED' and wf.trace == {}, wf\n"
        "assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)\n"
        "assert type(metrics.get_meter_provider()).__name__ == '_ProxyMeterProvider'",
        OTEL_TRACES_EXPORTER="console",  # read by the CLI only
    )


@pytest.mark.parametrize(
    "variable, known",
    [
        ("OTEL_TRACES_EXPORTER", "console, otlp, none"),
        ("OTEL_METRICS_EXPORTER", "console, otlp, prometheus, none"),
        ("OTEL_LOGS_EXPORTER", "otlp, console, none"),
    ],
)
def test_an_unknown_exporter_is_one_warning_and_the_work_goes_on(
    tmp_path: Path, variable: str, known: str
) -> None:
    """The OpenTelemetry specification: an unknown value is warned about and ignored."""
    done = _run_cli("run", str(TRIP), "--input", json.dumps(BASE), "--store",
                    f"sqlite:///{tmp_path / 's.db'}", env={variable: "jaegerr"},
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert len(warned) == 1 and "Traceback" not in done.stderr, done.stderr
    assert warned[0].endswith(
        f"{variable}: unknown exporter 'jaegerr' (known: {known}); ignored "
        "(telemetry goes on without it)"
    )


@pytest.mark.slow
def test_json_logs_carry_the_step_of_each_record(tmp_path: Path) -> None:
    inp = json.dumps({**BASE, "flaky": "reserve_car"})
    done = _run_cli("--log-format", "json", "run", str(TRIP), "--input", inp,
                    "--store", f"sqlite:///{tmp_path / 's.db'}", "--json",
                    env={"STATESAGA_LOG_LEVEL": "info"}, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    wf = WorkflowState.model_validate_json(done.stdout)
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    events = [r for r in records if r["logger"] == "statesaga.events" and "step" in r]
    assert {(r["workflow_id"], r["step"], r["attempt"]) for r in events} >= {
        (wf.id, "reserve_flight", 1),
        (wf.id, "send_confirmation", 1),
    }
    assert all("trace_id" not in r for r in records)  # tracing is off
    failed = [r for r in records if r["logger"] == "statesaga.steps"]
    assert [(r["level"], r["step"], r["attempt"]) for r in failed] == [("INFO", "reserve_car", 1)]
    assert "ConnectionError: reserve_car: provider timed out" in failed[0]["message"]
    assert not [r for r in records if r["logger"].startswith("transitions")]


def test_log_options_are_choices() -> None:
    done = _run_cli("--log-format", "xml", "list", env={}, cwd=Path.cwd())
    assert done.returncode == 2
    assert "'xml' is not one of 'text', 'json'" in done.stderr


@pytest.mark.slow
def test_prometheus_text_serves_the_metrics_of_the_workflows_run_here() -> None:
    done = _trip_in_python(
        "from statesaga.observability.otel import configure_from_env, prometheus_text\n"
        "assert configure_from_env(prometheus=True, environ={}) == ['metrics: prometheus']",
        "body, content_type = prometheus_text()\nprint(content_type)\nprint(body.decode())",
    )
    assert done.stdout.startswith("text/plain; version=")
    lines = done.stdout.splitlines()
    completed = [
        line
        for line in lines
        if line.startswith("statesaga_steps_completed_total{")
        and 'statesaga_step="charge_payment"' in line
    ]
    assert len(completed) == 1 and completed[0].endswith(" 1.0"), completed
    assert any(line.startswith('statesaga_step_duration_seconds_bucket{le="0.5"') for line in lines)


@pytest.mark.redis
@pytest.mark.slow
def test_a_killed_worker_s_attempt_span_is_closed_by_the_recovery_that_finds_it(
    otel: Telemetry, shared: Shared, tmp_path: Path
) -> None:
    import signal
    import time

    reg = Registry()  # the workers run the handler; this process only starts the workflow
    reg.register_handler("wait_for_release", lambda ctx: pytest.fail("ran in the test process"))
    engine = Engine(shared.store, shared.queue, reg, worker="test")
    definition = load_definition(
        {
            "workflow": "held",
            "steps": [
                {
                    "name": "hold",
                    "action": "wait_for_release",
                    "retry": {"max_attempts": 2, "initial_interval": 0},
                }
            ],
        }
    )
    ledger, release = tmp_path / "ledger.jsonl", tmp_path / "release"
    env = {
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])
        ),
        "STATESAGA_TEST_LEDGER": str(ledger),
        "STATESAGA_TEST_RELEASE": str(release),
    }

    def worker(name: str) -> subprocess.Popen[bytes]:
        return shared.worker(name, "ledger_handlers", **env)

    def until(cond: Any, what: str) -> None:
        deadline = time.monotonic() + 60
        while not cond():
            assert time.monotonic() < deadline, f"gave up waiting: {what}"
            time.sleep(0.05)

    doomed = worker("doomed")
    try:
        wf = engine.start(definition, {})
        until(lambda: ledger.exists() and ledger.read_text().strip(), "the first attempt to start")
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
    release.touch()
    recovery = Recovery(engine, timeout=1.5)
    until(lambda: wf.id in recovery.run_once().resumed, "recovery to find the lost attempt")
    rescuer = worker("rescuer")
    try:
        done = engine.wait(wf.id, timeout=60)
    finally:
        rescuer.terminate()
        rescuer.wait(timeout=30)
    assert done.status is WorkflowStatus.COMPLETED

    trace_id = int(done.trace["traceparent"].split("-")[1], 16)
    workflow_span = int(done.trace["traceparent"].split("-")[2], 16)
    lost = [s for s in otel.trace_of(done) if s.name == "step hold"]
    assert len(lost) == 1
    attrs = dict(lost[0].attributes or {})
    assert (attrs["statesaga.attempt"], attrs["statesaga.outcome"]) == (1, "lost")
    assert lost[0].parent is not None and lost[0].parent.span_id == workflow_span
    assert shared.spans("doomed") == []  # it died first
    exported = shared.spans("rescuer")
    assert {s["context"]["trace_id"] for s in exported} == {f"0x{trace_id:032x}"}
    by_name = {(s["name"], s["attributes"].get("statesaga.attempt")): s for s in exported}
    assert set(by_name) == {("step hold", 2), ("workflow held", None)}
    assert by_name[("step hold", 2)]["parent_id"] == f"0x{workflow_span:016x}"
    assert by_name[("workflow held", None)]["context"]["span_id"] == f"0x{workflow_span:016x}"
    assert "recovery" in [e["name"] for e in by_name[("workflow held", None)]["events"]]


def test_waits_signals_and_cancels_are_events_of_the_workflow_span(
    otel: Telemetry, tmp_path: Path
) -> None:
    reg = Registry()
    reg.register_handler("book", lambda ctx: {"booked": True})
    reg.register_handler("unbook", lambda ctx: {"unbooked": True})
    definition = load_definition(
        {
            "workflow": "approved_booking",
            "steps": [
                {"name": "book", "action": "book", "compensation": {"action": "unbook"}},
                {"name": "approval", "kind": "wait", "signal": "approve"},
                {"name": "confirm", "action": "book"},
            ],
        }
    )
    engine = Engine(SQLiteStore(tmp_path / "t.db"), InlineQueue(), reg, heartbeat_interval=0)
    approved = engine.run(definition, {})
    declined = engine.run(definition, {})
    engine.signal(approved.id, "approve", {"secret": "not for the trace"}, by="alice")
    approved = engine.wait(approved.id, timeout=10)
    engine.cancel(declined.id, by="bob")
    declined = engine.wait(declined.id, timeout=10)
    assert (approved.status, declined.status) == (
        WorkflowStatus.COMPLETED,
        WorkflowStatus.COMPENSATED,  # cancelled after `book`: undone, then COMPENSATED
    )

    root, children = tree(otel.trace_of(approved))
    events = {e.name: dict(e.attributes or {}) for e in root.events}
    assert {"wait", "signal"} <= set(events)
    assert events["signal"]["statesaga.signal"] == "approve"
    assert "secret" not in json.dumps([dict(e.attributes or {}) for e in root.events])
    assert [s.name for s in children] == ["step book", "step confirm"]

    root, children = tree(otel.trace_of(declined))
    assert dict(root.attributes or {})["statesaga.state"] == "COMPENSATED"
    cancel = [dict(e.attributes or {}) for e in root.events if e.name == "cancel"]
    assert [c["statesaga.by"] for c in cancel] == ["bob"]
    assert [s.name for s in children] == ["step book", "compensate book"]


def test_an_action_of_the_dashboard_is_a_span_the_workflow_hangs_under(
    otel: Telemetry, tmp_path: Path
) -> None:
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    import shutil
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    from statesaga.web import ServeSettings, create_app

    defs = tmp_path / "defs"
    defs.mkdir()
    shutil.copy(str(TRIP), defs)
    token = "a-token-for-spans-1234"
    settings = ServeSettings(
        store=f"sqlite:///{tmp_path / 'w.db'}",
        queue="inline://",
        handlers=("statesaga.examples.trip_handlers",),
        definitions=defs,
        token=token,
    )
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": f"Bearer {token}"}
        body = {"definition": "trip_booking", "input": {**BASE, "fail_at": "charge_payment"}}
        doc = client.post("/api/workflows", json=body, headers=auth).json()
        deadline = time.monotonic() + 30
        while client.get(f"/api/workflows/{doc['id']}").json()["status"] != "COMPENSATED":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cancel = client.post(f"/api/workflows/{doc['id']}/cancel", headers=auth)
        assert cancel.status_code == 409  # it has ended: the span says so
    wf = SQLiteStore(tmp_path / "w.db").get(doc["id"])
    spans = otel.spans.get_finished_spans()
    post = next(s for s in spans if s.name == "POST /api/workflows")
    attrs = dict(post.attributes or {})
    assert attrs["http.response.status_code"] == 201
    assert attrs["statesaga.workflow.id"] == wf.id
    assert attrs["statesaga.workflow.name"] == "trip_booking"
    workflow = next(s for s in otel.trace_of(wf) if s.name == "workflow trip_booking")
    assert workflow.parent is not None and workflow.parent.span_id == post.context.span_id
    refused = next(s for s in spans if s.name == "POST /api/workflows/{id}/cancel")
    assert dict(refused.attributes or {})["http.response.status_code"] == 409
    assert not [s for s in spans if s.name.startswith("GET ")]  # reads are not actions


@pytest.mark.redis
def test_a_worker_exports_the_fleet_gauges_through_any_metrics_exporter(shared: Shared) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(OTEL_METRICS_EXPORTER="console", OTEL_METRIC_EXPORT_INTERVAL="300")
    cmd = [*_statesaga(), "worker", "--queue", shared.queue_url, "--store", shared.store_url,
           "--handlers", "statesaga.examples.trip_handlers", "--burst"]  # fmt: skip
    done = subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    exported = set(re.findall(r'"name": "(statesaga\.[a-z_.]+)"', done.stderr))
    assert {
        "statesaga.queue.depth",
        "statesaga.workers",
        "statesaga.workflows.attention",
    } <= exported


def test_a_metrics_port_without_the_sdk_is_one_clear_line(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['opentelemetry.sdk'] = None\n"
        "from statesaga.cli import main\n"
        "main(['worker', '--queue', 'rq://127.0.0.1:1/0', '--store', "
        f"'sqlite:///{tmp_path / 'x.db'}', '--metrics-port', '9999'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-1500:]
    assert "pip install 'statesaga[otel]'" in done.stderr
