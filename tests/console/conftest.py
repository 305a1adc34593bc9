"""The console in a real browser: Debian's chromium, driven headless by Playwright,
against the real app over HTTP with the real worker and the OpenAI simulator.

Playwright cannot download its own browsers here, so the tests use the system
`chromium` (`apt-get install chromium`; `.ci/run` installs it). Without it they
fail and say so rather than skip. A failed test leaves a screenshot, the page's
HTML and its console log under `.var/test-artifacts/console/` (or
`CONSOLE_ARTIFACTS_DIR`), and the paths are printed at the end of the run.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, running_api

CHROMIUM = os.environ.get("CONSOLE_CHROMIUM", "/usr/bin/chromium")
# Playwright gives every launch a fresh, throw-away profile (its own
# --user-data-dir), so no state leaks between runs.
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
ARTIFACTS = Path(
    os.environ.get("CONSOLE_ARTIFACTS_DIR", REPO / ".var" / "test-artifacts" / "console")
)
WIDE = {"width": 1280, "height": 900}
# CONSOLE_SCREENSHOTS=1 also saves a picture at each step of a passing run, to look at.
WALKTHROUGH = os.environ.get("CONSOLE_SCREENSHOTS", "") not in ("", "0")

ANNOUNCEMENT_RECORDER = """
window.__announced = [];
document.addEventListener("DOMContentLoaded", () => {
  const region = document.getElementById("announcer");
  if (!region) return;
  new MutationObserver(() => {
    if (region.textContent) window.__announced.push(region.textContent);
  }).observe(region, { childList: true, characterData: true, subtree: true });
});
"""

_reports = pytest.StashKey[dict[str, pytest.TestReport]]()
_saved: list[Path] = []


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(_reports, {})[report.when] = report
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _saved:
        terminalreporter.section("console test artifacts")
        for path in _saved:
            terminalreporter.write_line(str(path))


@pytest.fixture
def sim_config() -> Any:
    from simulator.config import SimulatorConfig

    # Long enough to see the job move through its stages on the page, short enough for CI.
    return SimulatorConfig(job_seconds=2.0)


@pytest.fixture
def simulator(sim_config: Any) -> Iterator[str]:
    from simulator.testing import running_simulator

    with running_simulator(sim_config) as base_url:
        yield base_url


@pytest.fixture
def env(env: dict[str, str], simulator: str) -> dict[str, str]:
    return {**env, "OPENAI_BASE_URL": simulator}


@pytest.fixture
def api(settings: Any) -> Iterator[str]:
    """The app from create_app, served over real HTTP; yields its base URL."""
    with running_api(settings) as (base_url, _app):
        yield base_url


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"chromium is not installed ({CHROMIUM} is missing); the console's browser tests "
            "need it. On Debian: apt-get install chromium (.ci/run does this), or point "
            "CONSOLE_CHROMIUM at a Chromium binary.",
            pytrace=False,
        )
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()


class BrowserPage:
    """A page in its own browser context (its own sessionStorage), and what it logged."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.name = name
        self.errors: list[str] = []
        self.log: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        self.log.append(f"{message.type}: {message.text}")
        if "Content Security Policy" in message.text:
            self.errors.append(f"CSP violation: {message.text}")

    async def announcements(self) -> list[str]:
        """What the page's polite status region has said since it loaded."""
        return list(await self.page.evaluate("window.__announced"))

    async def snapshot(self, step: str) -> None:
        """A full-page picture of this step when CONSOLE_SCREENSHOTS is set."""
        if not WALKTHROUGH:
            return
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"walkthrough-{self.name}-{step}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        _saved.append(path)

    async def save(self, test_name: str) -> list[Path]:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        stem = ARTIFACTS / f"{safe_name}-{self.name}-{int(time.time())}"
        paths = [stem.with_suffix(".png"), stem.with_suffix(".html"), stem.with_suffix(".log")]
        try:
            await self.page.screenshot(path=str(paths[0]), full_page=True)
            paths[1].write_text(await self.page.content(), encoding="utf-8")
        except Exception as exc:  # the page may be what broke
            paths[1].write_text(f"could not capture the page: {exc}", encoding="utf-8")
        paths[2].write_text("\n".join(self.errors + self.log) + "\n", encoding="utf-8")
        return paths


@pytest.fixture
async def open_page(
    browser: Any, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[BrowserPage]]]:
    """Opens pages, each in a fresh context; on failure saves what each one showed."""
    opened: list[tuple[Any, BrowserPage]] = []

    async def open_one(name: str = "page", viewport: dict[str, int] | None = None) -> BrowserPage:
        context = await browser.new_context(viewport=viewport or WIDE, locale="en-US")
        context.set_default_timeout(15_000)
        # Keeps everything the page says in its status region (what a screen reader hears).
        await context.add_init_script(ANNOUNCEMENT_RECORDER)
        page = BrowserPage(await context.new_page(), name)
        opened.append((context, page))
        return page

    yield open_one
    reports = request.node.stash.get(_reports, {})
    failed = any(report.failed for report in reports.values())
    for context, page in opened:
        if failed:
            for path in await page.save(request.node.name):
                _saved.append(path)
                sys.stderr.write(f"console artifact: {path}\n")
        await context.close()
    if not failed:
        problems = [error for _, page in opened for error in page.errors]
        assert not problems, f"the page reported errors: {problems}"
