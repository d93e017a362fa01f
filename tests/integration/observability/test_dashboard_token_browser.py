"""`dspex dashboard` on a non-loopback address: refused without a token; with one, every request
needs it, and a browser gets in by opening ``/?token=...`` once (Debian's headless Chromium).

The dashboard binds 0.0.0.0 (every address of this host) and is reached through 127.0.0.1: the
token rule depends on the address bound, not on where a request comes from.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from dashboard_topics import OPT, write_stalled_fleet
from playwright.sync_api import expect, sync_playwright
from test_dashboard_api import dashboard_command, free_port
from test_dashboard_browser import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, PAGE_MS

from dspex.observability.dashboard.access import TOKEN_ENV
from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

TOKEN = "integration-dashboard-token-0123456789"


def environment(token: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    return env


def test_a_wildcard_address_without_a_token_is_refused_before_serving(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    command = [*dashboard_command(kafka_bootstrap, topic_prefix, free_port()), "--host", "0.0.0.0"]
    done = subprocess.run(command, env=environment(None), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert TOKEN_ENV in done.stderr and "--insecure-no-token" in done.stderr


@contextmanager
def dashboard_with_token(bootstrap: str, prefix: str, tmp_path: Path) -> Iterator[str]:
    ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), TopicRegistry(prefix))
    port = free_port()
    command = [*dashboard_command(bootstrap, prefix, port), "--host", "0.0.0.0"]
    log_path = tmp_path / "dashboard.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=environment(TOKEN), stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while not _answers(url + "/api/jobs"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log_path.read_text())
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            process.wait(15)
    assert TOKEN not in log_path.read_text()  # the token is never logged


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 401
    except httpx.TransportError:
        return False


async def write_scene(bootstrap: str, prefix: str) -> None:
    async with AsyncProducer(KafkaSettings(bootstrap_servers=bootstrap)) as producer:
        await write_stalled_fleet(producer, prefix)


def test_with_a_token_requests_need_it_and_a_browser_logs_in_once(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    with dashboard_with_token(kafka_bootstrap, topic_prefix, tmp_path) as url:
        asyncio.run(write_scene(kafka_bootstrap, topic_prefix))
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        deadline = time.monotonic() + 30
        while OPT not in httpx.get(url + "/api/jobs", headers=bearer, timeout=5).text:
            assert time.monotonic() < deadline, "the scene never showed"
            time.sleep(0.2)
        assert httpx.get(url + f"/api/jobs/{OPT}", timeout=5).status_code == 401
        assert httpx.get(url + f"/api/jobs/{OPT}", headers=bearer, timeout=5).status_code == 200
        _browse(url)


def _browse(url: str) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is missing: bash infra/ci/install-system-deps.sh"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            stranger = browser.new_page()
            refused = stranger.goto(url + "/")
            assert refused is not None and refused.status == 401
            expect(stranger.locator("body")).to_contain_text("needs its token")

            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/?token={TOKEN}")
            expect(page.locator(f'#jobs tr[data-job-id="{OPT}"]')).to_be_visible(timeout=PAGE_MS)
            assert TOKEN not in page.url  # the redirect dropped it from the address
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-token-login.png"), full_page=True)
        finally:
            browser.close()
