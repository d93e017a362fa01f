"""GEPA as a cluster optimization (`dspex worker optimize`, ``optimizer="gepa"``): a checkpoint after
every round in dspex's JSON, the same trials and best program as the local run for the same seed,
and a worker SIGKILLed mid-round resumes from the last checkpoint to the same trajectory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from e2e_optimize import checkpoint_steps, checkpoints, requests_total, start_cluster, wait_job
from e2e_pipeline import JOB_TIMEOUT_S, Pipeline, devset, predict_program, sim_lm, wait_for

from dspex.client import Client
from dspex.configuration import context
from dspex.lm import LM
from dspex.lm.pricing import parse_price, register_prices
from dspex.optimizers import LocalExecutor, optimizer_from_name
from dspex.schemas import TrialRecord
from dspex.serialization import candidate_id
from dspex.testing import SimulatedLMServer
from dspex.testing.gepa_task import feedback_metric
from dspex.testing.task import secret_phrase

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

METRIC_MODULE = "dspex.testing.gepa_task"
TRAIN, VAL = devset(9, seed=31), devset(6, seed=32)
SEED = 2


def knobs(sim: SimulatedLMServer, model: str = "openai/simulated") -> dict[str, Any]:
    reflection = {"model": model, "api_base": sim.base_url, "cache": False}
    return {"max_metric_calls": 45, "reflection_lm": reflection, "use_merge": False}


def local_reference(
    sim: SimulatedLMServer, lm: LM, costs: list[float] | None = None, **extra: Any
) -> tuple[str, list[TrialRecord], list[int]]:
    """The same optimization here: best program id, trials, LM requests per step (and, into
    ``costs``, the USD each step spent); ``extra``: more GEPA knobs."""

    async def go() -> tuple[str, list[TrialRecord], list[int]]:
        settings = {**knobs(sim, lm.model), **extra}
        optimizer = optimizer_from_name("gepa", metric=feedback_metric, seed=SEED, **settings)
        calls: list[int] = []
        with context(lm=lm):
            run = optimizer.start(predict_program(), trainset=TRAIN, valset=VAL, executor=LocalExecutor())
            while not run.done:
                before, spent = requests_total(sim), run.budget.spent.cost_usd
                await run.step()
                calls.append(requests_total(sim) - before)
                if costs is not None:
                    costs.append(run.budget.spent.cost_usd - spent)
        trials = [TrialRecord(**trial.as_trial_record()) for trial in run.history.trials]
        return candidate_id(run.result()), trials, calls

    return asyncio.run(go())


def submit(pipeline: Pipeline, lm: LM, sim: SimulatedLMServer, **limits: Any) -> str:
    client = Client(pipeline.bootstrap, prefix=pipeline.prefix, allow_modules=[METRIC_MODULE])
    try:
        with context(lm=lm):
            job_id = client.optimize(
                predict_program(), TRAIN, VAL, feedback_metric, optimizer="gepa",
                knobs=knobs(sim, lm.model), seed=SEED, wait=False, **limits,
            )  # fmt: skip
    finally:
        client.close()
    return cast(str, job_id)


def test_gepa_cluster_run_checkpoints_every_round_and_resumes_after_sigkill(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    best_id, trials, calls = local_reference(sim, lm)
    assert len(calls) >= 4
    pipeline = pipeline_factory()
    start_cluster(pipeline, "--allow-module", METRIC_MODULE)

    # uninterrupted: the local run's trials and best program, one checkpoint per round
    status = wait_job(pipeline, submit(pipeline, lm, sim))
    assert (status.state, status.best_candidate_id) == ("completed", best_id), status.reason
    assert status.steps == trials
    steps = checkpoint_steps(pipeline, status.job_id)
    assert steps == list(range(1, len(calls) + 1))
    last = checkpoints(pipeline, status.job_id)[-1].state["state"]
    assert last["version"] == 1 and secret_phrase(0) in str(last["gepa_state"]["program_candidates"])

    # killed while round 2 waits on the LM: the next worker resumes after round 1, same trajectory
    first = pipeline.stack.alive("optimize")[0]
    sim.control.hold(after=calls[0] + calls[1] // 2)
    job_id = submit(pipeline, lm, sim)
    wait_for(
        lambda: sim.control.stats()["held"] > 0 and 1 in checkpoint_steps(pipeline, job_id),
        JOB_TIMEOUT_S,
        "round 1's checkpoint while round 2 is held",
        poll=0.25,
        detail=pipeline.report,
    )
    first.kill()
    sim.control.release()
    pipeline.start("optimize", "--allow-module", METRIC_MODULE)
    resumed = wait_job(pipeline, job_id)
    assert (resumed.state, resumed.best_candidate_id) == ("completed", best_id), resumed.reason
    assert resumed.steps == trials  # nothing lost but the round in progress, nothing twice


# A model no price table knows, priced here and by the workers' --price: the predictors and the
# optimize worker (reflection) charge for it only if the option reached them.
PRICED_MODEL, PRICE = "openai/simulated-priced", "150,600"


def test_a_cluster_gepa_run_stops_at_its_usd_cap_with_the_best_so_far(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.01)
    register_prices(dict([parse_price(f"{PRICED_MODEL}={PRICE}")]))
    lm = LM(PRICED_MODEL, api_base=sim.base_url, cache=False, cache_dir=cache_dir)
    costs: list[float] = []
    # a capped run makes nothing ahead (what is spent is what the search can still try): each of
    # the reference's rounds pays for its own calls only without speculation either
    _, trials, _ = local_reference(sim, lm, costs, speculate=False)
    assert len(costs) >= 4 and all(cost > 0 for cost in costs[:3])
    cap = sum(costs[:2]) + costs[2] / 2  # reached during the third round
    pipeline = pipeline_factory()
    start_cluster(pipeline, "--allow-module", METRIC_MODULE, "--price", f"{PRICED_MODEL}={PRICE}")

    status = wait_job(pipeline, submit(pipeline, lm, sim, max_cost_usd=cap))
    assert (status.state, status.stop_reason) == ("completed", "max_cost"), status.reason
    spent = status.usage.cost_usd
    # at the cap, plus at most what one round had in flight when it was reached
    assert cap <= spent <= cap + max(costs), (spent, cap, costs)
    assert 1 <= len(status.steps) < len(trials)
    assert status.best_candidate_id in {step.candidate_id for step in status.steps}
    assert candidate_id(pipeline.client.best_program(status)) == status.best_candidate_id
