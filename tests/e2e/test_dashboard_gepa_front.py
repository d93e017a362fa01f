"""`dspex dashboard` in Debian's headless Chromium shows a REAL cluster GEPA run's Pareto front, its
candidates' lineage, scores and instructions, and the cost so far, as the run goes.

Processes: one aggregator, scorer and predictor, `dspex worker optimize` running GEPA (30 metric
calls, the secret-phrase task of :mod:`dspex.testing.gepa_task`), `dspex dashboard`, and the
simulated LM (a simulation, not a model) priced through ``--price`` so the run costs something.
The same run made here first tells how many LM requests its first round makes (the simulated LM is
deterministic, caches are off): the simulated LM holds every request after those, so the page is
read while the run waits after round 1 (the seed alone), then again once the run is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
from e2e_optimize import checkpoints, requests_total, start_cluster
from e2e_pipeline import Pipeline, devset, predict_program, wait_for
from playwright.sync_api import expect
from test_dashboard_live_optimization import (
    PAGE_MS,
    beside_the_browser,
    chromium_page,
    running_dashboard,
    screenshot,
)

from dspex.client import Client
from dspex.configuration import context
from dspex.lm import LM
from dspex.lm.pricing import parse_price, register_prices
from dspex.observability.dashboard.pareto import plain
from dspex.optimizers import LocalExecutor, optimizer_from_name
from dspex.schemas import OptimizeStatus
from dspex.testing import SimulatedLMServer
from dspex.testing.gepa_task import feedback_metric

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(360)]

METRIC_MODULE = "dspex.testing.gepa_task"
TRAIN, VAL = devset(9, seed=31), devset(6, seed=32)
SEED = 2
MODEL, PRICE = "openai/simulated-priced", "150,600"  # no price table knows it: priced here and by --price


def knobs(sim: SimulatedLMServer) -> dict[str, Any]:
    reflection = {"model": MODEL, "api_base": sim.base_url, "cache": False}
    return {"max_metric_calls": 30, "reflection_lm": reflection, "use_merge": False}


def calls_per_round(sim: SimulatedLMServer, lm: LM) -> list[int]:
    """The same run here: the simulated LM's requests in each round."""

    async def go() -> list[int]:
        optimizer = optimizer_from_name("gepa", metric=feedback_metric, seed=SEED, **knobs(sim))
        calls: list[int] = []
        with context(lm=lm):
            run = optimizer.start(predict_program(), trainset=TRAIN, valset=VAL, executor=LocalExecutor())
            while not run.done:
                before = requests_total(sim)
                await run.step()
                calls.append(requests_total(sim) - before)
        return calls

    return asyncio.run(go())


def submit(pipeline: Pipeline, lm: LM, sim: SimulatedLMServer) -> str:
    client = Client(pipeline.bootstrap, prefix=pipeline.prefix, allow_modules=[METRIC_MODULE])
    try:
        with context(lm=lm):
            job_id = client.optimize(
                predict_program(), TRAIN, VAL, feedback_metric, optimizer="gepa", knobs=knobs(sim),
                seed=SEED, wait=False, name="gepa front",
            )  # fmt: skip
    finally:
        client.close()
    return cast(str, job_id)


def test_the_dashboard_shows_a_cluster_gepa_run_s_front_lineage_and_cost_as_it_goes(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    register_prices(dict([parse_price(f"{MODEL}={PRICE}")]))
    lm = LM(MODEL, api_base=sim.base_url, cache=False, cache_dir=cache_dir)
    calls = calls_per_round(sim, lm)
    assert len(calls) >= 3, calls  # the seed's round, then reflection rounds
    pipeline = pipeline_factory()
    start_cluster(pipeline, "--allow-module", METRIC_MODULE, "--price", f"{MODEL}={PRICE}")
    dialogs: list[str] = []
    with (
        running_dashboard(pipeline, tmp_path / "dashboard.log") as url,
        chromium_page(tmp_path / "chromium-profile", dialogs) as page,
    ):
        sim.control.hold(after=calls[0])  # round 1 (the seed) goes through, round 2 waits
        job_id = beside_the_browser(partial(submit, pipeline, lm, sim))
        page.goto(f"{url}/#job={job_id}")
        box = page.locator("#pareto-box")
        lineage = page.locator("#pareto-lineage")

        # after round 1, while round 2 waits: the seed alone, on the front of every example
        wait_for(lambda: sim.control.stats()["held"] > 0, 120, "round 2 to be held", detail=pipeline.report)
        expect(box).to_have_attribute("data-step", "1", timeout=PAGE_MS)
        expect(box).to_have_attribute("data-candidates", "1")
        expect(lineage.locator("li.candidate")).to_have_count(1)
        expect(lineage.locator("li.candidate .candidate-origin")).to_contain_text("seed")
        expect(page.locator("#pareto-grid tbody tr")).to_have_count(len(VAL))
        early_cost = float(page.locator("#pareto-cost").get_attribute("data-cost-usd") or "nan")
        assert early_cost > 0
        screenshot(page, "dashboard-gepa-round1.png")

        sim.control.release()
        final = cast(OptimizeStatus, beside_the_browser(pipeline.finish, job_id))
        assert final.state == "completed", final.reason
        last = checkpoints(pipeline, job_id)[-1]
        gepa = last.state["state"]["gepa_state"]
        programs, parents = gepa["program_candidates"], gepa["parent_program_for_candidate"]
        assert len(programs) >= 2, programs

        # the end of the run, without a reload: every candidate under its parent
        expect(box).to_have_attribute("data-step", str(last.step), timeout=PAGE_MS)
        expect(box).to_have_attribute("data-candidates", str(len(programs)))
        expect(lineage.locator("li.candidate")).to_have_count(len(programs))
        for index, (parent, *_) in enumerate(parents):
            if parent is not None:
                nested = lineage.locator(f'li[data-index="{parent}"] > ul > li[data-index="{index}"]')
                expect(nested).to_have_count(1)
        # the best candidate's instruction, expanded
        best = lineage.locator(f'li[data-index="{_best(gepa)}"]')
        expect(best.locator(":scope > .candidate-head .best-tag").first).to_have_text("best")
        best.locator(":scope > details.instructions > summary").click()
        instruction = next(iter(programs[_best(gepa)].values()))
        expect(best.locator(":scope > details.instructions > pre")).to_have_text(instruction)

        # the front: one row per validation example, one column per member, its winners marked
        fronts = plain(gepa["program_at_pareto_front_valset"])
        members = sorted({m for winners in fronts.values() for m in winners})
        expect(box).to_have_attribute("data-front", str(len(members)))
        header = page.locator("#pareto-grid thead th")
        expect(header).to_have_text(["example", "best"] + [f"#{m}" for m in members])
        for val_id, winners in fronts.items():
            row = page.locator(f'#pareto-grid tbody tr[data-example="{val_id}"]')
            marked = row.locator("td.win").evaluate_all("cells => cells.map(c => c.dataset.candidate)")
            assert sorted(int(m) for m in marked) == sorted(winners), (val_id, marked, winners)
        # the cost so far is the job's, and it grew after round 1
        cost = page.locator("#pareto-cost")
        expect(cost).to_contain_text(
            f"${final.usage.cost_usd:.4f} ({final.usage.lm_calls} LM calls", timeout=PAGE_MS
        )
        assert float(cost.get_attribute("data-cost-usd") or "nan") == pytest.approx(final.usage.cost_usd)
        assert final.usage.cost_usd > early_cost
        shot = screenshot(page, "dashboard-gepa-front.png")

    assert dialogs == []
    assert shot.stat().st_size > 10_000


def _best(gepa: dict[str, Any]) -> int:
    """gepa's best candidate: the highest valset average, the earliest among equals."""
    averages = [sum(s.values()) / len(s) for s in plain(gepa["prog_candidate_val_subscores"])]
    return averages.index(max(averages))
