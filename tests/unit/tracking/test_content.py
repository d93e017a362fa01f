"""What an MLflow run of dspex holds, built without a server: params, metrics, artifacts, and no
secret anywhere."""

from __future__ import annotations

import json

import pytest

from dspex.errors import ConfigurationError
from dspex.evaluate import EvaluationResult, ExampleResult
from dspex.lm import LM
from dspex.lm.usage import Usage
from dspex.modules import Predict
from dspex.primitives import Example, Prediction
from dspex.tracking import MlflowSettings
from dspex.tracking.content import (
    Step,
    dataset_fingerprint,
    evaluation_content,
    optimization_content,
    saved_evaluation_content,
)
from dspex.tracking.settings import resolve

SECRET = "sk-unit-secret-0123456789"


def keyed_program() -> Predict:
    program = Predict("question -> answer", lm=LM("openai/m", api_base="http://h/v1", api_key=SECRET))
    program.demos = [Example(question=f"my key is {SECRET}", answer="4")]
    return program


def a_result() -> EvaluationResult:
    example = Example(question="2 + 2", answer="4").with_inputs("question")
    records = [
        ExampleResult(0, example, Prediction(answer="4"), 1.0),
        ExampleResult(1, example, None, 0.0, error=f"LMError: bad key {SECRET}"),
    ]
    usage = Usage(prompt_tokens=7, completion_tokens=3, cost_usd=0.25, lm_calls=2)
    return EvaluationResult.from_records(records, usage=usage, total=2, metric="em", elapsed_s=4.0)


def everything(content: object) -> str:
    params = getattr(content, "params")  # noqa: B009
    metrics = getattr(content, "metrics")  # noqa: B009
    artifacts = getattr(content, "artifacts")  # noqa: B009
    return json.dumps([params, [vars(m) for m in metrics]]) + "".join(a.decode() for a in artifacts.values())


def test_an_evaluation_run_holds_the_results_numbers_and_no_key() -> None:
    program, result = keyed_program(), a_result()
    devset = [record.example for record in result.records]
    content = evaluation_content(program, devset, result)
    metrics = {point.key: point.value for point in content.metrics}
    assert metrics["score"] == 50.0 and metrics["cost_usd"] == 0.25 and metrics["lm_calls"] == 2
    assert metrics["total_tokens"] == 10 and metrics["examples_per_s"] == 0.5 and metrics["errors"] == 1
    assert content.params["model"] == "openai/m" and content.params["num_examples"] == "2"
    assert content.params["dataset_fingerprint"] == dataset_fingerprint(devset)
    table = json.loads(content.artifacts["results.json"])
    assert [row["score"] for row in table["results"]] == [1.0, 0.0]
    assert table["results"][1]["error"] == "LMError: bad key [redacted]"
    assert SECRET not in everything(content)


def test_a_cluster_run_scrubs_the_key_its_key_variable_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_KEY_ENV", SECRET)
    program = {"type": "dspex.Predict", "lm": {"model": "openai/m", "api_key_env": "UNIT_KEY_ENV"}}
    result = a_result()
    content = saved_evaluation_content(
        program, "abc", [r.example for r in result.records], result, job_id="j1"
    )
    assert content.params["program"] == "Predict" and content.params["model"] == "openai/m"
    assert content.params["job_id"] == "j1" and SECRET not in everything(content)


def test_the_fingerprint_follows_the_data_and_which_fields_are_inputs() -> None:
    one = [Example(q="1", a="2").with_inputs("q")]
    assert dataset_fingerprint(one) == dataset_fingerprint([Example(q="1", a="2").with_inputs("q")])
    assert dataset_fingerprint(one) != dataset_fingerprint([Example(q="1", a="3").with_inputs("q")])
    assert dataset_fingerprint(one) != dataset_fingerprint([Example(q="1", a="2").with_inputs("a")])


def test_an_optimization_run_has_a_step_per_trial_and_only_plain_knobs() -> None:
    steps = [Step(0, 40.0, 5), Step(1, None, 5), Step(2, 70.0, 5), Step(3, 60.0, 5)]
    knobs = {"num_candidate_programs": 4, "api_key": SECRET, "metric": len, "teacher_settings": {}}
    content = optimization_content("bootstrap-rs", knobs, steps, keyed_program(), seed=3)
    scores = [(p.step, p.value) for p in content.metrics if p.key == "score"]
    best = [(p.step, p.value) for p in content.metrics if p.key == "best_score_so_far"]
    assert scores == [(0, 40.0), (2, 70.0), (3, 60.0)] and best == [(0, 40.0), (2, 70.0), (3, 70.0)]
    assert {k for k in content.params if k.startswith("knob.")} == {"knob.num_candidate_programs"}
    assert "Given the fields" in content.artifacts["best_program.txt"].decode()
    assert SECRET not in everything(content)


def test_settings_refuse_what_cannot_be_a_tracking_server() -> None:
    with pytest.raises(ValueError, match="http"):
        MlflowSettings(tracking_uri="file:///tmp/mlruns")
    with pytest.raises(ConfigurationError, match="MLFLOW_TRACKING_URI"):
        resolve(True, env={})
    assert resolve("http://h:5000/", env={"MLFLOW_EXPERIMENT_NAME": "e"}) == MlflowSettings(
        tracking_uri="http://h:5000", experiment="e"
    )
    assert resolve(None) is None and resolve(False) is None
