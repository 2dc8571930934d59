"""The report in a real browser: headless Chromium renders it, every section shows, no script
error, no network request, and a prompt full of markup renders as text.

Skipped where Chromium is not installed, except on CI (the CI variable set), where it fails:
CI installs chromium (see .ci/run), and a silently skipped browser test proves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import HANG_S
from html_elements import Elements

import interp
from interp.report import build_report

MARKUP = "<script>alert(1)</script><b>x</b>"
SECTION_IDS = {"model", "text", "journey", "residual", "attention", "coverage", "contributions",
               "patching", "experts", "features", "shapes", "summary"}  # fmt: skip
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    # Every host name fails to resolve: nothing can leave the machine even if asked to.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    # Console messages (uncaught script errors) go to stderr.
    "--enable-logging=stderr", "--v=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed on CI (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def open_page(chromium: str, page: Path, tmp_path: Path, *extra: str) -> dict:
    """Load `page` once: stdout, the console lines that mean a script error, and the URLs
    of every network request the page made (from Chromium's NetLog: requests whose isolation
    key is the page's file:// site; the browser's own background requests have none)."""
    run_dir = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    run_dir.mkdir()
    netlog = run_dir / "netlog.json"
    run = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={run_dir / 'profile'}", f"--log-net-log={netlog}",
         *extra, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=HANG_S,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start and "file://" in e["params"].get("network_isolation_key", "")
    ]
    errors = [line for line in run.stderr.splitlines() if "Uncaught" in line]
    return {"stdout": run.stdout, "errors": errors, "requests": requests}


def test_the_checks_catch_a_bad_page(chromium, tmp_path):
    """The detectors themselves: a throwing script and a remote image are both caught."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<html><body><img src="https://example.invalid/x.png">'
        '<script>throw new Error("boom")</script></body></html>'
    )
    seen = open_page(chromium, page, tmp_path, "--dump-dom")
    assert any("Uncaught Error: boom" in line for line in seen["errors"])
    assert seen["requests"] == ["https://example.invalid/x.png"]


@pytest.mark.slow
def test_report_renders_in_chromium(chromium, smollm, tmp_path):
    trace = interp.trace(smollm, ["The capital of France is", MARKUP], max_new_tokens=2)
    page = build_report(trace, tmp_path / "report.html", model=smollm, progress=False)

    shot = tmp_path / "shot.png"
    seen = open_page(chromium, page, tmp_path, f"--screenshot={shot}", "--window-size=1280,4000")
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one
    assert seen["errors"] == [] and seen["requests"] == []

    seen = open_page(chromium, page, tmp_path, "--dump-dom")
    assert seen["errors"] == [] and seen["requests"] == []
    dom = Elements(seen["stdout"])
    assert {attrs.get("id") for tag, attrs in dom.tags if tag == "section"} == SECTION_IDS
    headings = [tag for tag, _ in dom.tags if tag == "h2"]
    assert len(headings) == len(SECTION_IDS)
    # The markup prompt is text in the rendered page: no element came out of it.
    assert MARKUP in dom.text_by_class["prompt-text"]
    assert not [tag for tag, _ in dom.tags if tag == "b"]
    # The only scripts are the views': their code once, and their data as JSON.
    scripts = [attrs for tag, attrs in dom.tags if tag == "script"]
    assert sum(a == {} for a in scripts) == 1
    assert all(a == {} or a.get("type") == "application/json" for a in scripts)
    images = [attrs for tag, attrs in dom.tags if tag == "img"]
    assert images and all(a["src"].startswith("data:image/svg+xml;base64,") for a in images)
