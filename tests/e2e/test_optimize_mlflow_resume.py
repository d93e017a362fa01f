"""An optimization whose `dspex worker optimize --mlflow-uri` is killed (SIGKILL) goes on in the same
MLflow run when another worker resumes it: one run for the job, its trials as steps continuing from
where the first worker left them, none twice; read back with MLflow's own client (``MlflowClient``).

The kill is event-driven, as in the COPRO resume test: the simulated LM holds requests once COPRO's
first round (proposals, then their evaluation) is through, so the first worker is stuck proposing
round 2 with the round-1 trials checkpointed and logged as steps of its run.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_optimize import checkpoint_steps, local_run, submit, wait_job, wait_optimizer_owns_jobs
from e2e_pipeline import JOB_TIMEOUT_S, Pipeline, sim_lm, wait_for
from mlflow_tools import MlflowServer, mlflow_client, steps_of
from test_optimize_copro_cluster import CASE as COPRO_CASE

from dspex.testing import SimulatedLMServer
from dspex.tracking import JOB_TAG

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CASE = COPRO_CASE  # breadth 3, depth 2: proposals, evaluation, proposals, evaluation


def optimization_runs(client: Any, experiment: str) -> list[Any]:
    """The optimization runs of the test's own experiment (its only job's)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(client.search_runs([found.experiment_id], "tags.`dspex.kind` = 'optimization'"))


def test_a_resumed_optimization_goes_on_in_its_mlflow_run(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
    mlflow_server: MlflowServer,
) -> None:
    sim = sim_factory(latency=0.01)
    lm = sim_lm(sim, cache_dir)
    reference = local_run(sim, lm, CASE)
    assert len(reference.calls_per_step) == 4  # proposals, evaluation, proposals, evaluation
    experiment = f"e2e-resume-{uuid.uuid4().hex[:8]}"
    pipeline = pipeline_factory(env={"MLFLOW_EXPERIMENT_NAME": experiment})
    pipeline.start_workers(1)
    first = pipeline.start("optimize", "--mlflow-uri", mlflow_server.url)
    pipeline.wait_ready()
    wait_optimizer_owns_jobs(pipeline)
    client = mlflow_client(mlflow_server)

    sim.control.hold(after=reference.calls_per_step[0] + reference.calls_per_step[1])
    job_id = submit(pipeline, lm, CASE)

    def round_one_logged() -> list[tuple[int, float]] | None:
        if sim.control.stats()["held"] == 0 or 2 not in checkpoint_steps(pipeline, job_id):
            return None
        runs = optimization_runs(client, experiment)
        return steps_of(client, runs[0].info.run_id, "score") if len(runs) == 1 else None

    before_kill = wait_for(
        round_one_logged, JOB_TIMEOUT_S, "round 1's trials in the job's MLflow run", detail=pipeline.report
    )
    first.kill()
    sim.control.release()
    pipeline.start("optimize", "--mlflow-uri", mlflow_server.url)
    status = wait_job(pipeline, job_id)
    assert status.state == "completed" and status.steps == reference.trials, status.reason

    [run] = wait_for(
        lambda: [r for r in optimization_runs(client, experiment) if r.info.status == "FINISHED"] or None,
        120,
        "the job's run to end",
    )
    assert len(optimization_runs(client, experiment)) == 1  # one run for the job, across both workers
    scored = [(index, trial.score) for index, trial in enumerate(status.steps) if trial.score is not None]
    history = steps_of(client, run.info.run_id, "score")
    assert history == scored  # every trial once, at its own step: strictly increasing, none twice
    assert 0 < len(before_kill) < len(history) and history[: len(before_kill)] == before_kill
    assert run.data.params["job_id"] == job_id and run.data.tags[JOB_TAG] == job_id
    evaluations = [
        r for r in client.search_runs([run.info.experiment_id]) if r.info.run_id != run.info.run_id
    ]
    assert evaluations and all(r.data.tags["mlflow.parentRunId"] == run.info.run_id for r in evaluations)
