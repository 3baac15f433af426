"""The dashboard in a real headless Chromium (the system's, through Selenium and the system's
chromedriver; nothing is downloaded), served by a real `statesaga serve` process over a real
SQLite file, with real `statesaga worker` processes on RQ and the real Redis fixture.

Set STATESAGA_SCREENSHOTS=DIR to keep the pictures of the list and of a compensated saga.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("selenium", reason="the browser tests need selenium (the test extra)")
pytest.importorskip("starlette", reason="the dashboard needs the ui extra")

from browser_helpers import (  # noqa: E402
    LIMIT,
    TESTS,
    TOKEN,
    browser,
    login,
    screenshot,
    statesaga_command,
    text_of,
    wait_page,
    wait_served,
)
from process_helpers import free_port as _free_port  # noqa: E402
from process_helpers import stop as _stop  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

pytestmark = [pytest.mark.redis, pytest.mark.slow]
__all__ = ["browser"]  # the shared fixture


@dataclass
class Stack:
    base: str
    store_url: str
    tmp: Path

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

    def start(self, name: str, data: dict[str, Any], session: str | None = None) -> str:
        doc = self.api(
            "POST", "/api/workflows", {"definition": name, "input": data, "session_id": session}
        )
        return str(doc["id"])

    def doc(self, wf_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/workflows/{wf_id}"))

    def wait(self, wf_id: str, cond: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + LIMIT
        while True:
            doc = self.doc(wf_id)
            if cond(doc):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"{wf_id}: gave up waiting for {what} ({doc['status']})")
            time.sleep(0.1)

    def wait_status(self, wf_id: str, *statuses: str) -> dict[str, Any]:
        return self.wait(wf_id, lambda d: d["status"] in statuses, "/".join(statuses))


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("web")
    defs = tmp / "definitions"
    defs.mkdir()
    shutil.copy(TESTS / "web_order.yaml", defs)
    for example in ("expense.yaml", "trip.yaml"):
        shutil.copy(str(files("statesaga.examples") / example), defs)
    store_url = f"sqlite:///{tmp / 'dashboard.db'}"
    queue_url = redis_url.replace("redis://", "rq://", 1) + f"?queue=web-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "STATESAGA_TOKEN": TOKEN,
    }
    port = _free_port()
    logs = {name: open(tmp / f"{name}.log", "wb") for name in ("server", "worker-0", "worker-1")}  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [
                *statesaga_command(),
                "worker",
                "--queue",
                queue_url,
                "--store",
                store_url,
                "--handlers",
                "web_handlers,statesaga.examples.expense_handlers,statesaga.examples.trip_handlers",
                "--with-scheduler",
                "--heartbeat",
                "1",
            ],
            stdout=logs[f"worker-{i}"],
            stderr=subprocess.STDOUT,
            env=env,
        )
        for i in range(2)
    ]
    procs.append(
        subprocess.Popen(
            [
                *statesaga_command(),
                "serve",
                "--store",
                store_url,
                "--queue",
                queue_url,
                "--definitions",
                str(defs),
                "--port",
                str(port),
                "--handlers",
                "web_handlers",
                "--create",  # the workers may not have made the store yet
            ],
            stdout=logs["server"],
            stderr=subprocess.STDOUT,
            env=env,
        )
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_served(base, procs[-1])
        yield Stack(base, store_url, tmp)
    finally:
        _stop(procs)
        for name, log in logs.items():
            log.close()
            text = (tmp / f"{name}.log").read_text(errors="replace")
            sys.stderr.write(f"--- {name} ---\n{text[-3000:]}\n")
        server_log = (tmp / "server.log").read_text(errors="replace")
        assert TOKEN not in server_log  # the token never reaches a log line


def test_list_counts_and_filters(stack: Stack, browser: WebDriver) -> None:
    # Sessions of this test's own: the module's other tests share the dashboard's store and
    # may run before this one (`-p randomly`); the counts follow the list's filters.
    one, two = (f"shop-{uuid.uuid4().hex[:6]}-{n}" for n in (1, 2))
    done = [stack.start("web_order", {}, session=one) for _ in range(2)]
    trip = {"origin": "TPE", "destination": "NRT", "nights": 3, "amount": 1250, "email": "a@b.c"}
    undone = stack.start("trip_booking", {**trip, "fail_at": "charge_payment"}, session=two)
    halted = stack.start("web_order", {"fail_at": "notify"}, session=one)
    waiting = stack.start("expense_claim", {"employee": "bob", "amount": 120}, session=two)
    for wf_id in done:
        stack.wait_status(wf_id, "COMPLETED")
    stack.wait_status(undone, "COMPENSATED")
    stack.wait_status(halted, "FAILED")
    stack.wait(waiting, lambda d: d["steps"][1]["status"] == "WAITING", "the approval wait")

    browser.get(stack.base + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#workflows tbody tr")
    shown = [r.get_attribute("data-id") for r in rows]
    assert shown[:5] == [waiting, halted, undone, *reversed(done)]  # newest first
    screenshot(browser, "dashboard-list")

    def chips() -> dict[str | None, str]:
        return {
            c.get_attribute("data-status"): c.text
            for c in browser.find_elements(By.CSS_SELECTOR, "#counts a[data-status]")
        }

    browser.get(f"{stack.base}/?session={one}")
    counted = chips()
    assert counted["COMPLETED"].endswith(" 2") and counted["FAILED"].endswith(" 1")
    assert "COMPENSATED" not in counted or counted["COMPENSATED"].endswith(" 0")
    browser.get(f"{stack.base}/?session={two}")
    counted = chips()
    assert counted["COMPENSATED"].endswith(" 1") and counted["RUNNING"].endswith(" 1")

    Select(browser.find_element(By.ID, "f-status")).select_by_visible_text("COMPENSATED")
    browser.find_element(By.ID, "f-apply").click()
    wait_page(browser, lambda d: "status=COMPENSATED" in d.current_url, "the filtered list")
    assert f"session={two}" in browser.current_url
    rows = browser.find_elements(By.CSS_SELECTOR, "#workflows tbody tr")
    assert [r.get_attribute("data-id") for r in rows] == [undone]

    browser.get(stack.base + "/")
    browser.find_element(By.ID, "f-session").send_keys(two)
    browser.find_element(By.ID, "f-name").send_keys("expense_claim")
    browser.find_element(By.ID, "f-apply").click()
    wait_page(browser, lambda d: f"session={two}" in d.current_url, "the session filter")
    rows = browser.find_elements(By.CSS_SELECTOR, "#workflows tbody tr")
    assert [r.get_attribute("data-id") for r in rows] == [waiting]

    browser.get(f"{stack.base}/workflows/{undone}")
    story = browser.find_element(By.ID, "story").text
    assert "charge_payment failed" in story
    assert "reserve_car → reserve_hotel → reserve_flight" in story
    screenshot(browser, "dashboard-compensated")


def test_an_instance_page_follows_the_running_saga(stack: Stack, browser: WebDriver) -> None:
    wf_id = stack.start("web_order", {"delay": 1.2})
    browser.get(f"{stack.base}/workflows/{wf_id}")
    browser.execute_script("window.__noReload = 'still here';")
    pictures: list[str] = []
    states: list[str] = []

    def finished(d: WebDriver) -> bool:
        svg = d.execute_script(
            "var s = document.querySelector('#diagram-1 svg'); return s ? s.outerHTML : '';"
        )
        if svg and (not pictures or pictures[-1] != svg):
            pictures.append(svg)
            states.append(text_of(d, "status"))
        return text_of(d, "status") == "COMPLETED"

    wait_page(browser, finished, "the page to show COMPLETED by itself")
    assert browser.execute_script("return window.__noReload") == "still here"  # no reload
    assert len(pictures) >= 3, states  # the diagram was redrawn as the steps went on
    assert "RUNNING" in states
    steps = browser.find_elements(By.CSS_SELECTOR, "#steps tbody tr")
    assert [s.get_attribute("data-status") for s in steps] == ["COMPLETED"] * 4


def test_approve_a_waiting_expense_from_the_page(stack: Stack, browser: WebDriver) -> None:
    login(browser, stack.base)
    browser.get(stack.base + "/definitions")
    body = browser.find_element(By.TAG_NAME, "body").text
    sections = browser.find_elements(By.ID, "def-expense_claim")
    assert sections, f"no expense_claim on {browser.current_url}:\n{body[:1500]}"
    section = sections[0]
    area = section.find_element(By.NAME, "input")
    area.clear()
    area.send_keys('{"employee": "bob", "amount": 120}')
    section.find_element(By.CSS_SELECTOR, "form.start-form button").click()
    wait_page(browser, lambda d: "/workflows/WF-" in d.current_url, "the new workflow's page")
    wf_id = browser.current_url.split("/workflows/", 1)[1].split("?", 1)[0]
    wait_page(
        browser, lambda d: "waits for the signal 'approve'" in text_of(d, "story"), "the wait"
    )

    payload = browser.find_element(By.ID, "signal-payload")
    payload.clear()
    payload.send_keys('{"by": "alice"}')
    browser.find_element(By.ID, "signal-send").click()
    wait_page(browser, lambda d: text_of(d, "status") == "COMPLETED", "the paid claim")
    doc = stack.doc(wf_id)
    assert doc["results"]["pay"]["approved_by"] == "alice"
    assert doc["history"][0]["by"] == "web:alice"  # who started it
    signal_by = [h["by"] for h in doc["history"] if h["trigger"] == "signal" and not h["step"]]
    assert signal_by == ["web:alice"]
    assert "web:alice sent approve" in text_of(browser, "story")


def test_force_cancel_a_running_saga(stack: Stack, browser: WebDriver) -> None:
    login(browser, stack.base)
    wf_id = stack.start("web_order", {"delay": 3})
    stack.wait(wf_id, lambda d: d["steps"][1]["status"] == "EXECUTING", "pack running")
    browser.get(f"{stack.base}/workflows/{wf_id}")
    browser.find_element(By.ID, "force-cancel").click()
    wait_page(browser, lambda d: d.find_elements(By.ID, "confirm"), "the confirmation")
    assert "compensates at once" in browser.page_source
    browser.find_element(By.ID, "confirm").click()
    wait_page(browser, lambda d: text_of(d, "status") in ("COMPENSATED", "CANCELLED"), "undone")
    doc = stack.wait_status(wf_id, "COMPENSATED")
    forced = [h for h in doc["history"] if h["trigger"] == "force_cancel"]
    assert [h["by"] for h in forced] == ["web:alice"]
    # reserve was undone at once; pack's late result was undone when it arrived.
    assert [s["status"] for s in doc["steps"][:2]] == ["COMPENSATED", "COMPENSATED"]
    assert [s["attempts"] for s in doc["steps"][2:]] == [0, 0]
    assert "force-cancelled by web:alice" in text_of(browser, "story")


def test_restart_a_halted_saga(stack: Stack, browser: WebDriver) -> None:
    login(browser, stack.base)
    flag = stack.tmp / f"broken-{uuid.uuid4().hex[:6]}"
    flag.touch()
    wf_id = stack.start("web_order", {"fail_at": "notify", "fail_file": str(flag)})
    stack.wait_status(wf_id, "FAILED")
    browser.get(f"{stack.base}/workflows/{wf_id}")
    assert "Halted" in text_of(browser, "story")
    chosen = Select(browser.find_element(By.ID, "restart-step")).first_selected_option.text
    assert chosen == "notify"
    flag.unlink()  # the fix
    browser.find_element(By.ID, "restart-reason").send_keys("the warehouse is back")
    browser.find_element(By.ID, "restart").click()
    wait_page(browser, lambda d: text_of(d, "status") == "COMPLETED", "the restarted saga")
    doc = stack.doc(wf_id)
    restart = [h for h in doc["history"] if h["trigger"] == "restart"]
    assert restart[0]["by"] == "web:alice" and "the warehouse is back" in restart[0]["detail"]
    assert [s["attempts"] for s in doc["steps"]] == [1, 1, 1, 1]  # only notify ran again
