"""`dspex dashboard` in Debian's headless Chromium while a REAL cluster optimization runs.

Processes: one aggregator, scorer and predictor, `dspex worker optimize` running
BootstrapFewShotWithRandomSearch (two bootstrap waves, then one evaluation of four candidates on the
cluster), `dspex dashboard`, and the simulated LM (a simulation, not a model). The optimization is
submitted with ``Client.optimize(..., wait=False)`` under the name ``<script>alert(1)</script>``.

The page is watched step by step, on events, without fixed sleeps: the simulated LM holds every
request, so the job is stuck inside a step while the page is read. The same optimization run in
this process first tells how many LM requests each step makes (the simulated LM is deterministic,
caches are off); once all of a step's requests are held, letting them through and holding again
moves the job on by exactly one step (the next step's requests come only after those answers, the
checkpoint and the status are through, so the hold is back by then).
Browser: Playwright for Python with ``executable_path`` (nothing downloads a browser).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import pytest
from e2e_optimize import BOOTSTRAP_RS_CASE, local_run, start_cluster, submit
from e2e_pipeline import JOB_TIMEOUT_S, Pipeline, sim_lm, wait_for
from playwright.sync_api import Locator, Page, expect, sync_playwright

from dspex.schemas import OptimizeStatus
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(420)]

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
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
EVIL_NAME = "<script>alert(1)</script>"
CASE = BOOTSTRAP_RS_CASE
# Long enough that a released step's answers come well after the hold is back; short enough
# that the 120 evaluation requests stay a few seconds.
LATENCY_S = 0.3
READY_S = 150.0
PAGE_MS = 60_000  # the page polls every second; generous for a loaded machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------- processes


@contextmanager
def running_dashboard(pipeline: Pipeline, log_path: Path) -> Iterator[str]:
    """`dspex dashboard` on the pipeline's topics; yields its URL once the API answers."""
    port = free_port()
    command = [sys.executable, "-m", "dspex.cli", "dashboard", "--bootstrap", pipeline.bootstrap]
    command += ["--prefix", pipeline.prefix, "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"dspex dashboard exited:\n{log_path.read_text()}")
        try:
            return httpx.get(url + "/api/jobs", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, 60, "the dashboard API to answer", poll=0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def chromium_page(profile: Path, dialogs: list[str]) -> Iterator[Page]:
    """A page of Debian's Chromium; any JavaScript dialog is recorded (and dismissed)."""
    assert CHROMIUM.exists(), "Debian's chromium is missing: bash infra/ci/install-system-deps.sh"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            yield page
        finally:
            browser.close()


# ---------------------------------------------------------------------------------- the job


def beside_the_browser(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a thread of its own: Playwright's sync API keeps an event loop running in
    this thread, and dspex's sync calls (rightly) refuse to block a running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def wait_held(sim: SimulatedLMServer, pipeline: Pipeline, requests: int) -> None:
    """Until all ``requests`` of the job's current step wait on the simulated LM (it is stuck)."""
    wait_for(
        lambda: sim.control.stats()["held"] == requests,
        JOB_TIMEOUT_S,
        f"the step's {requests} LM requests to be held",
        detail=pipeline.report,
    )


def let_one_step_through(sim: SimulatedLMServer) -> None:
    """Answer the requests held now and hold again: the job finishes its step, then waits in the
    next one (whose requests come only after these answers, the checkpoint and the status)."""
    sim.control.release()
    sim.control.hold()


def steps_shown(row: Locator) -> int:
    text = row.locator(".progress-text").text_content() or ""
    assert text.endswith(" steps"), text
    return int(text.split()[0])


def read_running(row: Locator, not_before: int) -> int:
    """The step count the page shows once it is past ``not_before``, with the job still running."""
    progress = row.locator(".progress-text")
    if not_before >= 0:
        expect(progress).not_to_have_text(f"{not_before} steps", timeout=PAGE_MS)
    expect(row.locator(".state")).to_have_text("running", timeout=PAGE_MS)
    return steps_shown(row)


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


# ---------------------------------------------------------------------------------- the test


def test_the_dashboard_follows_a_running_cluster_optimization(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    sim = sim_factory(latency=LATENCY_S)
    lm = sim_lm(sim, cache_dir)
    # LM requests per step of the same optimization run here first (the simulated LM is
    # deterministic and every cache is off, so the cluster makes the same ones)
    calls = local_run(sim, lm, CASE).calls_per_step
    assert len(calls) == 3 and calls[0] > 0 and calls[1] > 0, calls  # two bootstrap waves, one evaluation
    pipeline = pipeline_factory()
    start_cluster(pipeline, ready_s=READY_S)
    dialogs: list[str] = []
    with (
        running_dashboard(pipeline, tmp_path / "dashboard.log") as url,
        chromium_page(tmp_path / "chromium-profile", dialogs) as page,
    ):
        page.goto(url + "/")
        sim.control.hold()  # nothing moves until the page has been read
        job_id = beside_the_browser(partial(submit, name=EVIL_NAME), pipeline, lm, CASE)
        wait_held(sim, pipeline, calls[0])
        row = page.locator(f'#jobs tr[data-job-id="{job_id}"]')
        expect(row).to_have_count(1, timeout=PAGE_MS)

        # Progress advances without a reload, read while the job is running (held inside a step).
        readings = [read_running(row, not_before=-1)]
        let_one_step_through(sim)
        wait_held(sim, pipeline, calls[1])
        readings.append(read_running(row, not_before=readings[-1]))
        assert readings == [0, 1], readings  # no trial inside the first step, then its wave
        screenshot(page, "dashboard-running.png")

        # The hostile name is text, in the list and in the detail (the running optimization is
        # the page's default selection).
        assert row.locator(".name").text_content() == EVIL_NAME
        expect(page.locator("#detail-name")).to_have_text(EVIL_NAME, timeout=PAGE_MS)
        assert page.locator("script").evaluate_all("nodes => nodes.map(n => n.src)") == [
            url + "/static/app.js",
            url + "/static/pareto.js",
        ]

        sim.control.release()
        final = cast(OptimizeStatus, beside_the_browser(pipeline.finish, job_id))
        assert final.state == "completed", final.reason
        scored = [step for step in final.steps if step.score is not None]
        assert scored, final.steps

        # The end of the run on the page: the trajectory drawn point by point, the final step count.
        expect(row.locator(".state")).to_have_text("completed", timeout=PAGE_MS)
        assert steps_shown(row) == len(final.steps) > readings[-1]
        chart = page.locator("svg#trajectory")
        expect(chart).to_have_attribute("data-points", str(len(scored)), timeout=PAGE_MS)
        # one point per scored trial, each at its own x (the four candidates share one step)
        xs = chart.locator("circle").evaluate_all("nodes => nodes.map(n => n.getAttribute('cx'))")
        assert len(xs) == len(set(xs)) == len(scored), xs
        assert chart.locator("polyline.best").count() == 1
        assert final.best_score is not None
        assert row.locator(".best").text_content() == f"{final.best_score:.1f}"
        # The jobs the optimizer ran on the cluster are jobs of their own, each finished in full and
        # naming the optimization (the aggregator's status carries it); one is the evaluation of
        # every candidate on the valset.
        # (flat: the list folds them under the optimization, checked below)
        jobs = httpx.get(url + "/api/jobs", params={"flat": "1"}, timeout=10).json()["jobs"]
        work = [job for job in jobs if job["kind"] == "eval"]
        assert any(job["total"] == len(scored) * len(CASE.val) for job in work), jobs
        assert work and all(job["parent_job_id"] == job_id for job in work), jobs
        for job in work:
            work_row = page.locator(f'#jobs tr[data-job-id="{job["job_id"]}"]')
            expect(work_row.locator(".state")).to_have_text("completed", timeout=PAGE_MS)
            expect(work_row.locator(".progress-text")).to_have_text(f"{job['total']} / {job['total']}")
            expect(work_row.locator(".kind")).to_have_text(f"eval (part of {job_id[:8]})")
        folded = httpx.get(url + "/api/jobs", timeout=10).json()["jobs"]
        assert [job["job_id"] for job in folded] == [job_id], folded
        assert {child["job_id"] for child in folded[0]["children"]} == {job["job_id"] for job in work}
        # Every worker is listed, alive, the aggregator too (it sends heartbeats like the others).
        for worker in pipeline.stack.alive():
            listed = page.locator(f'#workers tr[data-worker-id="{worker.name}"]')
            expect(listed.locator("td").nth(3)).to_have_text("yes", timeout=PAGE_MS)
        shot = screenshot(page, "dashboard.png")

        # The API behind the page: every trial with its score and the best so far; the bootstrap
        # waves (no score by nature) are not counted as failed evaluations.
        detail = httpx.get(f"{url}/api/jobs/{job_id}", timeout=10).json()
        assert [step["score"] for step in detail["steps"]] == [step.score for step in final.steps]
        assert detail["steps"][-1]["best_so_far"] == final.best_score
        assert (detail["name"], detail["done"], detail["errors"]) == (EVIL_NAME, len(final.steps), 0)

    assert dialogs == []
    assert shot.stat().st_size > 10_000
