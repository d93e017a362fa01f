"""Evaluate with fake programs (no LM): order, failures, max_errors, concurrency, usage, exports."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dspex import metrics
from dspex.errors import ConfigurationError, InputError, LMAuthenticationError
from dspex.evaluate import Evaluate, EvaluationResult, ExampleResult
from dspex.lm.usage import Usage, record_usage
from dspex.primitives import Example, Prediction

EXACT = metrics.exact_match("answer")


def devset(n: int) -> list[Example]:
    return [Example(question=f"q{i}", answer=str(i)).with_inputs("question") for i in range(n)]


def index_of(inputs: dict[str, Any]) -> int:
    return int(inputs["question"][1:])


class FakeProgram:
    """Answers q<i> with i (or wrong / raising for chosen indices), yielding to the loop a few times."""

    def __init__(
        self,
        *,
        wrong: Callable[[int], bool] = lambda i: False,
        raises: Callable[[int], bool] = lambda i: False,
        yields: Callable[[int], int] = lambda i: 3,
    ) -> None:
        self.wrong, self.raises, self.yields = wrong, raises, yields
        self.in_flight = self.max_in_flight = self.calls = 0

    async def acall(self, **inputs: Any) -> Prediction:
        i = index_of(inputs)
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            record_usage(Usage(prompt_tokens=10, completion_tokens=i, lm_calls=1))
            for _ in range(self.yields(i)):
                await asyncio.sleep(0)
            if self.raises(i):
                raise ValueError(f"boom {i}")
            return Prediction(answer=str(i + 1 if self.wrong(i) else i))
        finally:
            self.in_flight -= 1


async def test_results_in_example_order_with_score() -> None:
    # later examples finish first: they yield fewer times
    program = FakeProgram(wrong=lambda i: i % 4 == 0, yields=lambda i: 40 - i)
    result = await Evaluate(devset=devset(40), metric=EXACT, concurrency=8).acall(program)
    assert [ex.question for ex, _, _ in result.results] == [f"q{i}" for i in range(40)]
    assert [score for *_, score in result.results] == [0.0 if i % 4 == 0 else 1.0 for i in range(40)]
    assert result.score == 75.0 and float(result) == 75.0
    assert (result.errors, result.processed, result.total, result.stopped_early) == (0, 40, 40, False)
    assert result.metric == "exact_match:answer"


async def test_failures_score_failure_score_and_stay_in_denominator() -> None:
    program = FakeProgram(raises=lambda i: i in (1, 3))
    result = await Evaluate(devset=devset(4), metric=EXACT, failure_score=0.25).acall(program)
    assert [score for *_, score in result.results] == [1.0, 0.25, 1.0, 0.25]
    assert result.score == pytest.approx(100 * 2.5 / 4)
    assert result.errors == 2
    assert result.error_messages == {1: "ValueError: boom 1", 3: "ValueError: boom 3"}
    assert result.records[1].prediction is None and result.results[1][1] == Prediction()  # DSPy's empty one


async def test_metric_that_raises_keeps_the_prediction() -> None:
    def picky(example: Example, prediction: Prediction, trace: object = None) -> bool:
        if example.answer == "2":
            raise KeyError("no judge for 2")
        return True

    result = await Evaluate(devset=devset(3), metric=picky).acall(FakeProgram())
    assert [score for *_, score in result.results] == [1.0, 1.0, 0.0]
    assert result.records[2].prediction is not None and result.records[2].prediction.answer == "2"
    assert result.error_messages == {2: "KeyError: 'no judge for 2'"}


async def test_feedback_and_async_metric() -> None:
    async def judge(example: Example, prediction: Prediction, trace: object = None) -> tuple[float, str]:
        await asyncio.sleep(0)
        return (0.5, f"half credit for {example.question}")

    result = await Evaluate(devset=devset(2), metric=judge).acall(FakeProgram())
    assert result.score == 50.0
    assert [r.feedback for r in result.records] == ["half credit for q0", "half credit for q1"]


async def test_metric_by_name_and_result_objects() -> None:
    def rich(example: Example, prediction: Prediction, trace: object = None) -> metrics.MetricResult:
        return metrics.MetricResult(1.0, "fine")

    assert (await Evaluate(devset=devset(3), metric="exact_match:answer").acall(FakeProgram())).score == 100
    result = await Evaluate(devset=devset(3), metric=rich).acall(FakeProgram())
    assert result.records[0].feedback == "fine"


async def test_max_errors_stops_and_returns_partial_results() -> None:
    program = FakeProgram(raises=lambda i: True)
    result = await Evaluate(devset=devset(50), metric=EXACT, concurrency=1, max_errors=2).acall(program)
    assert result.stopped_early is True
    assert (result.errors, result.processed, program.calls) == (3, 3, 3)  # the third error is one too many
    assert result.score == 0.0


async def test_max_errors_cancels_examples_in_flight() -> None:
    never = asyncio.Event()
    cancelled: list[int] = []

    class Stuck:
        async def acall(self, **inputs: Any) -> Prediction:
            i = index_of(inputs)
            if i % 2:
                raise RuntimeError(f"bad {i}")
            try:
                await never.wait()
            except asyncio.CancelledError:
                cancelled.append(i)
                raise
            return Prediction(answer=str(i))

    evaluate = Evaluate(devset=devset(100), metric=EXACT, concurrency=10, max_errors=4)
    result = await asyncio.wait_for(evaluate.acall(Stuck()), timeout=10)
    assert result.stopped_early and result.errors == 5 and result.processed == 5
    assert sorted(cancelled) == [0, 2, 4, 6, 8]  # the even examples in flight, none started afterwards
    assert sorted(result.error_messages) == [1, 3, 5, 7, 9]


async def test_max_errors_not_reached() -> None:
    program = FakeProgram(raises=lambda i: i < 2)
    result = await Evaluate(devset=devset(10), metric=EXACT, max_errors=2).acall(program)
    assert not result.stopped_early and result.processed == 10 and result.score == 80.0


@pytest.mark.parametrize("bound", [1, 5, 32])
async def test_concurrency_bound_is_respected_and_reached(bound: int) -> None:
    program = FakeProgram()
    await Evaluate(devset=devset(64), metric=EXACT, concurrency=bound).acall(program)
    assert program.max_in_flight == bound
    assert program.calls == 64


async def test_num_threads_is_concurrency() -> None:
    assert Evaluate(devset=devset(1), metric=EXACT, num_threads=7).concurrency == 7
    assert Evaluate(devset=devset(1), metric=EXACT, num_threads=7, concurrency=7).num_threads == 7
    with pytest.raises(ConfigurationError, match="num_threads is DSPy's name for concurrency"):
        Evaluate(devset=devset(1), metric=EXACT, num_threads=7, concurrency=8)
    program = FakeProgram()
    await Evaluate(devset=devset(20), metric=EXACT, concurrency=10).acall(program, num_threads=3)
    assert program.max_in_flight == 3


async def test_overrides_and_bad_arguments() -> None:
    evaluate = Evaluate(devset=devset(4), metric=EXACT)
    result = await evaluate.acall(FakeProgram(), devset=devset(2), failure_score=1.0)
    assert result.total == 2
    with pytest.raises(ConfigurationError, match=r"unknown Evaluate argument\(s\) \['threads'\]"):
        await evaluate.acall(FakeProgram(), threads=3)
    with pytest.raises(ConfigurationError, match="empty devset"):  # checked per call, as DSPy
        await Evaluate(devset=[], metric=EXACT).acall(FakeProgram())
    with pytest.raises(ConfigurationError, match="concurrency must be a positive integer"):
        Evaluate(devset=devset(1), metric=EXACT, concurrency=0)
    with pytest.raises(ConfigurationError, match="max_errors"):
        Evaluate(devset=devset(1), metric=EXACT, max_errors=-1)
    with pytest.raises(metrics.MetricError, match="unknown metric"):
        Evaluate(devset=devset(1), metric="nope:answer")


async def test_examples_without_inputs_fail_before_any_call() -> None:
    program = FakeProgram()
    with pytest.raises(InputError, match=r"devset example 2: .*with_inputs"):
        await Evaluate(devset=[*devset(2), Example(question="q2", answer="2")], metric=EXACT).acall(program)
    with pytest.raises(InputError, match=r"devset item 0 is a dict, not a dspex\.Example"):
        await Evaluate(devset=[{"question": "q0"}], metric=EXACT).acall(program)  # type: ignore[list-item]
    assert program.calls == 0


async def test_program_returning_the_wrong_type_is_raised() -> None:
    async def program(question: str) -> str:
        return "5"

    with pytest.raises(ConfigurationError, match="the program returned str"):
        await Evaluate(devset=devset(5), metric=EXACT).acall(program)


async def test_systemic_lm_error_is_raised() -> None:
    class Unauthorized:
        async def acall(self, **inputs: Any) -> Prediction:
            raise LMAuthenticationError("invalid api key", status=401)

    with pytest.raises(LMAuthenticationError, match="invalid api key"):
        await Evaluate(devset=devset(20), metric=EXACT, concurrency=4).acall(Unauthorized())


async def test_usage_sums_every_call_including_failures() -> None:
    program = FakeProgram(raises=lambda i: i == 3)
    result = await Evaluate(devset=devset(5), metric=EXACT).acall(program)
    assert result.usage == Usage(prompt_tokens=50, completion_tokens=0 + 1 + 2 + 3 + 4, lm_calls=5)


async def test_plain_callables_sync_and_async() -> None:
    def sync_program(question: str) -> dict[str, str]:
        return {"answer": question[1:]}

    async def async_program(question: str) -> Prediction:
        return Prediction(answer=question[1:])

    for program in (sync_program, async_program):
        result = await Evaluate(devset=devset(6), metric=EXACT, concurrency=3).acall(program)
        assert result.score == 100.0
        assert isinstance(result.results[0][1], Prediction)
    with pytest.raises(ConfigurationError, match="cannot evaluate int"):
        await Evaluate(devset=devset(1), metric=EXACT).acall(3)


def test_sync_call_from_sync_code() -> None:
    result = Evaluate(devset=devset(10), metric=EXACT, num_threads=4)(FakeProgram(wrong=lambda i: i < 5))
    assert isinstance(result, EvaluationResult) and result.score == 50.0


async def test_exports(tmp_path: Path) -> None:
    program = FakeProgram(raises=lambda i: i == 1)
    result = await Evaluate(devset=devset(3), metric=EXACT).acall(program)
    data = json.loads(result.to_json(tmp_path / "r.json").read_text())
    assert data["score"] == 66.67 and data["errors"] == 1 and data["processed"] == 3
    assert data["results"][1] == {
        "index": 1,
        "example": {"question": "q1", "answer": "1"},
        "prediction": None,
        "score": 0.0,
        "feedback": None,
        "error": "ValueError: boom 1",
        "latency_s": data["results"][1]["latency_s"],
        "usage": Usage().model_dump(),
    }
    with result.to_csv(tmp_path / "r.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["index"] for row in rows] == ["0", "1", "2"]
    assert rows[0]["example_answer"] == "0" and rows[0]["pred_answer"] == "0" and rows[0]["question"] == "q0"
    assert rows[1]["error"] == "ValueError: boom 1" and rows[1]["exact_match:answer"] == "0.0"


async def test_save_as_and_display(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evaluate = Evaluate(
        devset=devset(5),
        metric=EXACT,
        display_progress=True,
        display_table=2,
        save_as_json=tmp_path / "out.json",
        save_as_csv=tmp_path / "out.csv",
    )
    await evaluate.acall(FakeProgram())
    out = capsys.readouterr()
    assert "3 more rows not displayed" in out.out and "exact_match:answer" in out.out
    assert "5/5" in out.err  # the progress bar went to stderr
    rows = json.loads((tmp_path / "out.json").read_text())  # DSPy's rows: one merged dict per example
    assert rows[0] == {"question": "q0", "example_answer": "0", "pred_answer": "0", "exact_match:answer": 1.0}
    assert (tmp_path / "out.csv").read_text().count("\n") == 6


def test_from_records_sorts_and_scores_in_any_order() -> None:
    examples = devset(3)
    records = [
        ExampleResult(2, examples[2], Prediction(answer="2"), 1.0),
        ExampleResult(0, examples[0], None, 0.0, error="ValueError: x"),
        ExampleResult(1, examples[1], Prediction(answer="1"), 0.1),
    ]
    one = EvaluationResult.from_records(records, usage=Usage(), total=5, metric="m")
    other = EvaluationResult.from_records(records[::-1], usage=Usage(), total=5, metric="m")
    assert [r.index for r in one.records] == [0, 1, 2] and one.errors == 1 and one.processed == 3
    assert one.score == other.score == round(100 * 1.1 / 3, 2)
