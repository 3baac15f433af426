"""examples/deploy/: the Prometheus alert rules pass `promtool check rules` and fire on the
series they are about (`promtool test rules`), and every metric the rules and the Grafana
dashboard query is one statesaga exports (read from a real Prometheus exporter)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).parents[1] / "examples" / "deploy"
RULES = DEPLOY / "prometheus-alerts.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"

# What a worker (fleet gauges and step counters) and `serve` (the stored gauge) export,
# through the SDK's Prometheus reader, as Prometheus names them.
_EXPORTED = r"""
import tempfile
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import REGISTRY, generate_latest

metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
from statesaga.observability.fleet import Fleet, QueueInfo
from statesaga.observability.metrics import Instruments, watch_fleet
from statesaga.web import ServeSettings, create_app
from statesaga.web.app import watch_store

m = Instruments(metrics.get_meter("statesaga"))
a = {"statesaga.workflow.name": "w", "statesaga.step": "s"}
for counter in (m.started, m.completed, m.failed, m.retried, m.timed_out, m.workflows,
                m.recoveries, m.compensations):
    counter.add(1, a)
for histogram in (m.step_duration, m.workflow_duration, m.queue_wait):
    histogram.record(0.5, a)
watch_fleet(lambda: Fleet("rq", (), (QueueInfo("q", 3, 1, 0, 2, 0, "w"),)),
            lambda: {"stuck": 1, "waiting_for_signal": 2})
with tempfile.TemporaryDirectory() as d:
    from statesaga.adapters.stores.sqlite import SQLiteStore
    from statesaga.models import WorkflowState

    stored = SQLiteStore(f"{d}/s.db")
    stored.initialize()
    stored.create(WorkflowState(name="w"))
    stored.close()
    watch_store(create_app(ServeSettings(store=f"sqlite:///{d}/s.db", queue="inline://")))
    text = generate_latest(REGISTRY).decode()
for line in text.splitlines():
    if line.startswith("# TYPE statesaga_"):
        print(line.split()[2], line.split()[3])
"""


def exported() -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _EXPORTED], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names: set[str] = set()
    for line in done.stdout.splitlines():
        name, kind = line.split()
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def queried() -> dict[str, str]:
    """Every PromQL expression of the rules and the dashboard, by where it is."""
    out = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            out[f"rule {rule['alert']}"] = rule["expr"]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            out[f"panel {panel['title']} {target['refId']}"] = target["expr"]
    return out


def test_every_metric_queried_is_one_statesaga_exports() -> None:
    names = exported()
    assert {"statesaga_queue_depth", "statesaga_workers", "statesaga_workflows_attention"} <= names
    for where, expr in queried().items():
        used = set(re.findall(r"\bstatesaga_[a-z_]+\b(?![\"=])", expr)) - {
            "statesaga_queue", "statesaga_workflow_state", "statesaga_worker_state",
            "statesaga_outcome", "statesaga_state", "statesaga_step", "statesaga_workflow_name",
        }  # fmt: skip
        assert used and used <= names, (where, sorted(used - names))


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("needs promtool (Debian: apt-get install prometheus)")
    return tool


def test_the_rules_pass_promtool() -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


_TESTS = """
rule_files: [{rules}]
evaluation_interval: 30s
tests:
  - interval: 30s
    input_series:
      - series: 'statesaga_workflows_attention{{statesaga_workflow_state="stuck",instance="w1"}}'
        values: '0 0 1x10'
      - series: 'statesaga_workflows_attention{{statesaga_workflow_state="stuck",instance="w2"}}'
        values: '0 0 1x10'
      - series: 'statesaga_queue_depth{{statesaga_queue="q",instance="w1"}}'
        values: '0 5x10'
      - series: 'statesaga_workers{{statesaga_queue="q",statesaga_worker_state="busy"}}'
        values: '1 0x10'
      - series: 'statesaga_workers{{statesaga_queue="q",statesaga_worker_state="idle"}}'
        values: '0 0x10'
      # The worker was SIGKILLed mid-step: RQ still lists it, its saga no longer beats.
      - series: 'statesaga_workers{{statesaga_queue="q",statesaga_worker_state="silent"}}'
        values: '0 1x10'
      - series: 'statesaga_compensations_total{{statesaga_outcome="failed",statesaga_step="pay"}}'
        values: '0 0 1 1 1 1'
    alert_rule_test:
      - eval_time: 1m
        alertname: StatesagaWorkflowsStuck
        exp_alerts: []
      - eval_time: 5m
        alertname: StatesagaWorkflowsStuck
        exp_alerts:
          - exp_labels: {{severity: page}}
            exp_annotations:
              summary: "1 workflow(s) stuck: no worker has reported for them"
              description: >-
                Workflows are in flight with a stale heartbeat. Is `statesaga recover --every S`
                running? The dashboard's list (status RUNNING/COMPENSATING) shows each one with
                the command that resumes it.
      - eval_time: 4m
        alertname: StatesagaNoLiveWorker
        exp_alerts:
          - exp_labels: {{severity: page, statesaga_queue: q}}
            exp_annotations:
              summary: "no live statesaga worker on queue q"
              description: Jobs are queued and no worker is registered on the queue.
      - eval_time: 2m
        alertname: StatesagaCompensationFailures
        exp_alerts:
          - exp_labels: {{severity: page}}
            exp_annotations:
              summary: "a compensation failed: a saga could not be undone"
              description: >-
                A saga is halted (FAILED) with effects that may remain; an operator must act
                (the dashboard's instance page names them, then restart it from a step).
"""


def test_the_alerts_fire_on_what_they_are_about(tmp_path: Path) -> None:
    tests = tmp_path / "alerts-test.yml"
    tests.write_text(_TESTS.format(rules=RULES))
    done = subprocess.run(
        [_promtool(), "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
