"""What a user's type checker makes of dspex's public API: mypy (strict, the project's settings) on
small programs that use it, the way ``make check`` runs it on dspex itself.

A plain ``def metric(example, pred, trace=None)`` must be accepted wherever a metric is; things
that are not metrics must be refused, where the checker can tell.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[2]

Errors = dict[str, list[tuple[int, str]]]  # file name -> (line, error code) of each error

ACCEPTED = """\
# mypy: allow-untyped-defs
from typing import Any, assert_type

import dspex
from dspex.metrics import exact_match
from dspex.optimizers.gepa.feedback import GEPAFeedbackMetric
from dspex.schemas import JobStatus, OptimizeStatus


def metric(example, pred, trace=None):  # as DSPy's docs write one: no annotations
    return example.answer == pred.answer


def two_arguments(gold, pred):
    return 1.0


def typed(example: dspex.Example, pred: dspex.Prediction, trace: object = None) -> float:
    return 0.5


async def judge(example: dspex.Example, pred: dspex.Prediction) -> bool:
    return True


def with_feedback(example: dspex.Example, pred: dspex.Prediction, trace: object = None) -> dspex.Prediction:
    return dspex.Prediction(score=0.0, feedback="wrong")


def gepa_metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
    return 1.0


devset = [dspex.Example(question="1 + 1?", answer="2").with_inputs("question")]
program = dspex.Predict("question -> answer")
for each in (metric, two_arguments, typed, judge, with_feedback, "exact_match:answer", exact_match("answer")):
    dspex.Evaluate(devset=devset, metric=each)
result = dspex.Evaluate(devset=devset, metric=metric)(program)
assert_type(result, dspex.EvaluationResult)
assert_type(program(question="1 + 1?"), dspex.Prediction)
assert_type(program.batch(devset), list[dspex.Prediction | None])

optimizer = dspex.BootstrapFewShot(metric=metric)
dspex.BootstrapFewShot(metric=typed)
dspex.BootstrapFewShot(metric=with_feedback)
dspex.MIPROv2(metric="exact_match:answer")
dspex.SIMBA(metric=two_arguments)
assert_type(optimizer.compile(program, trainset=devset), dspex.Module)
feedback_metric: GEPAFeedbackMetric = gepa_metric


def on_cluster(client: dspex.Client) -> None:
    assert_type(client.evaluate(program, devset, metric), dspex.EvaluationResult)
    assert_type(client.evaluate(program, devset, "f1:answer", wait=False), str)
    assert_type(client.status("job"), JobStatus | OptimizeStatus | None)
    assert_type(client.wait("job"), JobStatus | OptimizeStatus)
    assert_type(client.optimize(program, devset, None, metric), dspex.Module)
    assert_type(client.optimize(program, devset, None, metric, wait=False), str)


async def on_cluster_async(client: dspex.Client) -> None:
    assert_type(await client.aevaluate(program, devset, metric, wait=False), str)
    assert_type(await client.aoptimize(program, devset, None, metric), dspex.Module)
    assert_type(await client.aoptimize(program, devset, None, metric, wait=False), str)


def answers(lm: dspex.LM) -> None:
    assert_type(lm("hi"), list[str | dict[str, Any]])
"""

# Each line that must be an error ends with "# error: <code>".
REFUSED = """\
import dspex


def only_example(example: dspex.Example) -> float:
    return 1.0


def two_arguments(example: dspex.Example, pred: dspex.Prediction) -> float:
    return 1.0


def text(example: dspex.Example, pred: dspex.Prediction) -> str:
    return "yes"


devset = [dspex.Example(question="1 + 1?", answer="2").with_inputs("question")]
dspex.Evaluate(devset=devset, metric=42)  # error: arg-type
dspex.Evaluate(devset=devset, metric=only_example)  # error: arg-type
dspex.Evaluate(devset=devset, metric=text)  # error: arg-type
dspex.BootstrapFewShot(metric=two_arguments)  # error: arg-type
"""


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> Errors:
    folder = tmp_path_factory.mktemp("typing")
    (folder / "accepted.py").write_text(ACCEPTED)
    (folder / "refused.py").write_text(REFUSED)
    # The project's settings and cache (what `make check` leaves warm): only these two files are new.
    stdout, stderr, _ = api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(ROOT / ".mypy_cache"),
         "--show-error-codes", "--no-pretty", str(folder / "accepted.py"), str(folder / "refused.py")]
    )  # fmt: skip
    assert "INTERNAL ERROR" not in stdout + stderr, stdout + stderr
    assert "2 source files" in stdout, stdout  # both were checked (an empty list must mean no errors)
    found: Errors = {"accepted.py": [], "refused.py": []}
    for line in stdout.splitlines():
        match = re.match(r"(?P<path>.+?):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$", line)
        # by name only: mypy may replay a file's errors from its cache under the folder it first saw
        if match and Path(match["path"]).name in found:
            found[Path(match["path"]).name].append((int(match["line"]), match["code"]))
    return found


def test_metrics_written_as_dspy_documents_them_type_check(mypy_errors: Errors) -> None:
    assert mypy_errors["accepted.py"] == []


def test_what_is_not_a_metric_is_a_type_error(mypy_errors: Errors) -> None:
    expected = [
        (number, line.rpartition("# error: ")[2])
        for number, line in enumerate(REFUSED.splitlines(), start=1)
        if "# error: " in line
    ]
    assert len(expected) == 4
    assert mypy_errors["refused.py"] == expected
