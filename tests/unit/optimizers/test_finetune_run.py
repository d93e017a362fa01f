"""BootstrapFinetune's step-by-step run against the simulated LM's fine-tuning API (a simulation:
in-process server, real HTTP): the checkpoint after each step, a resume that re-attaches to the
running job (one job at the provider), a failed job's reason, and the cluster knobs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError, FinetuneError, SecurityPolicyError
from dspex.optimizers import LocalExecutor
from dspex.optimizers.registry import cluster_optimizer
from dspex.processors.security import SecurityPolicy
from dspex.testing import SimulatedLMServer, arithmetic_dataset

METRIC = "numeric_equal:answer"
TRAIN = arithmetic_dataset(30, seed=11)
VAL = arithmetic_dataset(40, seed=12)


@pytest.fixture
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(in_process=True, finetune_seconds=0.2) as server:
        yield server


def student(sim: SimulatedLMServer, cache_dir: Path) -> dspex.Predict:
    program = dspex.Predict("question -> answer")
    program.set_lm(dspex.LM("sim/arith", api_base=sim.base_url, cache_dir=cache_dir))
    return program


def optimizer(**knobs: Any) -> dspex.BootstrapFinetune:
    return dspex.BootstrapFinetune(
        metric=METRIC, provider_settings={"poll_interval": 0.02}, wait_step_s=0.2, **knobs
    )


def created(sim: SimulatedLMServer) -> int:
    return int(sim.control.stats()["fine_tuning"]["created"])


def test_each_step_checkpoints_and_a_resumed_run_reattaches_to_the_running_job(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    sim.control.configure(finetune_seconds=600.0)  # runs until the test shortens it

    async def first_two_steps() -> list[dict[str, Any]]:
        run = optimizer().start(student(sim, tmp_path), trainset=TRAIN, executor=LocalExecutor())
        states = []
        for _ in range(2):
            await run.step()
            states.append(run.state_dict())
        return states

    gathered, started = asyncio.run(first_two_steps())
    [job] = gathered["state"]["jobs"]
    assert gathered["state"]["phase"] == "train" and job["job_id"] is None and len(job["records"]) >= 10
    assert started["state"]["phase"] == "wait"
    [job] = started["state"]["jobs"]
    assert job["job_id"].startswith("ftjob-") and job["file_id"].startswith("file-")
    assert created(sim) == 1

    # another process's run (fresh LMs and provider) from the checkpoint of the train step
    sim.control.configure(finetune_seconds=0.5)

    async def resumed() -> dspex.Module:
        run = optimizer().start(
            student(sim, tmp_path), trainset=TRAIN, executor=LocalExecutor(), state=started
        )
        program = await run.run_to_end()
        assert run.state_dict()["state"]["jobs"][0]["job_id"] == job["job_id"]
        return program

    tuned = asyncio.run(resumed())
    assert tuned.predictors()[0].lm.model == f"sim/ft:arith:dspex:{job['job_id']}"
    stats = sim.control.stats()["fine_tuning"]
    assert stats["created"] == 1 and stats["by_status"] == {"succeeded": 1}, stats


def test_the_tuned_program_is_scored_on_the_valset_as_the_last_step(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    run = optimizer().start(student(sim, tmp_path), trainset=TRAIN, valset=VAL)
    tuned = asyncio.run(run.run_to_end())
    kinds = [trial.kind for trial in run.history.trials]
    assert kinds[0] == "bootstrap" and kinds[-1] == "full", kinds
    assert run.history.best_candidate_id == dspex.serialization.candidate_id(tuned)
    assert run.history.best_score is not None and run.history.best_score > 0
    assert tuned.predictors()[0].lm.model.startswith("sim/ft:arith:dspex:")


def test_a_failed_job_fails_the_run_with_the_providers_reason(sim: SimulatedLMServer, tmp_path: Path) -> None:
    sim.control.configure(finetune_fail=1.0)
    run = optimizer(train_kwargs={"suffix": "failing"}).start(student(sim, tmp_path), trainset=TRAIN)
    with pytest.raises(FinetuneError, match="Simulated training failure") as caught:
        asyncio.run(run.run_to_end())
    assert caught.value.reason and "Simulated training failure" in caught.value.reason
    assert run.history.stopped is not None and "Simulated training failure" in run.history.stopped
    assert not run.done and run.result().predictors()[0].lm.model == "sim/arith"  # never "tuned"


def test_cluster_knobs_are_checked_and_a_foreign_upload_base_needs_the_workers_permission() -> None:
    built = cluster_optimizer(
        "bootstrap-finetune", {"provider_settings": {"poll_interval": 1}}, {"metric": METRIC, "seed": 0}
    )
    assert isinstance(built, dspex.BootstrapFinetune) and built.metric is not None
    with pytest.raises(ConfigurationError, match="poll_intervall"):
        dspex.BootstrapFinetune(provider_settings={"poll_intervall": 1})
    with pytest.raises(ConfigurationError, match="wait_step_s"):
        dspex.BootstrapFinetune(wait_step_s=0)

    class Pool:
        policy = SecurityPolicy(allow_api_bases=("http://127.0.0.1:9/v1",))

    elsewhere = dspex.BootstrapFinetune(provider_settings={"api_base": "https://trainer.example/v1"})
    with pytest.raises(SecurityPolicyError):
        elsewhere.bind_worker_lms(Pool())
    dspex.BootstrapFinetune(provider_settings={"api_base": "http://127.0.0.1:9/v1"}).bind_worker_lms(Pool())


class RecordingExecutor(LocalExecutor):
    """A LocalExecutor that remembers what it was asked to run."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[int] = []
        self.evaluations: list[int] = []

    async def run(self, program: Any, examples: Any, **options: Any) -> Any:
        self.runs.append(len(examples))
        return await super().run(program, examples, **options)

    async def evaluate_many(self, candidates: Any, examples: Any, metric: Any, **options: Any) -> Any:
        self.evaluations.append(len(examples))
        return await super().evaluate_many(candidates, examples, metric, **options)


def test_teacher_runs_and_the_valset_score_go_through_the_runs_executor(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    executor = RecordingExecutor()
    run = optimizer().start(student(sim, tmp_path), trainset=TRAIN, valset=VAL, executor=executor)
    asyncio.run(run.run_to_end())
    assert executor.runs == [len(TRAIN)] and executor.evaluations == [len(VAL)]


class TwoSteps(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.draft = dspex.Predict("question -> answer")
        self.final = dspex.Predict("question -> answer")

    def forward(self, question: str) -> dspex.Prediction:
        self.draft(question=question)
        return self.final(question=question)


def test_predictors_sharing_an_lm_share_its_job_and_per_lm_train_kwargs_still_apply(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    lm = dspex.LM("sim/arith", api_base=sim.base_url, cache_dir=tmp_path)
    program = TwoSteps()
    program.set_lm(lm)
    # train_kwargs keyed by the LM as given, though the run uses its copy with the run's provider
    tuned = optimizer(train_kwargs={lm: {"n_epochs": 1}}).compile(program, trainset=TRAIN)
    assert created(sim) == 1
    models = {predictor.lm.model for predictor in tuned.predictors()}
    assert len(models) == 1 and models.pop().startswith("sim/ft:arith:dspex:")


def test_cancelling_the_training_cancels_the_running_job_at_the_provider(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    sim.control.configure(finetune_seconds=600.0)

    async def started_then_cancelled() -> list[str]:
        run = optimizer().start(student(sim, tmp_path), trainset=TRAIN)
        await run.step()
        await run.step()
        return await run.acancel_training()  # type: ignore[attr-defined]

    [cancelled] = asyncio.run(started_then_cancelled())
    assert cancelled.startswith("ftjob-")
    sim.control.wait_until(lambda stats: stats["fine_tuning"]["by_status"] == {"cancelled": 1}, timeout=30)
