"""The live dashboard in a real headless Chromium, against a running platform."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ..integration.test_saga import order, submit

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian package 'chromium')"),
]


async def test_an_order_appears_and_reaches_its_terminal_state_on_the_page(platform, bus):
    playwright_api = pytest.importorskip("playwright.async_api", reason="playwright not installed")
    await platform.start("orchestrator", "tracker", "aggregator", "dlq", "query")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(platform.url + "/")
            await page.wait_for_selector("body[data-ready='1']", timeout=20000)
            command = order(user="client42", item="latte", quantity=2)
            await submit(bus, command)
            row = page.locator("#orders tbody tr", has_text=command.snapshot.order_id)
            await row.wait_for(timeout=60000)
            await page.locator("#orders tbody tr", has_text=command.snapshot.order_id).locator(
                "td.s-approved").wait_for(timeout=60000)
            assert "Approved:Finalize" in await row.inner_text()
            await page.fill("#search", "client42")
            await page.locator("#aggregates tbody tr", has_text="client42").wait_for(timeout=30000)
            approved = await page.inner_text("#n-approved")
            assert int(approved) >= 1
            assert await page.inner_text("#breaker") == "closed"
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
        finally:
            await browser.close()
