"""Driving a page in real Chromium for the view tests: Debian's chromium and chromium-driver
through selenium (the WebDriver protocol), offline, with the console and network logged.

Skipped where they are not installed, except on CI (the CI variable set), where it fails:
CI installs them (see .ci/run), and a silently skipped browser test proves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import HANG_S

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
    # Every host name fails to resolve: nothing can leave the machine even if asked to.
    "--host-resolver-rules=MAP * ~NOTFOUND",
]  # fmt: skip


def browser():
    """A WebDriver on Debian's chromium, logging console messages and network events."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing = "selenium is not installed (pip install selenium)"
    else:
        missing = None if CHROMIUM and DRIVER else "apt-get install chromium chromium-driver"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests cannot run on CI: {missing}")
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(DRIVER))


class Page:
    """One loaded page: its views' states, and what it logged."""

    def __init__(self, driver, path: Path, timeout: float = HANG_S, views: bool = True):
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.url = driver, path.resolve().as_uri()
        driver.get_log("browser"), driver.get_log("performance")  # drop earlier pages' logs
        driver.get(self.url)
        if not views:
            return
        WebDriverWait(driver, timeout).until(
            lambda d: d.execute_script(
                "const v = document.querySelectorAll('.iv-view');"
                "return v.length > 0 && Array.from(v).every(n => n.dataset.state === 'ready'"
                " || n.dataset.state === 'failed');"
            )
        )

    def state(self, view_id: str) -> dict:
        return self.driver.execute_script("return InterpViews.views[arguments[0]].state()", view_id)

    def view(self, view_id: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, view_id)

    def errors(self) -> list[str]:
        """Console messages at error level (uncaught exceptions, console.error)."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def requests(self) -> list[str]:
        """URLs the page asked for besides itself and its data: URIs (which never leave it)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return [u for u in urls if u != self.url and not u.startswith("data:")]
