"""`dspex dashboard` against a real broker: its JSON API, and its start-up errors.

The API test writes an optimization's OptimizeStatus to the status topic itself; the dashboard reads
it with its CompactedReader like any status writer's. The browser test, with Debian's headless
Chromium on the page during a real cluster optimization, is
tests/e2e/test_dashboard_live_optimization.py.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from dashboard_topics import DEAD_PREDICTOR, HALF, OPT, SOLO, STALL_AGE_S, write_stalled_fleet

from dspex.schemas import OptimizeStatus, TrialRecord
from dspex.streams.admin import ensure_topics
from dspex.streams.config import KafkaSettings
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import to_record
from dspex.streams.topics import TopicRegistry

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

DASHBOARD_CLI = (
    "import typer; from dspex.cli import dashboard; app = typer.Typer(); dashboard.register(app); app()"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_dashboard(bootstrap: str, prefix: str, tmp_path: Path) -> Iterator[str]:
    """`dspex dashboard` on ``prefix``'s topics (created first); yields its URL once it answers."""
    ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), TopicRegistry(prefix))
    port = free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    command = dashboard_command(bootstrap, prefix, port)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
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
    with running_dashboard(kafka_bootstrap, topic_prefix, tmp_path) as url:
        yield url


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


async def test_sub_jobs_fold_filters_page_and_a_stall_is_reported_with_its_reason(
    dashboard: str, producer: AsyncProducer, topic_prefix: str
) -> None:
    last_task = await write_stalled_fleet(producer, topic_prefix)
    jobs = dashboard + "/api/jobs"
    body = await wait_api(jobs, lambda b: b["total"] == 2 and len(b["jobs"][0].get("children", [])) == 3)
    assert [j["job_id"] for j in body["jobs"]] == [OPT, SOLO]
    opt = body["jobs"][0]
    assert opt["children_running"] == 1
    half = next(child for child in opt["children"] if child["job_id"] == HALF)
    # the ticking status of the half-done job is no progress: stalled since its last task
    assert half["stalled"]["since"] == last_task.isoformat()
    assert half["stalled"]["reason"] == "no live predictor" and half["stalled"]["idle_s"] >= STALL_AGE_S
    assert opt["stalled"]["reason"] == f"sub-job {HALF[:8]}: no live predictor"
    assert (half["best_score"], half["best_partial"], half["best_done"]) == (100.0, True, 5)
    detail = await wait_api(f"{dashboard}/api/jobs/{OPT}", lambda b: len(b["children"]) == 3)
    assert [(c["eval_job_id"], c["score"], c["done"], c["partial"]) for c in detail["live"]] == [
        (HALF, 100.0, 5, True)
    ]
    async with httpx.AsyncClient() as client:
        only_opt = (await client.get(jobs, params={"kind": "optimize"})).json()
        by_name = (await client.get(jobs, params={"name": "nightly", "state": "completed"})).json()
        second = (await client.get(jobs, params={"limit": "1", "offset": "1"})).json()
        flat = (await client.get(jobs, params={"flat": "1", "kind": "eval"})).json()
        bad = await client.get(jobs, params={"limit": "9999"})
        workers = (await client.get(dashboard + "/api/workers")).json()
    assert [j["job_id"] for j in only_opt["jobs"]] == [OPT]
    assert [j["job_id"] for j in by_name["jobs"]] == [SOLO]
    assert [j["job_id"] for j in second["jobs"]] == [SOLO] and second["total"] == 2
    assert flat["total"] == 4 and all("children" not in j for j in flat["jobs"])
    assert bad.status_code == 400 and "limit must be between 1 and 500" in bad.json()["error"]
    # the silent predictor left the list; its last state is kept apart
    assert workers["workers"] == []
    assert [(w["worker_id"], w["in_flight"], w["gone"]) for w in workers["gone"]] == [
        (DEAD_PREDICTOR, 2, True)
    ]
