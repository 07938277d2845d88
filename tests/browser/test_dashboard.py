"""The live dashboard in a real headless Chromium, against a running platform."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from kafka_saga.bus.follow import read_topic
from kafka_saga.core.contracts import REINJECTED_HEADER, headers_dict

from ..integration.test_saga import order, submit
from ..support.burst import burst_orders, write_with_foreign_client
from ..support.platform import RunningPlatform, eventually

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian package 'chromium')"),
]


@contextlib.asynccontextmanager
async def dashboard(playwright_api, url: str):
    """The dashboard page, loaded in a fresh headless Chromium."""
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(url + "/")
            await page.wait_for_selector("body[data-ready='1']", timeout=20000)
            yield page
        finally:
            await browser.close()


async def test_an_order_appears_and_reaches_its_terminal_state_on_the_page(platform, bus):
    playwright_api = pytest.importorskip("playwright.async_api", reason="playwright not installed")
    await platform.start("orchestrator", "inventory", "inventory", "tracker", "aggregator", "dlq", "query")
    async with dashboard(playwright_api, platform.url) as page:
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
        # the guarantee in force, shown in the header
        expected = "at-least-once"  # `auto` on Tansu, which has no transactions
        assert await page.inner_text("#processing") == expected
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


BURST = 3000
BOUND = 20
PANEL = """() => ({
    inflight: document.getElementById("inflight").textContent,
    limit: document.getElementById("inflight-limit").textContent,
    peak: document.getElementById("inflight-peak").textContent,
    paused: [...document.querySelectorAll("#paused .pill")].map((p) => p.textContent),
    pausedText: document.getElementById("paused").textContent,
    lag: Object.fromEntries([...document.querySelectorAll("#lag tbody tr")].map(
        (tr) => [tr.cells[0].textContent, Number(tr.cells[1].textContent)])),
    approved: document.getElementById("n-approved").textContent,
})"""


async def test_the_backpressure_panel_shows_the_bound_the_pauses_and_the_lag_of_a_burst(settings, bus):
    playwright_api = pytest.importorskip("playwright.async_api", reason="playwright not installed")
    running = RunningPlatform(replace(settings, max_in_flight=BOUND))
    try:
        await running.start("orchestrator", "inventory", "inventory", "tracker", "aggregator", "dlq", "query")
        async with dashboard(playwright_api, running.url) as page:
            idle = await page.evaluate(PANEL)
            assert idle["limit"] == str(BOUND) and idle["inflight"] == "0", idle
            assert idle["pausedText"] == "none" and idle["paused"] == [], idle

            batch = burst_orders(BURST, tag="page")
            writing = asyncio.create_task(asyncio.to_thread(
                write_with_foreign_client, bus.bootstrap, bus.topics.commands, batch))
            seen: list[dict] = []
            shot = False
            deadline = time.monotonic() + 90
            while True:
                panel = await page.evaluate(PANEL)
                seen.append(panel)
                if panel["paused"] and panel["lag"].get("orchestrator", 0) > 0 and not shot:
                    ARTIFACTS.mkdir(exist_ok=True)
                    await page.screenshot(path=str(ARTIFACTS / "dashboard-backpressure.png"),
                                          full_page=True)
                    shot = True
                if writing.done():
                    _, orders = await running.get("/orders?limit=1")
                    if orders["by_status"].get("approved", 0) >= BURST:
                        break
                assert time.monotonic() < deadline, (
                    f"the burst did not drain within 90 s; last panel {panel}, "
                    f"by status {orders['by_status'] if writing.done() else 'writing'}")
                await asyncio.sleep(0.1)
            await writing

            # what the page showed during the burst: real values, read from the page
            assert {p["limit"] for p in seen} == {str(BOUND)}, {p["limit"] for p in seen}
            counts = [int(p["inflight"]) for p in seen]
            assert min(counts) >= 0 and max(counts) > 0, counts
            paused = [p["paused"] for p in seen if p["paused"]]
            assert paused, "no paused partition was ever shown during the burst"
            assert all(re.fullmatch(re.escape(bus.topics.commands) + r":\d+", name)
                       for names in paused for name in names), paused[:5]
            assert all(p["pausedText"] == ("".join(p["paused"]) or "none") for p in seen), seen[:5]
            lags = [p["lag"].get("orchestrator", 0) for p in seen]
            assert max(lags) > 0, "the orchestrator's lag never showed above 0 on the page"
            assert shot and (ARTIFACTS / "dashboard-backpressure.png").stat().st_size > 10_000

            # every order ended (approved), and the page comes back to rest
            _, orders = await running.get("/orders?limit=1")
            by_status = orders["by_status"]
            assert by_status.get("approved") == BURST == orders["total"], orders
            assert not any(n for s, n in by_status.items() if s != "approved"), orders

            async def at_rest() -> dict | None:
                panel = await page.evaluate(PANEL)
                ok = (panel["approved"] == str(BURST) and panel["inflight"] == "0"
                      and panel["pausedText"] == "none" and panel["lag"].get("orchestrator") == 0)
                return panel if ok else None

            rest = await eventually(at_rest, timeout=15, interval=0.2, what="the panel at rest")
            assert rest["limit"] == str(BOUND) and int(rest["peak"]) >= max(counts), rest
    finally:
        await running.stop()


LAYOUT = """() => {
    const main = document.querySelector("main").getBoundingClientRect();
    const rows = {};
    for (const s of document.querySelectorAll("main > section")) {
        const r = s.getBoundingClientRect();
        (rows[Math.round(r.top)] ||= []).push({id: s.id, left: r.left, right: r.right});
    }
    return {scroll: document.documentElement.scrollWidth - document.documentElement.clientWidth,
            main: {left: main.left, right: main.right}, rows: Object.values(rows)};
}"""


async def test_an_operator_follows_an_order_and_reinjects_a_dead_letter(settings, bus):
    playwright_api = pytest.importorskip("playwright.async_api", reason="playwright not installed")
    running = RunningPlatform(replace(settings, admin_token="operator-token"))
    try:
        await running.start("orchestrator", "inventory", "tracker", "aggregator", "dlq", "query")
        async with dashboard(playwright_api, running.url) as page:
            # the layout uses the width: no horizontal scroll, every row of panels full
            layout = await page.evaluate(LAYOUT)
            assert layout["scroll"] == 0, layout
            for row in layout["rows"]:
                assert min(p["left"] for p in row) <= layout["main"]["left"] + 24, (row, layout["main"])
                assert max(p["right"] for p in row) >= layout["main"]["right"] - 24, (row, layout["main"])

            flaky = order(user="client51", payment_errors="2")
            broken = order(user="client52", payment_errors="10")
            await submit(bus, flaky, broken)
            await page.locator(f"#orders tbody tr[data-order='{broken.snapshot.order_id}'] td.s-failed").wait_for(timeout=60000)
            await page.locator(f"#orders tbody tr[data-order='{flaky.snapshot.order_id}'] td.s-approved").wait_for(timeout=60000)

            # click an order: its saga timeline, each step with its time and its retries
            await page.click(f"#orders tbody tr[data-order='{flaky.snapshot.order_id}']")
            items = page.locator("#timeline .timeline li")
            await items.nth(4).wait_for(timeout=10000)
            steps = await items.evaluate_all("(lis) => lis.map((li) => li.innerText.replace(/\\s+/g, ' '))")
            assert [s.split(" · ")[0].split(" ", 2)[-1] for s in steps] == [
                "Created", "Approved", "Approved", "Approved", "Approved"], steps
            payment = next(s for s in steps if "Payment" in s)
            assert "2 retries" in payment and re.search(r"\d+ ms$", payment), steps
            assert flaky.saga_id in await page.inner_text("#timeline")
            # its trace id: the one the orchestrator started (the command carried none)
            shown = await page.locator("#timeline .kv code").inner_text()
            served = await page.evaluate(
                "(id) => fetch('/orders/' + id).then((r) => r.json()).then((o) => o.trace_id)",
                flaky.snapshot.order_id)
            assert re.fullmatch(r"[0-9a-f]{32}", shown) and shown == served, (shown, served)

            # the step latency panel: each step of the last minute, with its percentiles
            await page.locator("#steps tbody tr", has_text="Payment").wait_for(timeout=10000)
            cells = await page.locator("#steps tbody tr", has_text="Payment").locator("td").all_inner_texts()
            assert cells[0] == "Payment" and int(cells[1]) >= 2 and float(cells[4]) >= float(cells[2]), cells

            # a dead letter, re-injected from the page with the admin token
            letter = page.locator("#dlq tbody tr", has_text="payment_retries_exhausted")
            await letter.wait_for(timeout=30000)
            await page.fill("#admin-token", "operator-token")
            await letter.locator("button.reinject").click()
            await page.locator("#dlq-result", has_text="re-injected 1").wait_for(timeout=30000)
            at = await letter.get_attribute("data-at")

            async def reinjected() -> bool:
                found: list = []
                await read_topic(bus, bus.topics.commands, found.append, 30)
                return any(r.key == broken.key and REINJECTED_HEADER in headers_dict(r.headers) for r in found)

            await eventually(reinjected, timeout=30, what="the re-injected command on orders.commands")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard-operator.png"), full_page=True)
            assert (ARTIFACTS / "dashboard-operator.png").stat().st_size > 10_000
            # a wrong token is refused, and the page says so
            await page.fill("#admin-token", "wrong")
            await page.locator(f"#dlq tbody tr[data-at='{at}'] button.reinject").click()
            await page.locator("#dlq-result", has_text="refused: 403").wait_for(timeout=10000)
    finally:
        await running.stop()
