"""BootstrapFinetune as a cluster optimization (`dspex worker optimize`,
``optimizer="bootstrap-finetune"``) against the simulated LM's fine-tuning API (a simulation): the
teacher runs go to the predictors, the optimize worker SIGKILLed while the fine-tuning job runs is
replaced by one that re-attaches to that job (the simulated provider shows one job, not two) and
completes with the tuned model in the best program; a failing job fails the optimization with the
provider's reason in `dspex status`; a cancelled one cancels its job at the provider."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from e2e_optimize import checkpoints, start_cluster, wait_job
from e2e_pipeline import JOB_TIMEOUT_S, METRIC, Pipeline, devset, predict_program, sim_lm, wait_for

from dspex.configuration import context
from dspex.evaluate import Evaluate
from dspex.lm import LM
from dspex.primitives import Module
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TRAIN, VAL = devset(30, seed=11), devset(20, seed=12)  # ~half pass: over the 10 records a job needs
KNOBS: dict[str, Any] = {"provider_settings": {"poll_interval": 0.1}, "wait_step_s": 1.0}


def student(lm: LM) -> Module:
    program = predict_program()
    program.set_lm(lm)  # BootstrapFinetune tunes the predictors' own LMs (DSPy's rule)
    return program


def submit(pipeline: Pipeline, lm: LM, **knobs: Any) -> str:
    with context(lm=lm):
        job_id = pipeline.client.optimize(
            student(lm), TRAIN, VAL, METRIC, optimizer="bootstrap-finetune", knobs={**KNOBS, **knobs},
            seed=0, wait=False,
        )  # fmt: skip
    return cast(str, job_id)


def fine_tuning(sim: SimulatedLMServer) -> dict[str, Any]:
    return cast(dict[str, Any], sim.control.stats()["fine_tuning"])


def running_job_id(pipeline: Pipeline, job_id: str) -> str | None:
    """The fine-tuning job id of the optimization's latest checkpoint, once it names one."""
    found = checkpoints(pipeline, job_id)
    jobs = found[-1].state["state"]["jobs"] if found else []
    return cast(str | None, jobs[0]["job_id"]) if jobs else None


def status_command(pipeline: Pipeline, job_id: str) -> str:
    command = [sys.executable, "-m", "dspex.cli", "status", job_id, "--bootstrap", pipeline.bootstrap]
    done = subprocess.run(
        [*command, "--prefix", pipeline.prefix], capture_output=True, text=True, timeout=120, check=False
    )
    return done.stdout + done.stderr


def test_a_killed_optimize_worker_reattaches_to_the_running_job_and_a_failed_job_fails_the_run(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    sim = sim_factory(latency=0.005, finetune_seconds=600.0)  # runs until the test shortens it
    lm = sim_lm(sim, cache_dir)
    pipeline = pipeline_factory()
    start_cluster(pipeline)

    # killed while the job runs: the next worker re-attaches to it
    first = pipeline.stack.alive("optimize")[0]
    job_id = submit(pipeline, lm)
    tuning = wait_for(
        lambda: running_job_id(pipeline, job_id),
        JOB_TIMEOUT_S,
        "the checkpoint naming the running fine-tuning job",
        poll=0.25,
        detail=pipeline.report,
    )
    assert fine_tuning(sim)["created"] == 1
    first.kill()
    sim.control.configure(finetune_seconds=3.0)  # the running job ends soon now
    pipeline.start("optimize")
    status = wait_job(pipeline, job_id)
    assert status.state == "completed", status.reason
    stats = fine_tuning(sim)
    assert stats["created"] == 1 and stats["by_status"] == {"succeeded": 1}, stats
    best = pipeline.client.best_program(status)
    assert best.predictors()[0].lm.model == f"openai/ft:simulated:dspex:{tuning}"
    assert status.steps[0].kind == "bootstrap" and status.steps[-1].kind == "full"
    untuned = Evaluate(devset=VAL, metric=METRIC, display_progress=False)(student(lm)).score
    assert status.best_score is not None and status.best_score > untuned, (untuned, status.best_score)

    # a job that fails: the optimization fails with the provider's reason, no "completed"
    sim.control.configure(finetune_fail=1.0, finetune_seconds=0.5)
    failing = submit(pipeline, lm, train_kwargs={"suffix": "failing"})  # not the job above again
    ended = wait_job(pipeline, failing)
    assert ended.state == "failed" and "Simulated training failure" in (ended.reason or ""), ended
    assert "Simulated training failure" in status_command(pipeline, failing)
    assert fine_tuning(sim)["by_status"] == {"succeeded": 1, "failed": 1}

    # a cancelled optimization cancels its running fine-tuning job at the provider
    sim.control.configure(finetune_fail=0.0, finetune_seconds=600.0)
    cancelled = submit(pipeline, lm, train_kwargs={"suffix": "cancelled"})
    wait_for(lambda: running_job_id(pipeline, cancelled), JOB_TIMEOUT_S, "the job", poll=0.25)
    pipeline.client.cancel(cancelled)
    assert wait_job(pipeline, cancelled).state == "cancelled"
    wait_for(lambda: fine_tuning(sim)["by_status"].get("cancelled") == 1, 30, "the job cancelled")
