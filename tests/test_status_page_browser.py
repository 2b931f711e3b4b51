"""The status page in a real browser: headless Chromium, driven by playwright's python
package, against a node serving on loopback.

The page must render, follow changes made through the HTTP API without a reload, colour
its observation marks by the freshness of the evidence, open the ``why`` panel of an
entity that is clicked, and hide the rows its filters leave out, all with no script error
and no Content-Security-Policy violation. It uses the system's Chromium (Debian's
``chromium``), never a browser playwright downloads. Skipped when Chromium or playwright
is missing, unless ``SPHAERA_REQUIRE_BROWSER=1`` (as ``.ci/run`` sets): then it fails.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sphaera_crdt.core.constraints import all_of, exists, observed
from sphaera_crdt.net.client import ApiClient
from sphaera_crdt.node import Node, NodeConfig

CHROMIUM = "/usr/bin/chromium"
#: The machine may have no network: nothing that phones home, no sandbox (containers).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Milliseconds any one thing on the page may take to appear.
WAIT = 10_000


class Shift:
    """The wall clock, moved ahead by :attr:`seconds` (the browser keeps the real one)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return time.time() + self.seconds


def require_browser() -> None:
    """Skip (or fail, under ``SPHAERA_REQUIRE_BROWSER=1``) without Chromium and playwright."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install playwright)")
    if not missing:
        return
    message = "the browser test needs " + " and ".join(missing)
    if os.environ.get("SPHAERA_REQUIRE_BROWSER") == "1":
        pytest.fail(message + "; SPHAERA_REQUIRE_BROWSER=1 makes it required")
    pytest.skip(message)


def check_png(path: Path, *, width: int, height: int) -> None:
    """``path`` is a PNG of at least ``width`` x ``height`` with more than a blank page."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # IHDR: the first chunk, big-endian width and height
    assert int.from_bytes(data[16:20], "big") >= width
    assert int.from_bytes(data[20:24], "big") >= height
    image = pytest.importorskip("PIL.Image").open(path).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # text, badges and marks, not a blank page


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_page_follows_the_node_explains_and_filters(tmp_path: Path) -> None:
    require_browser()
    from playwright.async_api import async_playwright, expect

    config = NodeConfig(replica_id="a", port=0, gossip_interval=3600)
    shift = Shift()
    async with (
        Node(config, clock=shift) as node,
        ApiClient(node.url) as api,
        async_playwright() as driver,
    ):
        await api.put("db", kind="postgres", attrs={"port": 5432})
        await api.put(
            "api", kind="service", requires=all_of(exists("db"), observed("db", within=30))
        )
        await api.put("web", kind="service", requires=exists("api"))
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []

            def script_error(error: Any) -> None:
                problems.append(str(error))

            def console(message: Any) -> None:
                if message.type == "error":  # CSP violations are reported here too
                    problems.append(message.text)

            page.on("pageerror", script_error)
            page.on("console", console)
            await page.goto(node.url + "/")

            def row(table: str, entity: str) -> Any:
                # the row whose first cell names the entity (others may link to it)
                link = page.locator("td:first-child").get_by_role("button", name=entity, exact=True)
                return page.locator(f"#{table} tr").filter(has=link)

            await expect(page.locator("#live")).to_have_text("● live", timeout=WAIT)
            await expect(row("entities", "api").locator(".badge")).to_have_text("absent")
            mark = row("graph", "api").locator(".dot.obs")
            await expect(mark).to_have_class(re.compile(r"\bnone\b"))

            # A change made through the API shows without a reload.
            await api.observe("db", ttl=60)
            await expect(row("entities", "api").locator(".badge")).to_have_text(
                "exists", timeout=WAIT
            )
            await expect(row("entities", "web").locator(".badge")).to_have_text("exists")
            await expect(page.locator("#log")).to_contain_text("api: absent → exists")
            await expect(mark).to_have_class(re.compile(r"\bfresh\b"), timeout=WAIT)
            await expect(row("observations", "db")).to_contain_text(re.compile(r"ok\s*\d+ s old"))
            await expect(row("replicas", "a")).to_contain_text(re.compile(r"\d+ s ago"))
            await page.screenshot(path=tmp_path / "page.png", full_page=True)
            check_png(tmp_path / "page.png", width=1280, height=900)

            # Clicking an entity opens its why, readable, with relative times.
            panel = page.locator("#why")
            await expect(panel).to_be_hidden()
            await row("entities", "api").get_by_role("button", name="api").click()
            await expect(panel).to_be_visible()
            why = await api.why("api")
            await expect(page.locator("#why-entity")).to_have_text("api")
            await expect(page.locator("#why-reason")).to_have_text(why["reason"], timeout=WAIT)
            tree = page.locator("#why-tree")
            await expect(tree).to_contain_text("holds all of")
            await expect(tree).to_contain_text("holds exists db")
            await expect(tree).to_contain_text(
                "holds observed db ok within 30 s: 1 fresh, 1 needed"
            )
            await expect(tree).to_contain_text(re.compile(r"a saw it ok: fresh, \d+ s old"))
            await expect(row("entities", "api")).to_have_class(re.compile(r"\bselected\b"))
            await page.screenshot(path=tmp_path / "why.png")
            check_png(tmp_path / "why.png", width=1280, height=900)

            # The evidence ages out: api goes by itself, the open panel and the mark follow.
            shift.seconds = 45.0  # past the clause's 30 s, within the observation's ttl
            node.replica.tick()
            await expect(page.locator("#why-status")).to_have_text("absent", timeout=WAIT)
            await expect(page.locator("#why-reason")).to_have_text((await api.why("api"))["reason"])
            await expect(tree).to_contain_text("fails observed db ok within 30 s: 0 fresh")
            await expect(tree).to_contain_text(
                re.compile(r"a saw it ok: stale for (1\d|[2-9]\d) s")
            )
            await expect(mark).to_have_class(re.compile(r"\bstale\b"), timeout=WAIT)
            await expect(row("entities", "web").locator(".badge")).to_have_text("absent")
            await expect(row("observations", "db")).to_contain_text(
                re.compile(r"ok\s*[4-9]\d s old")
            )
            await page.screenshot(path=tmp_path / "stale.png")
            # A link in the tree explains the entity it names.
            await tree.get_by_role("button", name="db", exact=True).first.click()
            await expect(page.locator("#why-entity")).to_have_text("db")
            await expect(page.locator("#why-reason")).to_have_text(
                (await api.why("db"))["reason"], timeout=WAIT
            )
            await page.keyboard.press("Escape")
            await expect(panel).to_be_hidden()

            # The filters hide the rows they leave out, in every table of entities.
            await page.locator("#filter").fill("we")
            await expect(row("entities", "web")).to_be_visible()
            for table, entity in (("entities", "api"), ("entities", "db"), ("graph", "api")):
                await expect(row(table, entity)).to_be_hidden()
            await expect(page.locator("#shown")).to_have_text("1 of 4 match")
            await page.locator("#filter").fill("")
            await page.locator("#kind-filter").select_option("service")
            await expect(row("entities", "api")).to_be_visible()
            await expect(row("entities", "db")).to_be_hidden()
            await page.locator("#status-filter").select_option("exists")
            await expect(row("entities", "api")).to_be_hidden()  # absent since db aged out
            await expect(page.locator("#entities")).to_contain_text("no entity matches the filter")
            await page.locator("#kind-filter").select_option("")
            await expect(row("entities", "replica:a")).to_be_visible()
            await page.screenshot(path=tmp_path / "filtered.png")
            assert problems == []
        finally:
            await browser.close()


def test_a_missing_browser_skips_unless_it_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("SPHAERA_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Chromium at /nonexistent/chromium"):
        require_browser()
    monkeypatch.setenv("SPHAERA_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="SPHAERA_REQUIRE_BROWSER=1"):
        require_browser()
