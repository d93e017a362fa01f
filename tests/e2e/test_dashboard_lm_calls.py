"""An example's LM calls in the dashboard's drill-down, from a real run through Kafka (issue 21).

The session's pipeline (aggregator, scorer, three predictors, all with their default flags) runs an
evaluation of a Predict program against the simulated LM (a simulation, not a model); `dspex
dashboard` reads the results back from the topics, and Debian's headless Chromium opens one example:
its LM call shows the system message with the program's instructions, the user message with that
example's question, and the completion the simulated LM gave (whose answer is the example's output).
Screenshot: test-artifacts/dashboard-lm-calls.png.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_pipeline import INSTRUCTIONS, Pipeline, devset, predict_program, sim_lm
from playwright.sync_api import expect
from test_dashboard_live_optimization import PAGE_MS, chromium_page, running_dashboard, screenshot

from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = 4
OPENED = 2


def test_the_drill_down_shows_the_lm_call_of_an_example(
    shared_pipeline: Pipeline,
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    lm = sim_lm(sim_factory(latency=0.005), cache_dir)
    examples = devset(EXAMPLES, seed=31)
    job_id = shared_pipeline.submit([predict_program()], examples, lm, name="lm-calls")
    status = shared_pipeline.finish(job_id)
    assert (status.state, status.done) == ("completed", EXAMPLES), status
    question = str(examples[OPENED].question)
    others = [str(e.question) for i, e in enumerate(examples) if i != OPENED]
    assert question not in others

    dialogs: list[str] = []
    with (
        running_dashboard(shared_pipeline, tmp_path / "dashboard.log") as url,
        chromium_page(tmp_path / "chromium-profile", dialogs) as page,
    ):
        detail = wait_example(url, job_id, OPENED)
        [call] = detail["lm_call_log"]
        answer = str(detail["outputs"]["answer"])
        assert call["model"] and call["prompt_tokens"] > 0 and call["completion_tokens"] > 0
        assert call["latency_s"] > 0 and call["cache_hit"] is False
        assert f"[[ ## answer ## ]]\n{answer}" in call["completion"]
        # the worker shown is the predictor that ran the example; a built-in metric is scored there too
        assert detail["worker_id"].startswith("predict-") and detail["scored_by"] == detail["worker_id"]

        page.goto(f"{url}/#job={job_id}")
        rows = page.locator("#examples tbody tr")
        expect(rows).to_have_count(EXAMPLES, timeout=PAGE_MS)
        page.locator(f'#examples tbody tr[data-index="{OPENED}"]').click()
        calls = page.locator("#example-lm-calls details.lm-call")
        expect(calls).to_have_count(1, timeout=PAGE_MS)
        expect(page.locator("#example-facts")).to_contain_text(detail["worker_id"])
        shown = calls.first
        expect(shown.locator("summary")).to_contain_text(call["model"])
        expect(shown.locator(".role-system pre")).to_contain_text(INSTRUCTIONS)
        user = shown.locator(".role-user pre").last
        expect(user).to_contain_text(question)
        for other in others:  # the prompt is this example's, not a neighbour's
            expect(user).not_to_contain_text(other)
        completion = shown.locator(".role-completion pre")
        expect(completion).to_contain_text("[[ ## completed ## ]]")
        assert f"[[ ## answer ## ]]\n{answer}" in (completion.text_content() or "")
        shot = screenshot(page, "dashboard-lm-calls.png")
    assert shot.stat().st_size > 10_000 and not dialogs


def wait_example(url: str, job_id: str, index: int) -> dict[str, Any]:
    """The example's detail from the dashboard API, once it has read the example's score."""
    path = f"{url}/api/jobs/{job_id}/examples/{index}"
    for _ in range(300):
        answer = httpx.get(path, timeout=10)
        if answer.status_code == 200:
            return dict(answer.json())
        time.sleep(0.2)
    raise AssertionError(f"{path}: {answer.status_code} {answer.text}")
