"""The dashboard's segments page in a real headless Chromium, JavaScript off: sign in, follow
the nav to the segments, read each segment's members now and its entries and exits per
week (the SVG chart drawn, its columns where the rows say, its colours on screen), then
drill down to a segment's members. Membership rows are written straight into the
database, as the segment evaluation writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.async_api import async_playwright

from stripe_lifecycle.api.segment_charts import ENTRY_COLOR, EXIT_COLOR
from stripe_lifecycle.api.segments_dashboard import WEEKS, week_spans
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker

from .browser_helpers import CHROMIUM, CHROMIUM_FLAGS, CHROMIUM_ONLY, boxes, pixel_colours
from .conftest import SUPPORT_KEY, app_settings, free_port, serving
from .segment_helpers import add_changes, add_customer, add_members, entered, exited, write_segments

pytestmark = CHROMIUM_ONLY


async def test_the_segments_page_shows_members_and_weekly_entries_and_exits_in_chromium(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = app_settings(
        sqlite_url,
        f"127.0.0.1:{free_port()}",
        "tq-segments-page",
        segments=write_segments(tmp_path),
    )
    engine = create_engine(sqlite_url)
    sessionmaker = create_sessionmaker(engine)
    spans = week_spans(datetime.now(UTC))
    hour = timedelta(hours=1)
    try:
        for n, name in enumerate(("ada", "bob", "cy")):
            await add_customer(
                sessionmaker, f"cus_{name}", f"{name}@example.com", mrr_cents=4900 + n
            )
        await add_members(
            sessionmaker,
            "heavy-users",
            {"cus_ada": spans[-2][0], "cus_bob": spans[-2][0] + hour, "cus_cy": spans[-4][0]},
        )
        await add_members(sessionmaker, "past-due", {"cus_bob": spans[0][0]})
        await add_changes(
            sessionmaker,
            # Heavy users: 2 in last week, 1 three weeks before; one left this week; one
            # was already in when first evaluated (counted apart, not drawn).
            entered("cus_ada", "heavy-users", spans[-2][0], "usage.seats_used 7 → 9 (gte 8)"),
            entered("cus_bob", "heavy-users", spans[-2][0] + hour, "usage.seats_used 2 → 8"),
            entered("cus_cy", "heavy-users", spans[-4][0], "usage.seats_used 1 → 10"),
            entered("cus_dan", "heavy-users", spans[-6][0], "first evaluation", initial=True),
            exited("cus_dan", "heavy-users", spans[-1][0], "usage.seats_used 9 → 3 (gte 8)"),
            entered("cus_bob", "past-due", spans[0][0], "status active → past_due"),
        )

        async with serving(settings) as base_url, async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS
            )
            context = await browser.new_context(
                java_script_enabled=False, viewport={"width": 1280, "height": 900}
            )
            page = await context.new_page()
            await page.goto(f"{base_url}/dashboard/segments")
            assert page.url == f"{base_url}/dashboard/login"
            await page.get_by_label("API key").fill(SUPPORT_KEY)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{base_url}/dashboard")
            nav = page.get_by_role("navigation", name="Dashboard pages")
            await nav.get_by_role("link", name="Segments").click()
            await page.wait_for_url(f"{base_url}/dashboard/segments")
            await page.get_by_role("heading", name="Segments", exact=True).wait_for()

            heavy = page.locator('section[data-segment="heavy-users"]')
            assert await heavy.locator("dd.members").inner_text() == "3"
            assert await heavy.locator("dd.entered").inner_text() == "3"
            assert await heavy.locator("dd.exited").inner_text() == "1"
            past_due = page.locator('section[data-segment="past-due"]')
            assert await past_due.locator("dd.members").inner_text() == "1"
            starter = page.locator('section[data-segment="starter-3-months"]')
            assert await starter.locator("dd.members").inner_text() == "0"
            assert "Time-based" in await starter.inner_text()
            # File order.
            order = await page.locator("section.segment").evaluate_all(
                "sections => sections.map(s => s.dataset.segment)"
            )
            assert order == ["starter-3-months", "heavy-users", "past-due"]

            svg = page.get_by_role("img", name="heavy-users: entries and exits per week")
            box = await svg.bounding_box()
            assert box is not None and box["width"] > 400 and box["height"] > 100
            chart = "#segment-flow-heavy-users"
            entries = await boxes(page, f"{chart} rect.entered")
            exits = await boxes(page, f"{chart} rect.exited")
            assert len(entries) == len(exits) == WEEKS
            drawn = [i for i, b in enumerate(entries) if b["height"] > 1]
            assert drawn == [WEEKS - 4, WEEKS - 2]
            # Two customers stand twice as tall as one.
            assert abs(entries[WEEKS - 2]["height"] - 2 * entries[WEEKS - 4]["height"]) < 1.5
            assert [i for i, b in enumerate(exits) if b["height"] > 1] == [WEEKS - 1]
            # Entries rise above the axis, exits hang below it.
            [axis] = await boxes(page, f"{chart} line.axis")
            assert entries[WEEKS - 2]["y"] + entries[WEEKS - 2]["height"] <= axis["y"] + 1
            assert exits[WEEKS - 1]["y"] >= axis["y"] - 1
            await heavy.get_by_text("as a table").click()
            table = heavy.locator("table tbody tr")
            last_week = await table.nth(WEEKS - 2).locator("td").all_inner_texts()
            assert last_week == ["2", "0", "2", "0"]
            first_evaluation = await table.nth(WEEKS - 6).locator("td").all_inner_texts()
            assert first_evaluation == ["0", "0", "0", "1"]

            await page.screenshot(path=str(tmp_path / "segments.png"), full_page=True)
            shot = await svg.screenshot()
            inspector = await browser.new_context()
            colours = await pixel_colours(inspector, shot)
            assert colours.get(ENTRY_COLOR.removeprefix("#"), 0) > 300
            assert colours.get(EXIT_COLOR.removeprefix("#"), 0) > 100

            # The drill-down: the members, by customer id.
            await heavy.get_by_role("link", name="heavy-users").click()
            await page.wait_for_url(f"{base_url}/dashboard/segments/heavy-users")
            rows = page.locator("#members tbody tr")
            assert await rows.evaluate_all("rows => rows.map(r => r.dataset.customer)") == [
                "cus_ada",
                "cus_bob",
                "cus_cy",
            ]
            assert "bob@example.com" in await rows.nth(1).inner_text()
            assert "$49.01" in await rows.nth(1).inner_text()
            assert (
                "3 customers in the segment now" in await page.locator("#member-count").inner_text()
            )
            await browser.close()
    finally:
        await engine.dispose()
