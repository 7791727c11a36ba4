"""The compliance panel (infra/ops_static/panel.html, docs/operations.md) in a real headless
Chromium (Debian's ``chromium``, driven by Playwright with an explicit executable path; nothing is
downloaded at run time): a paper node replays the bundled data, the page's values equal the node's
Redis mirror and move with the replay, and its Pause button pauses risk.

Without Chromium the test is skipped, unless ``REQUIRE_BROWSER=1`` (``.ci/run`` sets it after
installing the package), when it fails."""

from __future__ import annotations

import os
import shutil
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.test_ops_api import TOKEN, paper_node  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _usd(v: str) -> str:
    d = Decimal(v).quantize(Decimal("0.01"))
    return ("-$" if d < 0 else "$") + f"{abs(d):,.2f}"


@pytest.fixture
def browser():
    if CHROMIUM is None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("REQUIRE_BROWSER=1 but no chromium executable (apt-get install chromium)")
        pytest.skip("no chromium executable (Debian package chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _until(cond, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    return cond()


def test_the_panel_shows_the_mirror_moves_with_the_replay_and_pauses_risk(paper_node, browser, tmp_path):  # noqa: F811
    base, store = paper_node
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")
    state = page.get_by_test_id("risk-state")
    assert _until(lambda: state.inner_text() == "risk ACTIVE"), state.inner_text()

    # the page's MLL floor and state are the Redis mirror's ({ns}:risk, written by risk)
    def agrees() -> bool:
        risk = store.load_risk()
        return bool(risk) and page.locator("#mll-floor").inner_text() == _usd(risk["floor"]) and \
            state.inner_text() == f"risk {risk['state']}"
    assert _until(agrees), (page.locator("#mll-floor").inner_text(), store.load_risk())
    # the rule checklist and the chart are drawn
    assert "MLL" in page.get_by_test_id("rules").inner_text()
    assert page.locator("#chart-box canvas").count() > 0

    # the replay moves: event time and the chart's last price change
    first = page.get_by_test_id("event-time").inner_text()
    assert _until(lambda: page.get_by_test_id("event-time").inner_text() != first, 15)

    # Pause with a wrong token is refused; with the token, risk pauses (page and Redis agree)
    page.fill("#token", "wrong")
    page.click("#pause")
    assert _until(lambda: "refused (401)" in page.get_by_test_id("command-result").inner_text(), 10)
    page.fill("#token", TOKEN)
    page.click("#pause")
    assert _until(lambda: page.get_by_test_id("command-result").inner_text().startswith("pause: risk REDUCING"), 10)
    assert _until(lambda: state.inner_text() == "risk REDUCING", 10)
    assert _until(lambda: store.load_risk().get("state") == "REDUCING", 10)
    assert "operator pause" in _until(lambda: page.get_by_test_id("breaches").inner_text(), 10)
    shot = Path(os.environ.get("PANEL_SCREENSHOT") or tmp_path / "panel.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert not errors, errors
