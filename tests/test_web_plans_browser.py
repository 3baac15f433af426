"""An agent's plan on the dashboard, in a real headless Chromium (as tests/test_web_browser.py):
a real `statesaga serve` process running the plan's tools in-process over a SQLite file. The
agent starts the plan and revises it over the HTTP API; a person sees the current plan, each
version and what it changed, and the approval card of the exact call; an approval of the call
before the revision is refused, the one of the call shown is taken, once.

Set STATESAGA_SCREENSHOTS=DIR to keep the pictures of the approval screen and the versions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("selenium", reason="the browser tests need selenium (the test extra)")
pytest.importorskip("starlette", reason="the dashboard needs the ui extra")

from browser_helpers import (  # noqa: E402
    LIMIT,
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

pytestmark = [pytest.mark.slow]
__all__ = ["browser"]  # the module's fixture, shared

ROOT = Path(__file__).resolve().parents[1]
TRIP = ROOT / "examples" / "plans" / "trip.yaml"
TOOLS = "statesaga.examples.agent_tools"
PATCH = {
    "base_version": 1,
    "replace": [
        {
            "id": "payment",
            "tool": "pay",
            "depends_on": ["flight", "hotel", "car", "note"],
            "args": {"amount": 91000, "currency": "EUR", "reference": "trip-alice"},
            "title": "pay the lower price",
        },
    ],
    "remove": ["confirm"],
    "add": [
        {
            "id": "itinerary2",
            "tool": "write_note",
            "depends_on": ["payment"],
            "args": {"title": "Lisbon", "text": "Plaza"},
        }
    ],
}


class Server:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def plan(self, wf_id: str) -> dict[str, Any]:
        status, doc = self.call("GET", f"/api/plans/{wf_id}")
        assert status == 200, doc
        return dict(doc)

    def wait(self, wf_id: str, cond: Callable[[dict[str, Any]], bool], what: str) -> Any:
        deadline = time.monotonic() + LIMIT
        while True:
            doc = self.plan(wf_id)
            if cond(doc):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"{wf_id}: gave up waiting for {what}: {doc}")
            time.sleep(0.1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STATESAGA_")},
        "STATESAGA_TOKEN": TOKEN,
        "STATESAGA_TOOLS_LEDGER": str(tmp_path / "tools.jsonl"),
    }
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            *statesaga_command(),
            "serve",
            "--store",
            f"sqlite:///{tmp_path / 'plans.db'}",
            "--queue",
            "inline://",
            "--handlers",
            TOOLS,
            "--port",
            str(port),
            "--create",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_served(base, proc)
        yield Server(base)
    finally:
        _stop([proc])
        log.close()
        sys.stderr.write((tmp_path / "server.log").read_text(errors="replace")[-3000:])


def shoot(driver: WebDriver, element_id: str, name: str) -> None:
    """One part of the page (STATESAGA_SCREENSHOTS=DIR)."""
    target = os.environ.get("STATESAGA_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        element = driver.find_element(By.ID, element_id)
        driver.execute_script("arguments[0].scrollIntoView()", element)
        element.screenshot(str(Path(target) / f"{name}.png"))


def body_text(driver: WebDriver) -> str:
    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except Exception:  # the page is being replaced (the form's answer): ask again
        return ""


def card_args(driver: WebDriver) -> dict[str, Any]:
    text = driver.find_element(By.CSS_SELECTOR, "#approve-payment pre.args").text
    return dict(json.loads(text))


def test_a_revised_plan_shows_its_versions_and_approves_the_exact_call(
    server: Server, browser: WebDriver, tmp_path: Path
) -> None:
    plan = yaml.safe_load(TRIP.read_text(encoding="utf-8"))
    status, doc = server.call(
        "POST", "/api/plans", {"plan": plan, "by": "agent", "session_id": "alice"}
    )
    assert status == 201, doc
    wf_id = doc["id"]
    first = server.wait(wf_id, lambda d: d["approvals"], "the payment's approval request")
    old_hash = first["approvals"][0]["hash"]

    login(browser, server.base)
    browser.get(f"{server.base}/workflows/{wf_id}")
    wait_page(browser, lambda d: d.find_elements(By.ID, "approve-payment"), "the approval card")
    assert card_args(browser)["amount"] == 98000
    assert [
        li.get_attribute("id")
        for li in browser.find_elements(By.CSS_SELECTOR, "#plan-versions > li")
    ] == ["plan-v1"]
    assert "started with 8 items" in text_of(browser, "plan-v1")

    # The agent lowers the payment, drops the email and adds a note: version 2.
    status, revised = server.call(
        "POST", f"/api/plans/{wf_id}/revise", {"patch": PATCH, "by": "agent"}
    )
    assert status == 202, revised
    new_hash = revised["approvals"][0]["hash"]
    assert new_hash != old_hash
    # The page follows the plan by itself (its live part), to version 2.
    wait_page(browser, lambda d: d.find_elements(By.ID, "plan-v2"), "version 2 on the page")
    v2 = text_of(browser, "plan-v2")
    browser.get(f"{server.base}/workflows/{wf_id}")  # the heading is outside the live part
    assert "trip_for_alice plan v2" in browser.find_element(By.TAG_NAME, "h1").text
    assert "by agent" in v2 and "current" in v2
    assert "replaced payment: args.amount 98000 → 91000; title " in v2
    assert 'removed confirm: send_email {"text": "Your trip to Lisbon is booked."' in v2
    assert 'added itinerary2: write_note {"text": "Plaza", "title": "Lisbon"}, after payment' in v2
    rows = browser.find_elements(By.CSS_SELECTOR, "#plan-items tbody tr")
    assert [r.get_attribute("data-item") for r in rows] == [
        "search",
        "flight",
        "hotel",
        "car",
        "note",
        "payment",
        "itinerary",
        "itinerary2",
    ]
    assert "WAITING for approval" in text_of(browser, "plan-items")
    assert card_args(browser)["amount"] == 91000
    card = text_of(browser, "approve-payment")
    assert f"hash {new_hash}" in card and "plan version 2" in card
    assert "changed in v2 by agent: args.amount 98000 → 91000" in card
    diagram = browser.find_element(By.ID, "diagram-1").get_attribute("innerHTML") or ""
    assert "plan v2; removed: confirm" in diagram and "replaced in v2" in diagram
    # The whole plan as each version had it, one click away.
    browser.find_element(By.CSS_SELECTOR, "#plan-v1 details summary").click()
    assert '"amount": 98000' in text_of(browser, "plan-v1")
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, "plan-page")
    shoot(browser, "plan", "plan-versions")
    shoot(browser, "actions", "plan-approval")

    # A person who read the card before the revision approves what they read: refused.
    browser.execute_script(
        "document.querySelector('#approve-payment input[name=hash]').value = arguments[0]",
        old_hash,
    )
    browser.find_element(By.ID, "approve-payment-yes").click()
    wait_page(
        browser,
        lambda d: "does not match" in body_text(d),
        "the refusal",
    )
    body = body_text(browser)
    assert "plan version 2" in body and "read the request again" in body
    assert server.plan(wf_id)["approvals"][0]["hash"] == new_hash  # still open

    browser.get(f"{server.base}/workflows/{wf_id}")
    wait_page(browser, lambda d: d.find_elements(By.ID, "approve-payment-yes"), "the card again")
    browser.find_element(By.ID, "approve-payment-yes").click()
    wait_page(browser, lambda d: "Approved: the item runs" in text_of(d, "flash"), "approved")
    wait_page(browser, lambda d: text_of(d, "status") == "COMPLETED", "the plan completed")
    assert not browser.find_elements(By.ID, "approve-payment")
    done = server.plan(wf_id)
    payment = next(i for i in done["items"] if i["id"] == "payment")
    assert payment["approval"] == "approved by web:alice"
    # Taken once: the same approval again is refused, over the API as on the page.
    again = server.call(
        "POST", f"/api/plans/{wf_id}/approve/payment", {"hash": new_hash, "by": "eve"}
    )
    assert again[0] == 409 and "already approved by web:alice" in again[1]["error"], again
    calls = [json.loads(line) for line in (tmp_path / "tools.jsonl").read_text().splitlines()]
    paid = [c["args"]["amount"] for c in calls if c["step"] == "payment"]
    assert paid == [91000]
    assert "confirm" not in {c["step"] for c in calls}
    screenshot(browser, "plan-completed")
