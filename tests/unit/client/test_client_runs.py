"""Program runs on the cluster, the parts that need no broker: grouping examples into jobs by
program, score records back into predictions with traces, remote errors back into exceptions, and
the choice of optimizers a cluster job may name."""

from __future__ import annotations

from typing import Any

import pytest

import dspex
from dspex.client._optimize import OptimizeRequest, build_optimize_job
from dspex.client._runs import RUN_METRIC, group_by_program, prediction_of, ran, remote_exception
from dspex.client._submit import Limits, Policy, build_submission
from dspex.errors import AdapterParseError, ConfigurationError, DspexError, LMAuthenticationError
from dspex.metrics import resolve_metric
from dspex.optimizers import LabeledFewShot
from dspex.optimizers.registry import cluster_optimizer, start_options
from dspex.primitives import Prediction
from dspex.schemas import ErrorInfo, ScoreRecord, TraceEntry, UsageRecord
from dspex.testing import arithmetic_dataset

EXAMPLES = arithmetic_dataset(5, seed=3)


def _record(**fields: Any) -> ScoreRecord:
    base: dict[str, Any] = {
        "job_id": "j",
        "candidate_id": "c",
        "example_index": 0,
        "task_id": "t",
        "score": 1.0,
    }
    return ScoreRecord(**{**base, **fields})


# --------------------------------------------------------------------------- grouping


def test_one_program_is_one_group_over_every_example() -> None:
    program = dspex.Predict("question -> answer")
    [group] = group_by_program(program, 5)
    assert group.program is program and group.positions == [0, 1, 2, 3, 4]


def test_per_example_programs_group_by_object_in_first_seen_order() -> None:
    shared, own_a, own_b = (dspex.Predict("question -> answer") for _ in range(3))
    groups = group_by_program([own_a, shared, shared, own_b, shared], 5)
    assert [(g.program, g.positions) for g in groups] == [(own_a, [0]), (shared, [1, 2, 4]), (own_b, [3])]


def test_a_program_count_that_matches_nothing_is_refused() -> None:
    program = dspex.Predict("question -> answer")
    with pytest.raises(ConfigurationError, match="3 programs for 5 examples"):
        group_by_program([program] * 3, 5)
    with pytest.raises(ConfigurationError, match="not a dspex Module"):
        group_by_program([program, "not a program"], 2)  # type: ignore[list-item]


def test_a_run_job_scores_with_the_always_passing_metric_workers_may_import() -> None:
    assert ran(EXAMPLES[0], Prediction(answer="anything")) == 1.0
    assert resolve_metric(RUN_METRIC.name, allow_modules=("dspex",)) is ran
    # a client whose allow-list names only the user's modules still builds the job
    submission = build_submission(
        [dspex.Predict("question -> answer")], EXAMPLES, RUN_METRIC, policy=Policy(allow_modules=["mypkg"]),
        limits=Limits("runs", parent_job_id="opt-1"),
    )  # fmt: skip
    assert submission.job.metric == RUN_METRIC and submission.job.parent_job_id == "opt-1"


# --------------------------------------------------------------------------- records back to predictions


def test_a_record_becomes_a_prediction_whose_trace_names_the_callers_predictors() -> None:
    program = dspex.ChainOfThought("question -> answer")
    [(path, predictor)] = program.named_predictors()
    outputs = {"reasoning": "2 plus 3", "answer": "5"}
    record = _record(
        outputs=outputs,
        trace=[
            TraceEntry(predictor=path, inputs={"question": "2 + 3?"}, outputs=outputs),
            TraceEntry(predictor="elsewhere", inputs={}, outputs={}),  # not in this program: left out
        ],
        usage=UsageRecord(prompt_tokens=40, completion_tokens=8, lm_calls=1),
    )  # fmt: skip
    prediction = prediction_of(record, program)
    assert isinstance(prediction, Prediction)
    assert prediction.to_dict() == {"reasoning": "2 plus 3", "answer": "5"}
    assert (prediction.usage.lm_calls, prediction.usage.total_tokens) == (1, 48)
    [step] = prediction.trace
    assert (step.predictor_path, step.predictor, step.inputs) == (path, predictor, {"question": "2 + 3?"})
    assert step.outputs["answer"] == "5"


def test_a_failed_run_becomes_its_exception() -> None:
    program = dspex.Predict("question -> answer")
    failed = _record(score=0.0, error=ErrorInfo(type="LMAuthenticationError", message="bad key", status=401))
    error = prediction_of(failed, program)
    assert isinstance(error, LMAuthenticationError) and error.status == 401 and str(error) == "bad key"
    assert isinstance(prediction_of(None, program), DspexError)


@pytest.mark.parametrize(
    ("info", "expected_type", "text"),
    [
        (ErrorInfo(type="ValueError", message="no such thing"), ValueError, "no such thing"),
        (
            ErrorInfo(type="AdapterParseError", message="no answer field"),
            AdapterParseError,
            "no answer field",
        ),
        (ErrorInfo(type="SomeLibraryError", message="it broke"), DspexError, "SomeLibraryError: it broke"),
        (None, DspexError, "without an error message"),
    ],
)
def test_remote_errors_are_rebuilt_as_far_as_their_wire_form_allows(
    info: ErrorInfo | None, expected_type: type[Exception], text: str
) -> None:
    error = remote_exception(info)
    assert type(error) is expected_type and text in str(error)


# --------------------------------------------------------------------------- optimizers a job may name


def test_knobs_and_the_jobs_offers_reach_the_constructor_that_takes_them() -> None:
    optimizer = cluster_optimizer("labeled", {"k": 3}, {"metric": "exact_match:answer", "seed": 4})
    assert isinstance(optimizer, LabeledFewShot) and optimizer.k == 3
    # LabeledFewShot takes its metric when it starts, not when it is built
    assert start_options(optimizer, "exact_match:answer") == {"metric": "exact_match:answer"}
    bootstrap = cluster_optimizer("bootstrap", {}, {"metric": "exact_match:answer", "seed": 4})
    assert start_options(bootstrap, "exact_match:answer") == {}


@pytest.mark.parametrize("name", ["knn", "KNNFewShot", "ensemble"])
def test_optimizers_without_a_step_by_step_run_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot run as a cluster optimization"):
        cluster_optimizer(name, {}, {"metric": "exact_match:answer"})


def test_a_labeled_optimization_job_is_built_with_its_metric() -> None:
    request = OptimizeRequest(
        dspex.Predict("question -> answer"), EXAMPLES, EXAMPLES, "exact_match:answer", optimizer="labeled",
        knobs={"k": 2},
    )  # fmt: skip
    _, job = build_optimize_job(request, Policy())
    assert (job.optimizer, job.knobs, job.metric.name) == ("labeled", {"k": 2}, "exact_match:answer")
    with pytest.raises(ConfigurationError, match="unknown argument"):
        build_optimize_job(
            OptimizeRequest(
                dspex.Predict("q -> a"), EXAMPLES, None, "exact_match:answer", "labeled", {"kk": 1}
            ),
            Policy(),
        )


def test_compile_options_travel_in_the_job() -> None:
    request = OptimizeRequest(
        dspex.Predict("question -> answer"), EXAMPLES, EXAMPLES, "exact_match:answer", optimizer="mipro",
        knobs={"auto": None, "num_candidates": 2}, compile_options={"num_trials": 4, "minibatch_size": 5},
    )  # fmt: skip
    _, job = build_optimize_job(request, Policy())
    assert job.compile_options == {"num_trials": 4, "minibatch_size": 5}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"num_trails": 4}, "'num_trails'"),  # a typo: the accepted names are listed
        ({"metric": "exact_match:answer"}, "'metric'"),  # the worker passes these itself
        ({"trainset": [], "state": {}}, "'state', 'trainset'"),
    ],
)
def test_compile_options_the_compile_does_not_take_are_refused_before_submitting(
    options: dict[str, Any], named: str
) -> None:
    request = OptimizeRequest(
        dspex.Predict("q -> a"), EXAMPLES, None, "exact_match:answer", "mipro", {"auto": "light"}, options
    )
    with pytest.raises(ConfigurationError, match=f"MIPROv2.compile takes no option {named}") as caught:
        build_optimize_job(request, Policy())
    assert "minibatch_size" in str(caught.value) and "num_trials" in str(caught.value)
