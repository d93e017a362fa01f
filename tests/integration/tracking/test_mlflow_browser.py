"""The MLflow UI (the session's real server) in Debian's headless Chromium shows an optimization run
that dspex logged, with one point per trial on its ``score`` chart. A screenshot goes to
test-artifacts/ (as the dashboard's browser tests' do)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from mlflow_tools import MlflowServer, tags_of
from playwright.sync_api import Response, expect, sync_playwright

from dspex.modules import Predict
from dspex.tracking import MlflowSettings
from dspex.tracking.content import Step, optimization_content
from dspex.tracking.logger import MlflowLogger

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
PAGE_MS = 90_000
SCORES = [30.0, 50.0, 40.0, 70.0, 60.0]


def test_the_mlflow_ui_shows_the_optimization_run_and_each_of_its_steps(mlflow_server: MlflowServer) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is missing: bash infra/ci/install-system-deps.sh"
    experiment = f"ui-{uuid.uuid4().hex[:8]}"
    logger = MlflowLogger(MlflowSettings(tracking_uri=mlflow_server.url, experiment=experiment, timeout_s=60))
    steps = [Step(index, score, 10) for index, score in enumerate(SCORES)]
    best = Predict("question -> answer")
    logger.log(optimization_content("bootstrap-rs", {"num_candidate_programs": 2}, steps, best, seed=1))
    assert logger.flush(300)
    logger.close()
    [run] = [r for r in mlflow_server.runs(experiment) if tags_of(r).get("dspex.kind") == "optimization"]
    run_id, experiment_id = run["info"]["run_id"], run["info"]["experiment_id"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            with page.expect_response(_score_history, timeout=PAGE_MS) as answer:
                page.goto(f"{mlflow_server.url}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics")
            history = _points(answer.value)
            expect(page.get_by_role("heading", name="bootstrap-rs optimize")).to_be_visible(timeout=PAGE_MS)
            chart_legend = page.get_by_text("bootstrap-rs optimize (score)")
            expect(chart_legend).to_be_visible(timeout=PAGE_MS)
            page.wait_for_timeout(1000)  # let the charts draw before the picture
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "mlflow-optimization-run.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    # the page asked for the score's history and got one point per trial, in step order
    assert [(int(p["step"]), float(p["value"])) for p in history] == list(enumerate(SCORES))
    assert shot.stat().st_size > 10_000


def _score_history(response: Response) -> bool:
    return "get-history" in response.url and "metric_key=score&" in response.url + "&"


def _points(response: Response) -> list[dict[str, float]]:
    body = json.loads(response.body())
    points: list[dict[str, float]] = sorted(body.get("metrics", []), key=lambda p: int(p["step"]))
    return points
