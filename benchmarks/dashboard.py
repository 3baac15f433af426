"""Row 6: the dashboard's workflows page with many stored workflows.

N stored workflows (100,000; fewer in quick mode) of three definitions and five statuses in
one SQLite file, each with a realistic history (twenty entries); then the p50/p99 time of
`GET /` through the real Starlette application (routing, the store's keyset query and the
counts per status, fifty documents parsed, the template rendered), for the newest page, a
status filter, a definition filter, and a page deep in the past (a cursor 90% of the way
back). The baseline is the same page over 1,000 stored workflows: the ratio shows whether
the page's cost grows with the store (keyset paging and indexed counts say it should not
much; OFFSET paging or reading every document would).

    python -m benchmarks.dashboard [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.models import HistoryEntry, WorkflowState, WorkflowStatus

from ._common import Mode, Row, percentile
from .embedded import RESULTS
from .store_latency import five_step_workflow

NAMES = ("trip_booking", "expense_claim", "web_order")
# One in twenty of each non-COMPLETED status, the rest COMPLETED: a long-lived store.
STATUSES = [WorkflowStatus.COMPENSATED, WorkflowStatus.FAILED, WorkflowStatus.RUNNING] + [
    WorkflowStatus.COMPLETED
] * 17
TARGET_MS = 100.0


def _template() -> WorkflowState:
    wf = five_step_workflow()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    wf.history = [
        HistoryEntry(
            at=at,
            chart="step",
            trigger=t,
            source="A",
            dest="B",
            step=f"step{i % 5}",
            attempt=1,
            by="bench-worker",
        )
        for i, t in enumerate(["schedule", "dispatch", "succeed", "advance"] * 5)
    ]
    return wf


def fill(path: Path, n: int) -> list[WorkflowState]:
    store = SQLiteStore(path, synchronous="normal")
    template = _template()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = []
    for i in range(n):
        wf = template.model_copy(
            update={
                "id": f"WF-20260101-{i:08x}",
                "name": NAMES[i % len(NAMES)],
                "session_id": f"S-{i // 10:07d}",
                "status": STATUSES[i % len(STATUSES)],
                "created_at": start + timedelta(seconds=i),
                "updated_at": start + timedelta(seconds=i + 5),
            }
        )
        store.create(wf)
        made.append(wf)
    store.close()
    return made


def measure(path: Path, made: list[WorkflowState], samples: int) -> dict[str, dict[str, float]]:
    with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx works
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    from statesaga.web import ServeSettings, create_app
    from statesaga.web.query import encode_cursor

    deep = made[len(made) // 10]  # 90% of the way back from the newest
    pages = {
        "newest": "/",
        "status": "/?status=FAILED",
        "definition": "/?name=expense_claim",
        "deep": "/?before=" + encode_cursor(deep),
    }
    out: dict[str, dict[str, float]] = {}
    with TestClient(create_app(ServeSettings(f"sqlite:///{path}", "inline://"))) as client:
        for name, url in pages.items():
            for _ in range(5):  # warm the page cache and the statement cache
                assert client.get(url).status_code == 200
            times = []
            for _ in range(samples):
                t0 = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - t0)
                assert response.status_code == 200 and 'data-id="WF-' in response.text
            out[name] = {
                "p50_ms": percentile(times, 50) * 1e3,
                "p99_ms": percentile(times, 99) * 1e3,
            }
    return out


def run(mode: Mode, directory: Path | None = None) -> list[Row]:
    try:
        import starlette  # noqa: F401
    except ImportError:
        return [Row(name="6. dashboard", status="pending", note="needs pip install '.[ui]'")]
    n = {"smoke": 300, "quick": 10_000, "full": 100_000}[mode]
    small = {"smoke": 100, "quick": 1_000, "full": 1_000}[mode]
    samples = {"smoke": 10, "quick": 50, "full": 200}[mode]
    base = directory or RESULTS
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dashboard-", dir=base) as tmp:
        big_db, small_db = Path(tmp) / "big.db", Path(tmp) / "small.db"
        t0 = time.perf_counter()
        big = fill(big_db, n)
        fill_s = time.perf_counter() - t0
        ours = measure(big_db, big, samples)
        baseline = measure(small_db, fill(small_db, small), samples)
    reduced = "" if mode == "full" else f"{mode} mode: {n:,} stored, not 100,000"
    labels = {
        "newest": "newest 50",
        "status": "status=FAILED",
        "definition": "name=expense_claim",
        "deep": "a page 90% back",
    }
    rows = []
    for key, label in labels.items():
        p50, ref = ours[key]["p50_ms"], baseline[key]["p50_ms"]
        rows.append(
            Row(
                name=f"6. dashboard: GET / ({label}, counts) with {n:,} stored",
                ours=p50,
                baseline=ref,
                unit=f"ms p50 (vs {small:,} stored)",
                ratio=p50 / ref,
                target=f"p50 < {TARGET_MS:.0f} ms",
                met=p50 < TARGET_MS,
                note=reduced,
                details={
                    "stored": n,
                    "fill_seconds": fill_s,
                    "ours": ours[key],
                    "baseline": baseline[key],
                },
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for row in run("quick" if args.quick else "full"):
        print(
            f"{row.name}: {row.ours:.1f} {row.unit}, baseline {row.baseline:.1f}, "
            f"ratio {row.ratio:.2f}, {'met' if row.met else 'missed'} {row.note}"
        )


if __name__ == "__main__":
    main()
