"""Cluster evaluations and optimizations logged to a real MLflow tracking server (the session's,
from its cached environment), read back both through its REST API (plain HTTP) and through MLflow's
own client (``MlflowClient``): through ``dspex.Client`` with ``dspex.configure(mlflow=...)``, and
through ``dspex eval`` / ``dspex optimize`` with ``--mlflow-uri``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_optimize import wait_optimizer_owns_jobs
from e2e_pipeline import JOB_TIMEOUT_S, Pipeline, devset, predict_program, sim_lm, wait_for
from mlflow_tools import MlflowServer, metrics_of, mlflow_client, params_of, steps_of, tags_of

import dspex
from dspex import metrics, tracking
from dspex.optimizers.executor import KafkaExecutor
from dspex.optimizers.random_search import BootstrapFewShotWithRandomSearch
from dspex.schemas import OptimizeStatus
from dspex.serialization import candidate_id
from dspex.testing import SimulatedLMServer
from dspex.tracking import MlflowSettings
from dspex.tracking.content import dataset_fingerprint

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 12
KEY_ENV = "DSPEX_TEST_MLFLOW_KEY"
SECRET = "sk-mlflow-e2e-" + uuid.uuid4().hex


@pytest.fixture
def experiment(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(KEY_ENV, SECRET)  # the client's key variable: its value must never be logged
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    yield name
    dspex.configure(mlflow=None)


@pytest.fixture
def logging_on(mlflow_server: MlflowServer, experiment: str) -> str:
    """This process logs to ``experiment`` (its name) on the session's server."""
    dspex.configure(
        mlflow=MlflowSettings(tracking_uri=mlflow_server.url, experiment=experiment, timeout_s=60)
    )
    return experiment


@pytest.fixture
def sim(sim_factory: Callable[..., SimulatedLMServer]) -> SimulatedLMServer:
    return sim_factory(latency=0.002)


@pytest.fixture
def client(mlflow_server: MlflowServer) -> Any:
    return mlflow_client(mlflow_server)


def runs_of_kind(server: MlflowServer, experiment: str, kind: str) -> list[dict[str, Any]]:
    return [run for run in server.runs(experiment) if tags_of(run).get("dspex.kind") == kind]


def no_secret_in(server: MlflowServer, run: dict[str, Any]) -> None:
    assert SECRET not in json.dumps(run)
    for path in server.artifact_paths(run):
        assert SECRET.encode() not in server.artifact(run, path), path


def dspex_command(
    pipeline: Pipeline, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dspex.cli", *args, "--bootstrap", pipeline.bootstrap]
    command += ["--prefix", pipeline.prefix]
    environ = {**os.environ, **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=environ)


def write_jsonl(path: Path, examples: list[Any]) -> Path:
    path.write_text("".join(json.dumps(example.to_dict()) + "\n" for example in examples))
    return path


def test_a_client_evaluation_on_the_cluster_logs_its_run(
    shared_pipeline: Pipeline,
    sim: SimulatedLMServer,
    cache_dir: Path,
    mlflow_server: MlflowServer,
    logging_on: str,
    client: Any,
    tmp_path: Path,
) -> None:
    lm = sim_lm(sim, cache_dir, api_key_env=KEY_ENV)
    examples = devset(EXAMPLES, seed=21)
    program = predict_program()
    (result,) = shared_pipeline.evaluate([program], examples, lm)
    assert tracking.flush(300)  # runs are sent from a background thread

    [run] = runs_of_kind(mlflow_server, logging_on, "evaluation")
    params, logged = params_of(run), metrics_of(run)
    assert run["info"]["status"] == "FINISHED"
    assert params["program_id"] == candidate_id(program) and params["model"] == "openai/simulated"
    assert params["dataset_fingerprint"] == dataset_fingerprint(examples)
    assert params["num_examples"] == str(EXAMPLES) and len(params["job_id"]) > 0
    assert logged["score"] == result.score and logged["lm_calls"] == result.usage.lm_calls == EXAMPLES
    assert logged["total_tokens"] == result.usage.total_tokens > 0
    table = mlflow_server.artifact_json(run, "results.json")
    assert [row["score"] for row in table["results"]] == [record.score for record in result.records]
    assert candidate_id(mlflow_server.artifact_json(run, "program.json")) == candidate_id(program)
    no_secret_in(mlflow_server, run)
    # the same run through MLflow's client: its data, and the program downloaded from its artifacts
    read = client.get_run(run["info"]["run_id"])
    assert read.data.params == params and read.data.metrics == logged
    downloaded = client.download_artifacts(read.info.run_id, "program.json", str(tmp_path))
    assert candidate_id(json.loads(Path(downloaded).read_text())) == candidate_id(program)
    shared_pipeline.wait_drained()


def test_a_long_evaluation_logs_its_running_score_cost_and_tokens_as_steps(
    shared_pipeline: Pipeline,
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
    mlflow_server: MlflowServer,
    logging_on: str,
    client: Any,
) -> None:
    # ~12 examples at once (4 per predictor), 0.25 s each: seconds long, several statuses a run
    sim = sim_factory(latency=0.25)
    lm = sim_lm(sim, cache_dir)
    examples = devset(200, seed=23)
    (result,) = shared_pipeline.evaluate([predict_program()], examples, lm, num_threads=4)
    assert tracking.flush(300)

    [run] = runs_of_kind(mlflow_server, logging_on, "evaluation")
    run_id = run["info"]["run_id"]
    scores = steps_of(client, run_id, "score")
    steps = [step for step, _ in scores]
    assert len(steps) >= 3 and steps == sorted(set(steps)), scores  # several, strictly increasing
    assert scores[-1] == (len(examples), result.score)
    assert steps[0] > 0 and steps[-2] < len(examples)
    tokens = steps_of(client, run_id, "total_tokens")
    assert [step for step, _ in tokens] == steps
    assert [value for _, value in tokens] == sorted(value for _, value in tokens)
    assert tokens[-1][1] == result.usage.total_tokens
    rates = steps_of(client, run_id, "examples_per_s")
    assert len(rates) == len(steps) and all(rate > 0 for _, rate in rates)
    shared_pipeline.wait_drained()


def test_dspex_eval_with_mlflow_uri_logs_the_same_run_as_it_prints(
    shared_pipeline: Pipeline,
    sim: SimulatedLMServer,
    mlflow_server: MlflowServer,
    experiment: str,
    tmp_path: Path,
) -> None:
    program = predict_program()
    program.save(tmp_path / "program.json")
    examples = devset(EXAMPLES, seed=22)
    data = write_jsonl(tmp_path / "dev.jsonl", examples)
    done = dspex_command(
        shared_pipeline, "eval", str(tmp_path / "program.json"), str(data), "--inputs", "question",
        "--metric", "numeric_equal:answer", "--lm", "openai/simulated", "--api-base", sim.base_url,
        "--api-key-env", KEY_ENV, "--json", "--mlflow-uri", mlflow_server.url,
        env={"MLFLOW_EXPERIMENT_NAME": experiment, KEY_ENV: SECRET},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)

    [run] = runs_of_kind(mlflow_server, experiment, "evaluation")
    params, logged = params_of(run), metrics_of(run)
    assert params["job_id"] == printed["job_id"] and params["num_examples"] == str(EXAMPLES)
    assert params["dataset_fingerprint"] == dataset_fingerprint(examples)
    assert logged["score"] == printed["score"] and logged["errors"] == printed["errors"]
    assert logged["lm_calls"] == printed["usage"]["lm_calls"] == EXAMPLES
    no_secret_in(mlflow_server, run)
    shared_pipeline.wait_drained()


def test_an_optimization_is_logged_by_the_cli_and_by_a_worker_started_with_mlflow_uri(
    pipeline_factory: Callable[..., Pipeline],
    sim: SimulatedLMServer,
    mlflow_server: MlflowServer,
    experiment: str,
    client: Any,
    tmp_path: Path,
    cache_dir: Path,
) -> None:
    worker_experiment = experiment + "-worker"  # the worker's runs go to an experiment of their own
    pipeline = pipeline_factory(env={"MLFLOW_EXPERIMENT_NAME": worker_experiment})
    pipeline.start_workers(1)
    pipeline.start("optimize", "--mlflow-uri", mlflow_server.url)
    pipeline.wait_ready()
    wait_optimizer_owns_jobs(pipeline)
    predict_program().save(tmp_path / "program.json")
    train = write_jsonl(tmp_path / "train.jsonl", devset(8, seed=31))
    val = write_jsonl(tmp_path / "val.jsonl", devset(10, seed=32))
    done = dspex_command(
        pipeline, "optimize", str(tmp_path / "program.json"), str(train), "--valset", str(val),
        "--inputs", "question", "--metric", "numeric_equal:answer", "--optimizer", "bootstrap-rs",
        "--knob", "num_candidate_programs=1", "--knob", "max_bootstrapped_demos=2", "--seed", "5",
        "--lm", "openai/simulated", "--api-base", sim.base_url, "--output", str(tmp_path / "best.json"),
        "--mlflow-uri", mlflow_server.url, "--timeout", "240",
        env={"MLFLOW_EXPERIMENT_NAME": experiment},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status = pipeline.client.status(_job_id(done.stderr))
    assert status is not None and status.state == "completed"
    scored = [(index, step.score) for index, step in enumerate(status.steps) if step.score is not None]
    assert len(scored) >= 3  # zero-shot, labeled, bootstrapped
    best = dspex.load(tmp_path / "best.json")

    # the client's run (dspex optimize --mlflow-uri) ...
    [run] = runs_of_kind(mlflow_server, experiment, "optimization")
    assert run["info"]["status"] == "FINISHED", done.stderr  # the CLI ended it once its uploads were in
    params = params_of(run)
    assert (params["optimizer"], params["seed"], params["job_id"]) == ("bootstrap-rs", "5", status.job_id)
    assert params["knob.num_candidate_programs"] == "1" and params["num_trials"] == str(len(status.steps))
    history = mlflow_server.metric_history(run["info"]["run_id"], "score")
    assert [(int(point["step"]), float(point["value"])) for point in history] == scored
    assert metrics_of(run)["best_score"] == status.best_score
    assert mlflow_server.artifact_paths(run) == ["best_program.json", "best_program.txt"], done.stderr
    assert candidate_id(mlflow_server.artifact_json(run, "best_program.json")) == candidate_id(best)

    # ... and the worker's, with the optimization's candidate evaluations as its children
    worker_run = wait_for(
        lambda: _finished(mlflow_server, worker_experiment), 120, "the worker's optimization run"
    )
    assert params_of(worker_run)["job_id"] == status.job_id
    worker_history = mlflow_server.metric_history(worker_run["info"]["run_id"], "score")
    assert [(int(point["step"]), float(point["value"])) for point in worker_history] == scored
    assert candidate_id(mlflow_server.artifact_json(worker_run, "best_program.json")) == candidate_id(best)
    children = runs_of_kind(mlflow_server, worker_experiment, "evaluation")
    assert children and all(
        tags_of(child)["mlflow.parentRunId"] == worker_run["info"]["run_id"] for child in children
    )
    assert {params_of(child)["program_id"] for child in children} >= {
        step.candidate_id for step in status.steps if step.kind == "full"
    }

    # each trial's step holds the usage spent so far, as the statuses said (the whole at the end)
    for logged in (run, worker_run):
        calls = steps_of(client, logged["info"]["run_id"], "lm_calls")
        assert [step for step, _ in calls] == list(range(len(status.steps) + 1)), calls
        values = [value for _, value in calls]
        assert values == sorted(values) and values[-1] == status.usage.lm_calls, calls
        tokens = steps_of(client, logged["info"]["run_id"], "total_tokens")
        assert len(tokens) == len(calls) and tokens[-1][1] == status.usage.total_tokens
        assert len(steps_of(client, logged["info"]["run_id"], "cost_usd")) == len(calls)
    worker_calls = [value for _, value in steps_of(client, worker_run["info"]["run_id"], "lm_calls")]
    assert len(set(worker_calls)) >= 2  # logged step by step, not once at the end

    # the worker's run through MLflow's client: its steps, its nested runs and its best program
    run_id = worker_run["info"]["run_id"]
    assert steps_of(client, run_id, "score") == scored
    assert client.get_run(run_id).data.tags["dspex.job_id"] == status.job_id
    nested = client.search_runs(
        [client.get_run(run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
    )
    assert sorted(child.info.run_id for child in nested) == sorted(c["info"]["run_id"] for c in children)
    downloaded = client.download_artifacts(run_id, "best_program.json", str(tmp_path))
    assert candidate_id(json.loads(Path(downloaded).read_text())) == candidate_id(best)

    # Client.optimize with dspex.configure(mlflow=...): a run of the client's own, trials as they come
    own_experiment = experiment + "-client"
    dspex.configure(
        mlflow=MlflowSettings(tracking_uri=mlflow_server.url, experiment=own_experiment, timeout_s=60)
    )
    label = f"mlflow-client-{uuid.uuid4().hex[:8]}"
    with dspex.context(lm=sim_lm(sim, cache_dir)):
        own_best = pipeline.client.optimize(
            predict_program(), devset(8, seed=35), devset(10, seed=36), "numeric_equal:answer",
            optimizer="bootstrap-rs", knobs={"num_candidate_programs": 1, "max_bootstrapped_demos": 2},
            seed=6, name=label, timeout=240,
        )  # fmt: skip
    assert tracking.flush(300)
    [own] = [s for s in pipeline.client.jobs().values() if isinstance(s, OptimizeStatus) and s.name == label]
    [own_run] = runs_of_kind(mlflow_server, own_experiment, "optimization")
    assert own_run["info"]["status"] == "FINISHED" and params_of(own_run)["job_id"] == own.job_id
    own_scored = [(index, step.score) for index, step in enumerate(own.steps) if step.score is not None]
    assert steps_of(client, own_run["info"]["run_id"], "score") == own_scored and len(own_scored) >= 3
    calls = steps_of(client, own_run["info"]["run_id"], "lm_calls")
    assert [step for step, _ in calls] == list(range(len(own.steps) + 1))
    assert calls[-1][1] == own.usage.lm_calls
    assert candidate_id(mlflow_server.artifact_json(own_run, "best_program.json")) == candidate_id(own_best)


def test_without_nested_evaluations_a_compile_on_the_cluster_logs_only_its_own_run(
    shared_pipeline: Pipeline,
    sim: SimulatedLMServer,
    cache_dir: Path,
    mlflow_server: MlflowServer,
    experiment: str,
    client: Any,
) -> None:
    settings = MlflowSettings(
        tracking_uri=mlflow_server.url, experiment=experiment, timeout_s=60, nested_evaluations=False
    )
    dspex.configure(mlflow=settings)
    optimizer = BootstrapFewShotWithRandomSearch(
        metrics.numeric_equal("answer"),
        max_bootstrapped_demos=1,
        max_labeled_demos=2,
        num_candidate_programs=1,
        seed=4,
    )
    executor = KafkaExecutor(shared_pipeline.client, timeout=JOB_TIMEOUT_S)
    with dspex.context(lm=sim_lm(sim, cache_dir)):
        train, val = devset(8, seed=33), devset(8, seed=34)
        optimizer.compile(predict_program(), trainset=train, valset=val, executor=executor)
    assert tracking.flush(300)
    trials = optimizer.history.trials if optimizer.history is not None else []
    scored = [(index, trial.score) for index, trial in enumerate(trials) if trial.score is not None]
    assert len(scored) >= 3  # its candidates were evaluated on the cluster ...

    [run] = runs_of_kind(mlflow_server, experiment, "optimization")
    assert steps_of(client, run["info"]["run_id"], "score") == scored
    assert runs_of_kind(mlflow_server, experiment, "evaluation") == []  # ... and none is a run
    shared_pipeline.wait_drained()


def _finished(server: MlflowServer, experiment: str) -> dict[str, Any] | None:
    try:
        runs = runs_of_kind(server, experiment, "optimization")
    except httpx.HTTPStatusError:  # the experiment is made with the worker's first run
        return None
    done = [run for run in runs if run["info"]["status"] == "FINISHED"]
    return done[0] if done else None


def _job_id(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("job ") and "submitted" in line:
            return line.split()[1]
    raise AssertionError(f"no job id in: {stderr}")
