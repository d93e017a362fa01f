"""`dspex dashboard` against a real broker, opened in Debian's headless Chromium (Playwright with
``executable_path``; no browser is downloaded).

The test writes the statuses itself (an optimization's OptimizeStatus growing step by step, and an
evaluation named ``<script>alert(1)</script>``) to the status topic of a real broker; the dashboard
reads them with its CompactedReader like any status writer's, and the page must show them, as text.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from dspex.schemas import JobStatus, OptimizeStatus, TrialRecord, WorkerHeartbeat
from dspex.schemas.base import utc_now
from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import to_record
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
EVIL_NAME = "<script>alert(1)</script>"
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
DASHBOARD_CLI = (
    "import typer; from dspex.cli import dashboard; app = typer.Typer(); dashboard.register(app); app()"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dashboard_command(bootstrap: str, prefix: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        DASHBOARD_CLI,
        "--bootstrap",
        bootstrap,
        "--prefix",
        prefix,
        "--port",
        str(port),
    ]


@pytest.fixture
def dashboard(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[str]:
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), TopicRegistry(topic_prefix))
    port = free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    process = subprocess.Popen(
        dashboard_command(kafka_bootstrap, topic_prefix, port), stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/api/jobs", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp_path / "dashboard.log").read_text())
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(15)
        log.close()


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AsyncProducer]:
    async with AsyncProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap)) as made:
        yield made


class StatusWriter:
    def __init__(self, producer: AsyncProducer, prefix: str) -> None:
        self.producer, self.registry = producer, TopicRegistry(prefix)

    async def optimization(self, job_id: str, scores: list[float]) -> None:
        steps = [
            TrialRecord(step=i, candidate_id=f"cand{i}", score=s, num_examples=20)
            for i, s in enumerate(scores)
        ]
        status = OptimizeStatus(
            job_id=job_id,
            name="browser optimization",
            state="running",
            optimizer="mipro",
            steps=steps,
            best_score=max(scores),
            seq=len(scores),
        )
        await self.producer.produce_record(self.registry.name("status"), to_record(status, role="status"))

    async def evaluation(self, job_id: str, done: int) -> None:
        status = JobStatus(
            job_id=job_id, name=EVIL_NAME, state="running", total_tasks=10, done=done, seq=done
        )
        await self.producer.produce_record(self.registry.name("status"), to_record(status, role="status"))

    async def heartbeat(self) -> None:
        beat = WorkerHeartbeat(
            worker_id="predict-browser", kind="predict", host="h", pid=os.getpid(), started_at=utc_now()
        )
        await self.producer.produce_record(self.registry.name("workers"), to_record(beat, role="workers"))


async def wait_api(url: str, predicate, timeout: float = 20.0) -> dict:  # type: ignore[no-untyped-def,type-arg]
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            body = (await client.get(url, timeout=5)).json()
            if predicate(body):
                return body  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} never matched: {body}")
            await asyncio.sleep(0.2)


async def test_the_page_shows_jobs_progress_and_trajectory_as_text(
    dashboard: str, producer: AsyncProducer, topic_prefix: str, tmp_path: Path
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (bash infra/ci/install-system-deps.sh)")
    writer = StatusWriter(producer, topic_prefix)
    await writer.optimization("opt-browser", [40.0, 55.0])
    await writer.evaluation("eval-evil", done=3)
    await writer.heartbeat()
    await wait_api(dashboard + "/api/jobs", lambda b: len(b["jobs"]) == 2)

    dialogs: list[str] = []
    async with playwright_api.async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            page.on(
                "dialog",
                lambda dialog: (dialogs.append(dialog.message), asyncio.ensure_future(dialog.dismiss())),
            )
            await page.goto(dashboard + "/")
            opt_row = page.locator('#jobs tr[data-job-id="opt-browser"]')
            evil_row = page.locator('#jobs tr[data-job-id="eval-evil"]')
            await opt_row.wait_for()
            await opt_row.click()
            chart = page.locator("svg#trajectory")
            expect = playwright_api.expect
            await expect(chart).to_have_attribute("data-points", "2")
            assert await evil_row.locator(".progress-text").text_content() == "3 / 10"

            # The job advances: two more steps and more tasks done, with no reload.
            await writer.optimization("opt-browser", [40.0, 55.0, 50.0, 72.5])
            await writer.evaluation("eval-evil", done=6)
            await expect(chart).to_have_attribute("data-points", "4")
            await evil_row.locator(".progress-text", has_text="6 / 10").wait_for()
            assert await chart.locator("circle").count() == 4
            assert await chart.locator("polyline.best").count() == 1
            assert await page.locator("#detail-name").text_content() == "browser optimization"
            assert await page.locator('#workers tr[data-worker-id="predict-browser"]').count() == 1

            # The hostile name is text: no dialog, no script element, the exact characters shown.
            assert await evil_row.locator(".name").text_content() == EVIL_NAME
            assert await page.locator("#jobs script").count() == 0
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            await context.close()
    assert dialogs == []
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


async def test_the_api_answers_404_json_for_an_unknown_job_and_details_steps(
    dashboard: str, producer: AsyncProducer, topic_prefix: str
) -> None:
    writer = StatusWriter(producer, topic_prefix)
    await writer.optimization("opt-api", [10.0, 30.0, 20.0])
    detail = await wait_api(dashboard + "/api/jobs/opt-api", lambda b: "steps" in b)
    assert [s["best_so_far"] for s in detail["steps"]] == [10.0, 30.0, 30.0]
    async with httpx.AsyncClient() as client:
        missing = await client.get(dashboard + "/api/jobs/no-such-job")
        page = await client.get(dashboard + "/")
    assert missing.status_code == 404
    assert missing.json() == {"error": "unknown job", "job_id": "no-such-job"}
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_a_dashboard_port_in_use_fails_naming_it(kafka_bootstrap: str, topic_prefix: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        result = subprocess.run(
            dashboard_command(kafka_bootstrap, topic_prefix, port), capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert f"dashboard port {port} on 127.0.0.1 is already in use" in result.stderr


def test_a_dashboard_on_missing_topics_says_so(kafka_bootstrap: str, topic_prefix: str) -> None:
    command = dashboard_command(kafka_bootstrap, f"{topic_prefix}missing.", free_port())
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "--prefix" in result.stderr
