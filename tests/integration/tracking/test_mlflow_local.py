"""Local evaluations and compiles logged to a real MLflow tracking server (started by the session
from its cached environment), read back through MLflow's REST API."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from mlflow_tools import MlflowServer, free_port, metrics_of, mlflow_client, params_of, steps_of, tags_of

import dspex
from dspex import metrics, tracking
from dspex.configuration import configure, reset_settings
from dspex.errors import ConfigurationError
from dspex.evaluate import Evaluate
from dspex.lm import LM
from dspex.modules import Predict
from dspex.optimizers.random_search import BootstrapFewShotWithRandomSearch
from dspex.serialization import candidate_id
from dspex.testing import SimulatedLMServer, arithmetic_dataset
from dspex.tracking import MlflowSettings
from dspex.tracking.content import dataset_fingerprint
from dspex.tracking.logger import EXPORT_ERRORS

METRIC = metrics.numeric_equal("answer")
SECRET = "sk-mlflow-test-" + uuid.uuid4().hex


@pytest.fixture
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(latency=0.0) as server:
        yield server


@pytest.fixture
def experiment(mlflow_server: MlflowServer) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    # a loaded CI machine's server took 8 s for one request: a timeout that tolerates it
    configure(mlflow=MlflowSettings(tracking_uri=mlflow_server.url, experiment=name, timeout_s=60))
    try:
        yield name
    finally:
        configure(mlflow=None)
        reset_settings()


def keyed_program(sim: SimulatedLMServer) -> Predict:
    lm = LM("openai/sim", api_base=sim.base_url, api_key=SECRET, cache=False)
    return Predict("question -> answer", lm=lm)


def only_run(server: MlflowServer, experiment: str, kind: str) -> dict[str, Any]:
    runs = [run for run in server.runs(experiment) if tags_of(run).get("dspex.kind") == kind]
    assert len(runs) == 1, [run["info"]["run_name"] for run in runs]
    return runs[0]


def no_secret_in(server: MlflowServer, run: dict[str, Any]) -> None:
    assert SECRET not in json.dumps(run)  # params, tags, metrics, run name
    for path in server.artifact_paths(run):
        assert SECRET.encode() not in server.artifact(run, path), path


async def test_an_evaluation_is_one_run_with_its_params_metrics_and_artifacts(
    mlflow_server: MlflowServer, experiment: str, sim: SimulatedLMServer
) -> None:
    devset = arithmetic_dataset(12, seed=5)
    program = keyed_program(sim)
    result = await Evaluate(devset=devset, metric=METRIC, concurrency=4).acall(program)
    assert tracking.flush(300)  # runs are sent from a background thread

    run = only_run(mlflow_server, experiment, "evaluation")
    assert run["info"]["status"] == "FINISHED"
    params, logged = params_of(run), metrics_of(run)
    assert params["program"] == "Predict" and params["program_id"] == candidate_id(program)
    assert params["model"] == "openai/sim" and params["metric"] == result.metric
    assert params["dataset_fingerprint"] == dataset_fingerprint(devset) and params["num_examples"] == "12"
    assert logged["score"] == result.score and 0 < result.score < 100
    assert logged["lm_calls"] == result.usage.lm_calls == 12
    assert logged["total_tokens"] == result.usage.total_tokens > 0
    assert logged["cost_usd"] == pytest.approx(result.usage.cost_usd)
    assert logged["errors"] == result.errors
    assert logged["examples_per_s"] == pytest.approx(result.examples_per_s)

    assert mlflow_server.artifact_paths(run) == ["program.json", "results.json"]
    table = mlflow_server.artifact_json(run, "results.json")
    assert [row["score"] for row in table["results"]] == [record.score for record in result.records]
    assert [row["example"]["question"] for row in table["results"]] == [ex.question for ex in devset]
    assert [row["prediction"]["answer"] for row in table["results"]] == [
        record.prediction.answer for record in result.records if record.prediction is not None
    ]
    assert candidate_id(mlflow_server.artifact_json(run, "program.json")) == candidate_id(program)
    no_secret_in(mlflow_server, run)


async def test_a_longer_evaluation_logs_its_running_score_cost_and_tokens_as_steps(
    mlflow_server: MlflowServer, experiment: str
) -> None:
    # 4 at once, 0.1 s each: 60 examples take about 1.5 s, past the least interval between points
    with SimulatedLMServer(latency=0.1) as slow:
        devset = arithmetic_dataset(60, seed=11)
        result = await Evaluate(devset=devset, metric=METRIC, concurrency=4).acall(keyed_program(slow))
    assert tracking.flush(300)

    run = only_run(mlflow_server, experiment, "evaluation")  # the progress and the result: one run
    assert run["info"]["status"] == "FINISHED"
    client = mlflow_client(mlflow_server)
    scores = steps_of(client, run["info"]["run_id"], "score")
    steps = [step for step, _ in scores]
    assert len(steps) >= 3 and steps == sorted(set(steps)), scores  # progress points, then the end
    assert steps[0] > 0 and steps[-2] < len(devset)
    assert scores[-1] == (len(devset), result.score)
    tokens = steps_of(client, run["info"]["run_id"], "total_tokens")
    assert [step for step, _ in tokens] == steps
    assert [value for _, value in tokens] == sorted(value for _, value in tokens)
    assert tokens[-1][1] == result.usage.total_tokens
    costs = steps_of(client, run["info"]["run_id"], "cost_usd")
    assert [step for step, _ in costs] == steps and costs[-1][1] == pytest.approx(result.usage.cost_usd)
    calls = steps_of(client, run["info"]["run_id"], "lm_calls")
    assert all(value == step for step, value in calls[:-1])  # one LM call per example done
    rates = steps_of(client, run["info"]["run_id"], "examples_per_s")
    assert len(rates) == len(steps) and all(rate > 0 for _, rate in rates)
    assert mlflow_server.artifact_paths(run) == ["program.json", "results.json"]


async def test_a_compile_is_a_run_with_a_step_per_trial_and_its_evaluations_as_children(
    mlflow_server: MlflowServer, experiment: str, sim: SimulatedLMServer
) -> None:
    trainset = arithmetic_dataset(6, seed=7)
    optimizer = BootstrapFewShotWithRandomSearch(
        METRIC, max_bootstrapped_demos=1, max_labeled_demos=2, num_candidate_programs=2, seed=3
    )
    best = await optimizer.acompile(keyed_program(sim), trainset=trainset)
    trials = optimizer.history.trials if optimizer.history is not None else []
    assert tracking.flush(300)

    parent = only_run(mlflow_server, experiment, "optimization")
    params = params_of(parent)
    assert parent["info"]["status"] == "FINISHED"
    assert params["optimizer"] == "BootstrapFewShotWithRandomSearch" and params["seed"] == "3"
    assert params["knob.num_candidate_programs"] == "2" and params["num_trials"] == str(len(trials))
    assert params["dataset_fingerprint"] == dataset_fingerprint(trainset)
    # one MLflow step per trial, in history order
    scored = [(index, trial.score) for index, trial in enumerate(trials) if trial.score is not None]
    assert len(scored) >= 3  # the zero-shot, labeled and bootstrapped candidates at least
    history = mlflow_server.metric_history(parent["info"]["run_id"], "score")
    assert [(int(point["step"]), float(point["value"])) for point in history] == scored
    # the usage spent so far at each trial's step, logged after each optimizer step; the whole at the end
    usage = optimizer.history.usage if optimizer.history is not None else None
    assert usage is not None and usage.lm_calls > 0
    client = mlflow_client(mlflow_server)
    for key, total in (("lm_calls", usage.lm_calls), ("total_tokens", usage.total_tokens)):
        points = steps_of(client, parent["info"]["run_id"], key)
        assert [step for step, _ in points] == list(range(len(trials) + 1)), (key, points)
        values = [value for _, value in points]
        assert values == sorted(values) and len(set(values)) >= 2 and values[-1] == total, (key, points)
    costs = steps_of(client, parent["info"]["run_id"], "cost_usd")
    assert len(costs) == len(trials) + 1 and costs[-1][1] == pytest.approx(usage.cost_usd)
    assert len(steps_of(client, parent["info"]["run_id"], "examples_per_s")) == len(trials)
    assert mlflow_server.artifact_paths(parent) == ["best_program.json", "best_program.txt"]
    assert candidate_id(mlflow_server.artifact_json(parent, "best_program.json")) == candidate_id(best)
    text = mlflow_server.artifact(parent, "best_program.txt").decode()
    assert best.predictors()[0].signature.instructions in text
    assert f"demos ({len(best.predictors()[0].demos)})" in text

    children = [r for r in mlflow_server.runs(experiment) if tags_of(r).get("dspex.kind") == "evaluation"]
    assert children and all(
        tags_of(child)["mlflow.parentRunId"] == parent["info"]["run_id"] for child in children
    )
    no_secret_in(mlflow_server, parent)


def test_an_unreachable_tracking_uri_is_a_one_line_configuration_error() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigurationError) as raised:
        configure(mlflow=uri)
    message = str(raised.value)
    assert uri in message and "\n" not in message
    assert dspex.settings.mlflow is None  # logging stays off


class _FailingAfterCheck(BaseHTTPRequestHandler):
    """A tracking server that finds the experiment, then answers every later request with a 503:
    one that broke after the start-up check."""

    def do_GET(self) -> None:
        if "experiments/get-by-name" in self.path:
            self._answer(200, {"experiment": {"experiment_id": "1", "name": "broken"}})
        else:
            self._answer(503, {"message": "backend store unavailable"})

    def do_POST(self) -> None:
        self._answer(503, {"message": "backend store unavailable"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_a_server_failing_mid_run_leaves_the_evaluation_whole_and_says_why(
    sim: SimulatedLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FailingAfterCheck)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        configure(mlflow=uri)  # the check passes: the experiment is found
        errors_before = EXPORT_ERRORS._value.get()
        devset = arithmetic_dataset(4, seed=9)
        with caplog.at_level(logging.WARNING, logger="dspex.tracking"):
            result = await Evaluate(devset=devset, metric=METRIC).acall(keyed_program(sim))
            assert tracking.flush(60)
    finally:
        configure(mlflow=None)
        reset_settings()
        server.shutdown()
        server.server_close()
    assert result.processed == 4 and result.errors == 0
    assert EXPORT_ERRORS._value.get() == errors_before + 1
    [warning] = [r for r in caplog.records if r.name == "dspex.tracking"]
    assert "evaluation was not logged to MLflow" in warning.getMessage()
    assert uri in warning.getMessage() and "503" in warning.getMessage()


_RELEASE = threading.Event()


class _SilentAfterCheck(_FailingAfterCheck):
    """A tracking server that finds the experiment, then accepts every later request and never
    answers (until the test releases it)."""

    def do_POST(self) -> None:
        _RELEASE.wait(120)
        self._answer(503, {"message": "released"})


async def test_a_server_that_never_answers_does_not_slow_the_evaluation(sim: SimulatedLMServer) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SilentAfterCheck)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    _RELEASE.clear()
    try:
        configure(mlflow=MlflowSettings(tracking_uri=uri, timeout_s=30))
        started = time.perf_counter()
        result = await Evaluate(devset=arithmetic_dataset(4, seed=9), metric=METRIC).acall(keyed_program(sim))
        elapsed = time.perf_counter() - started
        assert not tracking.flush(0.5)  # the run is still waiting for the server ...
    finally:
        _RELEASE.set()
        configure(mlflow=None)
        reset_settings()
        server.shutdown()
        server.server_close()
    assert result.processed == 4 and result.errors == 0
    assert elapsed < 15  # ... but the evaluation returned without it (one request may take 30 s)
