"""The operator's view of a real fleet, in a real headless Chromium at 1400 px: two live
`statesaga worker` processes on RQ and a real redis-server (the session fixture), one
`statesaga serve`. The workers page and /api/queues show what Redis holds; a saga whose worker
was SIGKILLed shows as stuck with its heartbeat age; a compensated saga's timeline.

STATESAGA_SCREENSHOTS=DIR keeps the pictures (workers.png, stuck.png, timeline.png).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("selenium", reason="the browser tests need selenium (the test extra)")
pytest.importorskip("starlette", reason="the dashboard needs the ui extra")
redis = pytest.importorskip("redis")

from browser_helpers import chromium, statesaga_command  # noqa: E402
from process_helpers import free_port as _free_port  # noqa: E402
from process_helpers import stop as _stop  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TESTS = Path(__file__).parent
TOKEN = "fleet-test-token-77a1"
LIMIT = 60.0  # seconds: a safeguard against a hung test, not a measurement
WIDTH = 1400


@dataclass
class Fleet:
    base: str
    redis_url: str
    queue: str
    store_path: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def start(self, name: str, data: dict[str, Any]) -> str:
        return str(self.api("POST", "/api/workflows", {"definition": name, "input": data})["id"])

    def until(self, cond: Callable[[], Any], what: str, limit: float = LIMIT) -> Any:
        deadline = time.monotonic() + limit
        while True:
            value = cond()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def fleet(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(redis_url, tmp_path_factory.mktemp("fleet"), 2) as f:
        yield f


@pytest.fixture
def doomed_fleet(redis_url: str, tmp_path: Path) -> Iterator[Fleet]:
    """A fleet of its own, for a test that kills its worker."""
    with running_fleet(redis_url, tmp_path, 1) as f:
        yield f


@contextmanager
def running_fleet(redis_url: str, tmp: Path, count: int) -> Iterator[Fleet]:
    defs = tmp / "definitions"
    defs.mkdir()
    shutil.copy(TESTS / "web_order.yaml", defs)
    shutil.copy(str(files("statesaga.examples") / "trip.yaml"), defs)
    store_url = f"sqlite:///{tmp / 'fleet.db'}"
    queue = f"fleet-{uuid.uuid4().hex[:8]}"
    queue_url = redis_url.replace("redis://", "rq://", 1) + f"?queue={queue}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "STATESAGA_TOKEN": TOKEN,
    }
    logs = [open(tmp / f"p{i}.log", "wb") for i in range(count + 1)]  # noqa: SIM115
    workers = [
        subprocess.Popen(
            [
                *statesaga_command(),
                "worker",
                "--queue",
                queue_url,
                "--store",
                store_url,
                "--handlers",
                "web_handlers,statesaga.examples.trip_handlers",
                "--with-scheduler",
                "--heartbeat",
                "1",
                "--name",
                f"{queue}-worker-{i}",  # a worker's name is unique on its Redis
            ],
            stdout=logs[i],
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
        for i in range(count)
    ]
    port = _free_port()
    server = subprocess.Popen(
        [*statesaga_command(), "serve", "--store", store_url, "--queue", queue_url,
         "--definitions", str(defs), "--port", str(port), "--handlers", "web_handlers",
         "--create"],
        stdout=logs[count], stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    f = Fleet(f"http://127.0.0.1:{port}", redis_url, queue, tmp / "fleet.db", workers)
    try:
        f.until(lambda: _answers(f.base), "statesaga serve")
        f.until(lambda: len(f.api("GET", "/api/workers")["workers"]) == count, "live workers")
        yield f
    finally:
        _stop([*workers, server])
        for i, log in enumerate(logs):
            log.close()
            sys.stderr.write(
                f"--- p{i} ---\n{(tmp / f'p{i}.log').read_text(errors='replace')[-2000:]}\n"
            )


def _status(fleet: Fleet, wf_id: str) -> str:
    return str(fleet.api("GET", f"/api/workflows/{wf_id}")["status"])


def _answers(base: str) -> bool:
    try:
        urllib.request.urlopen(base + "/api/workflows", timeout=1).close()
        return True
    except (urllib.error.URLError, ConnectionError):
        return False


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    yield from chromium(WIDTH)


def screenshot(driver: WebDriver, name: str) -> None:
    target = os.environ.get("STATESAGA_SCREENSHOTS")
    if not target:
        return
    height = int(driver.execute_script("return document.body.scrollHeight"))
    driver.set_window_size(WIDTH, min(height + 150, 5000))
    Path(target).mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(Path(target) / f"{name}.png"))
    driver.set_window_size(WIDTH, 1000)


def cells(driver: WebDriver, table: str, attr: str) -> dict[str, str]:
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr[data-{attr}]")
    return {r.get_attribute(f"data-{attr}") or "": r.text for r in rows}


def test_the_workers_page_shows_two_live_workers_and_the_queue_depth_redis_holds(
    fleet: Fleet, browser: WebDriver
) -> None:
    # Two slow sagas keep both workers busy; two more wait in the queue.
    ids = [fleet.start("web_order", {"delay": 6}) for _ in range(4)]
    conn = redis.Redis.from_url(fleet.redis_url)
    key = f"rq:queue:{fleet.queue}"

    def settled() -> dict[str, Any] | None:
        workers = fleet.api("GET", "/api/workers")["workers"]
        queues = fleet.api("GET", "/api/queues")["queues"]
        depth = conn.llen(key)
        busy = [w for w in workers if w["state"] == "busy" and w["workflow_id"]]
        if len(busy) == 2 and depth >= 1 and queues[0]["depth"] == depth:
            return {"workers": workers, "queue": queues[0], "depth": depth}
        return None

    seen = fleet.until(settled, "both workers busy and jobs waiting")
    assert {w["workflow_id"] for w in seen["workers"]} <= set(ids)
    assert {w["step"] for w in seen["workers"]} == {"reserve"}
    assert all(w["host"] and w["pid"] and w["last_beat"] for w in seen["workers"])
    assert seen["queue"]["scheduler"], "a worker started --with-scheduler holds the lock"

    browser.get(fleet.base + "/workers")
    depth_cell = browser.find_element(
        By.CSS_SELECTOR, f'#queues tr[data-queue="{fleet.queue}"] td[data-field="depth"]'
    )
    shown = int(depth_cell.text)
    assert (
        shown == conn.llen(key) or abs(shown - conn.llen(key)) <= 1
    )  # a job may move between reads
    rows = cells(browser, "workers", "worker")
    assert set(rows) == {f"{fleet.queue}-worker-0", f"{fleet.queue}-worker-1"}
    assert all("busy" in text and "reserve" in text for text in rows.values())
    screenshot(browser, "workers")
    for wf_id in ids:
        fleet.until(lambda w=wf_id: _status(fleet, w) == "COMPLETED", f"{wf_id} completed")
    assert conn.llen(key) == 0
    assert fleet.api("GET", "/api/queues")["queues"][0]["depth"] == 0


def test_a_saga_whose_worker_was_killed_shows_stuck_with_its_heartbeat_age(
    doomed_fleet: Fleet, browser: WebDriver
) -> None:
    fleet = doomed_fleet
    wf_id = fleet.start("web_order", {"delay": 120})

    def runner() -> dict[str, Any] | None:
        for w in fleet.api("GET", "/api/workers")["workers"]:
            if w["workflow_id"] == wf_id:
                return dict(w)
        return None

    worker = fleet.until(runner, "a worker running the slow saga")
    os.kill(worker["pid"], signal.SIGKILL)
    health = fleet.until(
        lambda: (h := fleet.api("GET", f"/api/workflows/{wf_id}/health"))["stuck"] and h,
        "the saga shown stuck (no heartbeat for 30 s)",
        limit=90,
    )
    assert health["status"] == "RUNNING" and health["heartbeat_age"].endswith("s")
    browser.get(f"{fleet.base}/workflows/{wf_id}")
    stuck = browser.find_element(By.ID, "stuck").text
    assert "Stuck" in stuck and "statesaga recover" in stuck and "--timeout 30" in stuck
    assert browser.find_element(By.ID, "heartbeat-age").text.endswith(" s")
    assert TOKEN not in browser.page_source
    screenshot(browser, "stuck")
    # RQ keeps the killed worker listed as busy until its entry's TTL runs out: the page
    # says it is silent (its saga stopped beating), and does not count it as live.
    listed = {w["name"]: w for w in fleet.api("GET", "/api/workers")["workers"]}
    assert listed[worker["name"]]["state"] == "busy" and listed[worker["name"]]["silent"]
    browser.get(fleet.base + "/workers")
    row = browser.find_element(By.CSS_SELECTOR, f'#workers tr[data-worker="{worker["name"]}"]')
    assert row.get_attribute("data-state") == "silent"
    assert "no heartbeat for over 30 s" in browser.find_element(By.ID, "silent-workers").text
    screenshot(browser, "workers-silent")
    # the page's recover command resumes it: the lost attempt is timed out, then retried
    fleet.api("POST", f"/api/workflows/{wf_id}/cancel?force=true", {"by": "olga"})


def test_the_timeline_of_a_compensated_saga_in_chromium(fleet: Fleet, browser: WebDriver) -> None:
    trip = {"origin": "TPE", "destination": "NRT", "nights": 3, "amount": 1250, "email": "a@b.c",
            "flaky": "reserve_hotel", "fail_at": "charge_payment"}  # fmt: skip
    wf_id = fleet.start("trip_booking", trip)
    fleet.until(
        lambda: fleet.api("GET", f"/api/workflows/{wf_id}")["status"] == "COMPENSATED",
        "the trip compensated",
    )
    browser.get(f"{fleet.base}/workflows/{wf_id}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
    phases = [
        (r.get_attribute("data-step"), r.get_attribute("data-phase"), r.get_attribute("data-ended"))
        for r in rows
        if r.get_attribute("data-phase") != "queued"
    ]
    assert phases == [
        ("reserve_flight", "attempt 1", "succeed"),
        ("reserve_hotel", "attempt 1", "fail"),
        ("reserve_hotel", "backoff", "dispatch"),
        ("reserve_hotel", "attempt 2", "succeed"),
        ("reserve_car", "attempt 1", "succeed"),
        ("charge_payment", "attempt 1", "fail"),
        ("reserve_car", "undo", "compensated"),
        ("reserve_hotel", "undo", "compensated"),
        ("reserve_flight", "undo", "compensated"),
    ], phases
    # legible at 1400 px: the diagrams' text is drawn at its own size, not shrunk to fit
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('.diagram svg text'))"
        ".map(t => t.getBoundingClientRect().height).filter(h => h > 0)"
    )
    assert sizes and min(sizes) >= 9, sizes
    screenshot(browser, "timeline")


def test_failed_jobs_are_listed_and_only_a_statesaga_job_is_requeued(fleet: Fleet) -> None:
    from statesaga.adapters.queues.rq.queue import RQQueue
    from statesaga.ports import Job

    queue = RQQueue.from_url(
        fleet.redis_url.replace("redis://", "rq://", 1) + f"?queue={fleet.queue}"
    )
    # a statesaga job whose stored workflow cannot be read fails in the worker (one whose
    # workflow is not there is only a warning); a job that is not statesaga's is refused unrun
    damaged = "WF-20990101-deadbeef"
    with sqlite3.connect(fleet.store_path) as db:
        db.execute(
            "INSERT INTO workflows (id, revision, status, created_at, doc) VALUES (?, 1, ?, 0, ?)",
            (damaged, "RUNNING", json.dumps({"id": damaged, "steps": "not a list"})),
        )
    queue.enqueue(Job("step", damaged, "reserve", 1))
    foreign = queue.rq_queue.enqueue("os.getcwd").id

    def failed() -> dict[str, dict[str, Any]]:
        listed = fleet.api("GET", "/api/queues")["failed"]
        return {j["id"]: j for j in listed} if len(listed) >= 2 else {}

    jobs = fleet.until(failed, "both jobs failed")
    mine = next(j for j in jobs.values() if j["workflow_id"] == damaged)
    assert mine["requeueable"] and f"stored {damaged}" in mine["reason"], mine
    assert not jobs[foreign]["requeueable"] and "refused by statesaga" in jobs[foreign]["reason"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        fleet.api("POST", f"/api/jobs/{foreign}/requeue", {"by": "olga"})
    assert refused.value.code == 409
    assert "not a statesaga job" in json.loads(refused.value.read())["error"]
    anonymous = urllib.request.Request(
        fleet.base + f"/api/jobs/{mine['id']}/requeue", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as nobody:
        urllib.request.urlopen(anonymous, timeout=10)
    assert nobody.value.code == 401
    assert fleet.api("POST", f"/api/jobs/{mine['id']}/requeue", {"by": "olga"}) == {
        "requeued": mine["id"]
    }
    # it ran again (and failed again: its workflow still cannot be read)
    fleet.until(
        lambda: (again := failed().get(mine["id"])) and again["failed_at"] > mine["failed_at"],
        "the requeued job run again",
    )
