"""The lift page in a real headless Chromium (Debian's `chromium`, driven by Playwright),
with JavaScript off: the real API served by uvicorn, lifecycle instances and conversions in
its database (the hand table's first row, a small automation and one with no holdout).
Sign in, follow the nav link, see a card per automation, the rate bars and the interval
drawn where the figures say, and "not enough data" where the sample is small."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from stripe_lifecycle.api.charts import BAR_COLOR
from stripe_lifecycle.api.lift_cards import HELD_OUT_COLOR, INTERVAL_COLOR
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker

from .browser_helpers import CHROMIUM, CHROMIUM_FLAGS, CHROMIUM_ONLY, boxes, pixel_colours
from .conftest import SUPPORT_KEY, app_settings, free_port, serving
from .lift_helpers import NOW, api_rows

pytestmark = CHROMIUM_ONLY


async def test_the_lift_cards_in_chromium(sqlite_url: str, tmp_path: Path) -> None:
    # No Temporal behind the API: the lift page does not need it, the client is lazy.
    settings = app_settings(sqlite_url, f"127.0.0.1:{free_port()}", "tq-lift-browser")
    engine = create_engine(sqlite_url)
    try:
        await api_rows().insert(create_sessionmaker(engine))
        async with serving(settings) as base_url, async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS
            )
            context = await browser.new_context(
                java_script_enabled=False, viewport={"width": 1280, "height": 900}
            )
            page = await context.new_page()
            since = (NOW - timedelta(days=30)).date().isoformat()
            await page.goto(f"{base_url}/dashboard/lift?since={since}")
            assert page.url == f"{base_url}/dashboard/login"
            await page.get_by_label("API key").fill(SUPPORT_KEY)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{base_url}/dashboard")
            # The overview links to the lift page; the range is then picked in its form.
            assert await page.get_by_role("link", name="Lift").get_attribute("href") == (
                "/dashboard/lift"
            )
            await page.goto(f"{base_url}/dashboard/lift")
            await page.get_by_label("From").fill(since)
            await page.get_by_role("button", name="Show").click()
            await page.wait_for_url(f"{base_url}/dashboard/lift?since={since}&until=*")
            await page.get_by_role("heading", name="Lift against the holdout").wait_for()

            # One card per automation, by lifecycle then name.
            cards = page.locator("article.lift-card")
            assert await cards.evaluate_all("cards => cards.map(c => c.dataset.status)") == [
                "ok",
                "no_holdout",
                "not_enough_data",
            ]
            dunning = page.locator("#lift-dunning-dunning-default")
            assert "Lift +4 pts (+50% relative)" in await dunning.inner_text()
            assert "−1.7 pts to +9.7 pts" in await dunning.inner_text()
            chart = dunning.get_by_role(
                "img", name="Conversion rate: treated against held out (dunning-default)"
            )
            box = await chart.bounding_box()
            assert box is not None and box["width"] > 400 and box["height"] > 80

            # The bars: 12% treated fills the span, 8% held out two thirds of it.
            treated, held_out = await boxes(page, "#lift-dunning-dunning-default-chart rect.bar")
            assert held_out["width"] == pytest.approx(treated["width"] * 8 / 12, rel=0.02)
            # The interval straddles zero, the estimate inside it, right of zero.
            [low, high] = await boxes(page, "#lift-dunning-dunning-default-chart line.ci-end")
            [zero] = await boxes(page, "#lift-dunning-dunning-default-chart line.zero")
            [estimate] = await boxes(page, "#lift-dunning-dunning-default-chart circle.estimate")
            centre = estimate["x"] + estimate["width"] / 2
            assert low["x"] < zero["x"] < centre < high["x"]
            # 0 sits 1.69/(1.69 + 9.69) of the way from the low end to the high end.
            share = (zero["x"] - low["x"]) / (high["x"] - low["x"])
            assert share == pytest.approx(0.0169 / 0.1138, abs=0.02)

            small = page.locator("#lift-winback-winback-default")
            text = await small.inner_text()
            assert "Not enough data" in text and "10 customers (30 needed)" in text
            assert await small.locator("line.ci").count() == 0
            alone = page.locator("#lift-trial-trial-default")
            assert await alone.locator(".lift-headline").inner_text() == "No holdout group"
            assert await alone.locator("line.ci").count() == 0

            # The pixels: the bars and the interval are drawn in their colours.
            shot = await dunning.locator("svg").screenshot(path=str(tmp_path / "lift.png"))
            await page.screenshot(path=str(tmp_path / "lift-page.png"), full_page=True)
            inspector = await browser.new_context()
            colours = await pixel_colours(inspector, shot)
            for colour in (BAR_COLOR, HELD_OUT_COLOR, INTERVAL_COLOR):
                assert colours.get(colour.removeprefix("#").lower(), 0) > 200, colour
            await browser.close()
    finally:
        await engine.dispose()
