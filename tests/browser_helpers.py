"""The headless Chromium of the dashboard's browser tests (the system's, through Selenium and
the system's chromedriver; nothing is downloaded), and the helpers they share: a free port,
the `statesaga` command, stopping processes, logging in, waiting on a page, screenshots
(STATESAGA_SCREENSHOTS=DIR)."""

from __future__ import annotations

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
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

TESTS = Path(__file__).parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "browser-test-token-5d1e"
LIMIT = 60.0  # seconds: a safeguard against a hung test, not a measurement


def statesaga_command() -> list[str]:
    script = Path(sys.executable).with_name("statesaga")
    return [str(script)] if script.exists() else [sys.executable, "-m", "statesaga.cli"]


def wait_served(base: str, server: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    """Until `statesaga serve` at `base` answers (failing at once if it exited)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            urllib.request.urlopen(base + "/api/workflows", timeout=1).close()
            return
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("statesaga serve did not answer") from None
            time.sleep(0.1)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    yield from chromium(1700)


def chromium(width: int) -> Iterator[WebDriver]:
    """The system Chromium, headless, `width` px wide, for one module's tests; skipped without
    it (failed under CI, which installs it)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        message = "needs the system Chromium: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--window-size={width},1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_page(driver: WebDriver, cond: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(driver, LIMIT, poll_frequency=0.1).until(cond, message=what)


def text_of(driver: WebDriver, element_id: str) -> str:
    try:
        return str(driver.find_element(By.ID, element_id).text)
    except Exception:  # swapped out by the live update between find and read: ask again
        return ""


def login(driver: WebDriver, base: str) -> None:
    driver.get(base + "/login")
    driver.find_element(By.ID, "login-user").send_keys("alice")
    driver.find_element(By.ID, "login-token").send_keys(TOKEN)
    driver.find_element(By.ID, "login-submit").click()
    # The live update may swap the header between a find and a read: ask until it says so.
    wait_page(driver, lambda d: text_of(d, "user") == "alice", "signed in as alice")


def screenshot(driver: WebDriver, name: str) -> None:
    target = os.environ.get("STATESAGA_SCREENSHOTS")
    if not target:
        return
    height = int(driver.execute_script("return document.body.scrollHeight"))
    driver.set_window_size(1700, min(height + 200, 4000))
    Path(target).mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(Path(target) / f"{name}.png"))
    driver.set_window_size(1700, 1000)
