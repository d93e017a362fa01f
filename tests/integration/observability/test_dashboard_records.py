"""The dashboard's per-example pages and comparison over records on a real broker: the job and score
records are written to the jobs and scores topics as the submitter and the scorers write them, and
`dspex dashboard` reads them back by itself (one partition of each topic per job).

Then the same in Debian's headless Chromium: an example drilled into, two evaluations compared
(screenshot in test-artifacts/).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from dashboard_topics import BASE, OTHER, TUNED, write_two_evaluations
from playwright.sync_api import Page, expect
from test_dashboard_api import running_dashboard
from test_dashboard_browser import ARTIFACTS, PAGE_MS, chromium_page

from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]


async def write_scene(bootstrap: str, prefix: str) -> None:
    async with AsyncProducer(KafkaSettings(bootstrap_servers=bootstrap)) as producer:
        await write_two_evaluations(producer, prefix)


def wait_status(url: str, job_id: str) -> None:
    for _ in range(100):
        if httpx.get(f"{url}/api/jobs/{job_id}", timeout=5).status_code == 200:
            return
        asyncio.run(asyncio.sleep(0.2))
    raise AssertionError(f"{job_id} never appeared")


def test_examples_and_comparison_from_the_topics(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    with running_dashboard(kafka_bootstrap, topic_prefix, tmp_path) as url:
        asyncio.run(write_scene(kafka_bootstrap, topic_prefix))
        for job_id in (BASE, TUNED, OTHER):
            wait_status(url, job_id)
        listed = httpx.get(f"{url}/api/jobs/{TUNED}/examples", timeout=30).json()
        # four examples, the redelivered first one counted once (its first score stands)
        assert [(e["example_index"], e["score"]) for e in listed["examples"]] == [
            (0, 1.0),
            (1, 1.0),
            (2, 1.0),
            (3, 0.0),
        ]
        assert listed["input_keys"] == ["question"]
        failed = httpx.get(f"{url}/api/jobs/{TUNED}/examples/3", timeout=30).json()
        assert failed["error"] == {
            "type": "TimeoutError",
            "message": "the LM did not answer",
            "status": None,
            "systemic": False,
        }
        assert (failed["inputs"], failed["gold"]) == ({"question": "2+3?"}, {"answer": "4"})
        assert (failed["worker_id"], failed["latency_s"], failed["prompt_tokens"]) == ("predict-1", 3.5, 33)
        assert failed["trace"] == [
            {"predictor": "predict", "inputs": {"question": "2+3?"}, "outputs": {"answer": "5"}}
        ]
        compared = httpx.get(f"{url}/api/compare", params={"a": BASE, "b": TUNED}, timeout=30).json()
        assert (compared["score_a"], compared["score_b"], compared["delta"]) == (25.0, 75.0, 50.0)
        assert [f["example_index"] for f in compared["flipped"]] == [1, 2]
        assert compared["mcnemar"] == {"method": "exact", "statistic": 0.0, "p_value": 0.5}
        refused = httpx.get(f"{url}/api/compare", params={"a": BASE, "b": OTHER}, timeout=30)
        assert refused.status_code == 400 and "not the same dataset" in refused.json()["error"]


def test_the_page_drills_into_an_example_and_compares_two_evaluations(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    with running_dashboard(kafka_bootstrap, topic_prefix, tmp_path) as url:
        asyncio.run(write_scene(kafka_bootstrap, topic_prefix))
        wait_status(url, TUNED)
        with chromium_page() as page:
            shot = look_at(page, url)
    assert shot.stat().st_size > 10_000


def look_at(page: Page, url: str) -> Path:
    page.goto(f"{url}/#job={BASE}")
    rows = page.locator("#examples tbody tr")
    expect(rows).to_have_count(4, timeout=PAGE_MS)
    page.locator("#compare-with").fill(TUNED)
    page.locator("#compare-go").click()
    summary = page.locator("#compare-summary")
    expect(summary).to_contain_text("(+50.0) over 4 paired examples", timeout=PAGE_MS)
    expect(summary).to_contain_text("McNemar (exact): p = 0.500")
    flips = page.locator("#compare-flips tbody tr")
    expect(flips).to_have_count(2)
    flips.nth(0).click()  # example 1: wrong in the baseline, right once tuned
    expect(page.locator("#example-index")).to_have_text(f"#1 of {TUNED[:8]} (c)", timeout=PAGE_MS)
    expect(page.locator("#example-outputs")).to_contain_text('"answer": "4"')
    expect(page.locator("#example-gold")).to_contain_text('"answer": "4"')
    expect(page.locator("#example-trace")).to_contain_text('"predictor": "predict"')
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard-compare.png"
    page.screenshot(path=str(shot), full_page=True)
    return shot
