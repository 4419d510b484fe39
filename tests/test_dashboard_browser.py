"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright):
the real API served by uvicorn on a free port, a real worker on the dev server, a dunning
started by signed webhooks, weeks of recoveries recorded by the real activities. Sign in,
see the charts drawn (sizes and the screenshot's pixels), stop the dunning with the
Cancel button, with JavaScript off: the page must work without it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from playwright.async_api import async_playwright
from sqlalchemy import select, update
from sqlmodel import col
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.api.charts import BAR_COLOR, RATE_COLOR
from stripe_lifecycle.api.deps import key_fingerprint
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Message, SupportAction

from .browser_helpers import CHROMIUM, CHROMIUM_FLAGS, CHROMIUM_ONLY, boxes, pixel_colours
from .conftest import SUPPORT_KEY, app_settings, serving, temporal_address, workers
from .report_helpers import PAYMENT_FAILED, REMINDER, DunningRig, mail_activities, start_dunning
from .workflow_helpers import eventually

pytestmark = CHROMIUM_ONLY


async def record_history(rig: DunningRig, weeks: int) -> None:
    """Dunning emails and recoveries over the past weeks, written by the real mail and
    conversion activities. The mail activity stamps the wall clock, so each email is moved
    back to its week before its invoice is recovered (and credited). Each invoice fails on
    a Tuesday and is paid, if at all, on the Thursday: within one week, whatever today is;
    this week has none."""
    today = datetime.now(UTC).date()
    monday = datetime.combine(today - timedelta(days=today.weekday()), datetime.min.time(), UTC)
    for week in range(1, weeks + 1):
        sent_at = monday - timedelta(weeks=week) + timedelta(days=1, hours=12)
        for n in range(1 + week % 3):
            invoice_id = f"in_{uuid.uuid4().hex[:12]}"
            emails = [await rig.send(invoice_id, 0, PAYMENT_FAILED, "usd")]
            if n % 2:
                emails.append(await rig.send(invoice_id, 1, REMINDER, "usd"))
            async with rig.sessionmaker() as session:
                # The reminder goes out after the first email, as in a real sequence: with
                # both at one moment, which of them was "last sent" would be a coin toss.
                for order, email in enumerate(emails):
                    moment = sent_at + timedelta(hours=order)
                    await session.execute(
                        update(Message)
                        .where(col(Message.id) == email.id)
                        .values(created_at=moment, sent_at=moment)
                    )
                await session.commit()
            if n < 2 or week % 2:  # some invoices stay unpaid: the rate varies
                paid_at = int((sent_at + timedelta(days=2)).timestamp())
                amount = 1900 + 1000 * ((week + n) % 4)
                await rig.recover(invoice_id, paid_at, amount, "usd")


async def test_sign_in_see_the_charts_and_stop_a_dunning_in_chromium(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str, tmp_path: Path
) -> None:
    settings = app_settings(sqlite_url, temporal_address(dev_env), task_queue)
    engine = create_engine(sqlite_url)
    sessionmaker: SessionMaker = create_sessionmaker(engine)
    try:
        async with (
            workers(dev_env.client, settings, sessionmaker),
            serving(settings) as base_url,
            httpx.AsyncClient(base_url=base_url) as http,
            async_playwright() as playwright,
        ):
            rig = DunningRig(http, settings, sessionmaker, mail_activities(settings, sessionmaker))
            await record_history(rig, weeks=10)
            cus, workflow_id = await start_dunning(http, "ada@example.com")

            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS
            )
            # No JavaScript: everything, sign-in and Cancel included, is plain HTML.
            context = await browser.new_context(
                java_script_enabled=False, viewport={"width": 1280, "height": 900}
            )
            page = await context.new_page()

            await page.goto(f"{base_url}/dashboard")
            assert page.url == f"{base_url}/dashboard/login"
            await page.get_by_label("API key").fill("sk_wrong_key")
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_text("not a support or admin key").wait_for()
            await page.get_by_label("API key").fill(SUPPORT_KEY)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{base_url}/dashboard")
            [cookie] = await context.cookies()
            assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
                "lifecycle_dashboard",
                True,
                "Strict",
                "/dashboard",
            )

            # The charts: drawn, with a size, their bars and dots where the data says.
            await page.get_by_role("heading", name="Lifecycle dashboard").wait_for()
            charts = {
                "recovered-usd": "Recovered revenue per week (USD)",
                "recovery-rate": "Recovery rate per week",
                "earned-automation-usd": "MRR earned per automation (USD)",
                "earned-step-usd": "MRR earned per step (USD)",
            }
            for chart_id, title in charts.items():
                svg = page.get_by_role("img", name=title)
                box = await svg.bounding_box()
                assert box is not None and box["width"] > 400 and box["height"] > 30, chart_id
                assert await svg.get_attribute("id") == chart_id
            columns = await boxes(page, "#recovered-usd rect.bar")
            assert len(columns) >= 13  # 90 days, week by week
            assert sum(1 for b in columns if b["height"] > 1) == 10  # the ten weeks recovered
            # Ten weeks of history, and this week: the live dunning, nothing recovered yet.
            dots = await boxes(page, "#recovery-rate circle.dot")
            assert len(dots) == 11
            assert dots[-1]["y"] == max(d["y"] for d in dots)  # 0%: the lowest point
            step_bars = await boxes(page, "#earned-step-usd rect.bar")
            assert len(step_bars) == 2 and all(b["width"] > 1 for b in step_bars)

            screenshot = await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            chart_shot = await page.locator("#recovered-usd").screenshot(
                path=str(tmp_path / "recovered.png")
            )
            rate_shot = await page.locator("#recovery-rate").screenshot()

            # Cancel: the row's form asks for a reason, then the dunning is gone.
            row = page.locator(f'tr[data-workflow="{workflow_id}"]')
            await row.wait_for()
            assert "ada@example.com" in await row.inner_text()
            await row.get_by_text("Cancel dunning").click()
            await row.get_by_label("Reason").fill("paid by bank transfer")
            await row.get_by_role("button", name=f"Stop the dunning of {cus}").click()
            await page.get_by_text(f"Stopped 1 sequence for {cus}.").wait_for()
            handle = dev_env.client.get_workflow_handle(workflow_id)
            assert (await handle.result())["outcome"] == "cancelled"

            async def row_gone() -> bool:
                await page.reload()
                return await page.locator(f'tr[data-workflow="{workflow_id}"]').count() == 0

            await eventually(row_gone, "the stopped dunning to leave the page")

            # The pixels: the screenshot is a page with charts, not a blank or broken one.
            inspector = await browser.new_context()
            colours = await pixel_colours(inspector, chart_shot)
            bar = BAR_COLOR.removeprefix("#").lower()
            assert colours.get(bar, 0) > 2000, sorted(colours.items(), key=lambda c: -c[1])[:5]
            rate_colours = await pixel_colours(inspector, rate_shot)
            assert rate_colours.get(RATE_COLOR.removeprefix("#").lower(), 0) > 200
            page_colours = await pixel_colours(inspector, screenshot)
            background = max(page_colours.values())
            assert len(page_colours) > 50
            assert background < 0.9 * sum(page_colours.values())
            assert page_colours.get(bar, 0) > colours[bar]  # the bar charts below add more
            await browser.close()

        async with sessionmaker() as session:
            [audit] = list((await session.execute(select(SupportAction))).scalars())
        assert (audit.customer_id, audit.reason, audit.workflow_ids) == (
            cus,
            "paid by bank transfer",
            [workflow_id],
        )
        assert audit.actor == f"support key {key_fingerprint(SUPPORT_KEY)} (dashboard)"
    finally:
        await engine.dispose()
