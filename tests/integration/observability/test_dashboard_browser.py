"""The dashboard page in Debian's headless Chromium: folding, filtering, a stall in amber, a partial
score, a gone worker.

The scene (dashboard_topics.py) is written to a real broker's topics: an optimization with three
sub-evaluations, one of them half done with no task finished for 45 s while its status keeps
ticking, and the only predictor silent for five minutes. A screenshot goes to test-artifacts/ (as
the live-optimization browser test's do).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dashboard_topics import DEAD_PREDICTOR, HALF, OPT, SOLO, write_stalled_fleet
from playwright.sync_api import Page, expect, sync_playwright
from test_dashboard_api import running_dashboard

from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
PAGE_MS = 30_000


async def write_scene(bootstrap: str, prefix: str) -> None:
    async with AsyncProducer(KafkaSettings(bootstrap_servers=bootstrap)) as producer:
        await write_stalled_fleet(producer, prefix)


@contextmanager
def chromium_page() -> Iterator[Page]:
    """A page of Debian's Chromium (Playwright runs an event loop in this thread meanwhile)."""
    assert CHROMIUM.exists(), "Debian's chromium is missing: bash infra/ci/install-system-deps.sh"
    with sync_playwright() as playwright:
        chromium = playwright.chromium
        browser = chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def test_the_page_folds_sub_jobs_and_shows_a_stall_in_amber_with_its_reason(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    with running_dashboard(kafka_bootstrap, topic_prefix, tmp_path) as url:
        asyncio.run(write_scene(kafka_bootstrap, topic_prefix))
        with chromium_page() as page:
            shot = look_at(page, url)
    assert shot.stat().st_size > 10_000


def look_at(page: Page, url: str) -> Path:
    """Check the page over the scene; returns the screenshot's path."""
    page.goto(url + "/")
    opt = page.locator(f'#jobs tr[data-job-id="{OPT}"]')
    half = page.locator(f'#jobs tr[data-job-id="{HALF}"]')
    reason = f"sub-job {HALF[:8]}: no live predictor"
    expect(opt.locator(".stall-reason")).to_have_text(reason, timeout=PAGE_MS)
    expect(opt).to_have_class(re.compile(r"\bstalled\b"))  # amber background, see below
    expect(opt.locator(".state")).to_have_text("running")
    # folded: the three sub-jobs are under the optimization, hidden until unfolded
    expect(half).to_be_hidden()
    opt.locator("button.fold").click()
    expect(half).to_be_visible(timeout=PAGE_MS)
    expect(page.locator("#jobs tr.child")).to_have_count(3)
    expect(half.locator(".best")).to_have_text("100.0 partial 5/20")
    expect(half.locator(".stall-reason")).to_have_text("no live predictor")
    amber = half.evaluate("row => getComputedStyle(row).backgroundColor")
    assert amber == "rgb(255, 246, 224)", amber
    # the optimization is the default selection: its detail says why it is stalled
    expect(page.locator("#detail-stall")).to_contain_text("no live predictor", timeout=PAGE_MS)
    # its trajectory shows the candidate being evaluated, at its score so far
    expect(page.locator("svg#trajectory")).to_have_attribute("data-live", "1")
    expect(page.locator("svg#trajectory circle.live")).to_have_count(1)
    expect(page.locator("#pareto-box")).to_have_count(1)  # made with the detail, shown for GEPA runs
    expect(page.locator("#pareto-box")).to_be_hidden()
    # the silent predictor is listed apart, with its last state
    expect(page.locator("#workers tbody tr")).to_have_count(0)
    expect(page.locator(f'#gone-workers tr[data-worker-id="{DEAD_PREDICTOR}"]')).to_have_count(1)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard-stalled.png"
    page.screenshot(path=str(shot), full_page=True)

    page.locator("#filter-name").fill("nightly")
    expect(page.locator("#jobs tbody tr")).to_have_count(1, timeout=PAGE_MS)
    expect(page.locator(f'#jobs tr[data-job-id="{SOLO}"]')).to_be_visible()
    expect(page.locator("#page-info")).to_have_text("1\N{EN DASH}1 of 1")
    return shot
