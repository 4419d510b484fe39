"""Pages in a real headless Chromium (Debian's `chromium`, driven by Playwright): the
real app served by uvicorn, and what the browser drew (boxes, the screenshot's pixels)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, FloatRect, Page

CHROMIUM = Path("/usr/bin/chromium")
# What works as root on a machine without a display or a network beyond loopback.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Browser tests are skipped where Debian's chromium is missing: `pytestmark = CHROMIUM_ONLY`.
CHROMIUM_ONLY = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium (.ci/run installs it)",
)


async def pixel_colours(context: BrowserContext, png: bytes) -> dict[str, int]:
    """How many pixels of each colour ("rrggbb") the PNG has, decoded by Chromium on a
    blank page of its own (the dashboard's CSP rightly allows no script or data: image)."""
    page = await context.new_page()
    try:
        counts: dict[str, int] = await page.evaluate(
            """async (data) => {
                const image = new Image();
                image.src = "data:image/png;base64," + data;
                await image.decode();
                const canvas = document.createElement("canvas");
                canvas.width = image.width;
                canvas.height = image.height;
                const context = canvas.getContext("2d");
                context.drawImage(image, 0, 0);
                const pixels = context.getImageData(0, 0, image.width, image.height).data;
                const counts = {};
                for (let i = 0; i < pixels.length; i += 4) {
                    const rgb = (pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2];
                    const key = rgb.toString(16).padStart(6, "0");
                    counts[key] = (counts[key] || 0) + 1;
                }
                return counts;
            }""",
            base64.b64encode(png).decode(),
        )
    finally:
        await page.close()
    return counts


async def boxes(page: Page, selector: str) -> list[FloatRect]:
    """Where each element matching `selector` is drawn, in document order."""
    found = []
    for element in await page.locator(selector).all():
        box = await element.bounding_box()
        assert box is not None, f"{selector} is not rendered"
        found.append(box)
    return found
