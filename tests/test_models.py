"""Instance documents: ids, exact JSON round trips, unknown fields rejected; the shipped schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from statesaga import DefinitionError, StepStatus, WorkflowState, WorkflowStatus
from statesaga.charts.chart import chart_json_schema
from statesaga.definitions.load import load_definition
from statesaga.models import HistoryEntry, RetryPolicy, StepError, utcnow

ROOT = Path(__file__).resolve().parents[1]


def sample() -> WorkflowState:
    wf = load_definition(ROOT / "examples" / "trip.yaml").instantiate({"city": "Zürich ✈"}, "s-1")
    wf.steps[0].status = StepStatus.COMPLETED
    wf.steps[0].result = {"booking": "FL-1", "nested": [1, 2.5, None, {"k": "v"}]}
    wf.steps[1].error = StepError(type="ValueError", message="bad", traceback="tb", attempt=2)
    wf.history.append(
        HistoryEntry(
            at=utcnow(),
            chart="step",
            trigger="succeed",
            source="EXECUTING",
            dest="COMPLETED",
            step="reserve_flight",
            attempt=1,
        )
    )
    wf.heartbeat_at = utcnow()
    return wf


def test_ids_follow_the_origin_format() -> None:
    wf = sample()
    assert re.fullmatch(r"WF-\d{8}-[0-9a-f]{8}", wf.id)
    comp = wf.steps[0].compensation
    assert comp is not None and re.fullmatch(r"COMP-\d{8}-[0-9a-f]{8}", comp.id)
    assert wf.status is WorkflowStatus.PENDING and wf.session_id == "s-1"


def test_json_round_trip_is_exact() -> None:
    wf = sample()
    again = WorkflowState.from_json(wf.to_json())
    assert again == wf
    assert again.to_json() == wf.to_json()


def test_unknown_fields_in_a_stored_document_are_rejected() -> None:
    doc = json.loads(sample().to_json())
    doc["steps"][0]["colour"] = "red"
    with pytest.raises(DefinitionError, match=r"steps\.0\.colour"):
        WorkflowState.from_json(json.dumps(doc), source="store:WF-x")


def test_backoff_is_exponential_capped_and_jittered_within_bounds() -> None:
    p = RetryPolicy(initial_interval=1, backoff_rate=2, max_interval=5)
    assert [p.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    j = RetryPolicy(initial_interval=1, backoff_rate=2, max_interval=60, jitter=0.5)
    delays = [j.delay(3) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 1


def test_shipped_json_schema_is_current() -> None:
    shipped = json.loads((ROOT / "statecharts" / "chart.schema.json").read_text(encoding="utf-8"))
    assert shipped == chart_json_schema(), (
        "regenerate: statesaga schema > statecharts/chart.schema.json"
    )
    printed = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", "schema"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(printed.stdout) == shipped
