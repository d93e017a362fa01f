"""Evaluate's DSPy 3.4.1 surface: arguments and defaults, call overrides, threads, callbacks, files."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pydantic
import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.evaluate import Evaluate, EvaluationResult, SemanticF1, answer_exact_match
from dspex.primitives import Example, Prediction
from dspex.utils import DummyLM
from dspex.utils.callback import ACTIVE_CALL_ID, BaseCallback


def devset(n: int) -> list[Example]:
    return [Example(question=f"q{i}", answer=str(i)).with_inputs("question") for i in range(n)]


class Echo:
    """Answers q<i> with i; counts calls in flight and remembers the threads it ran on."""

    def __init__(self, *, fail: set[int] | None = None) -> None:
        self.fail = fail or set()
        self.in_flight = self.max_in_flight = 0
        self.threads: list[threading.Thread] = []
        self.parent_ids: list[str | None] = []

    async def acall(self, **inputs: Any) -> Prediction:
        self.parent_ids.append(ACTIVE_CALL_ID.get())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            i = int(inputs["question"][1:])
            if i in self.fail:
                raise RuntimeError(f"bad {i}")
            return Prediction(answer=str(i))
        finally:
            self.in_flight -= 1


class SyncEcho(Echo):
    def __call__(self, **inputs: Any) -> Prediction:
        self.threads.append(threading.current_thread())
        return Prediction(answer=inputs["question"][1:])


def test_constructor_keeps_dspy_arguments_and_defaults() -> None:
    examples = devset(2)
    evaluate = Evaluate(devset=examples)
    assert evaluate.devset == examples and evaluate.metric is None
    assert evaluate.num_threads is None and evaluate.concurrency is None
    assert (evaluate.display_progress, evaluate.display_table) == (False, False)
    assert (evaluate.max_errors, evaluate.provide_traceback, evaluate.failure_score) == (None, None, 0.0)
    assert (evaluate.save_as_csv, evaluate.save_as_json) == (None, None)
    assert Evaluate(devset=examples, metric=answer_exact_match).metric is answer_exact_match
    assert Evaluate(devset=examples, concurrency=5).num_threads == 5


def test_return_outputs_is_refused_and_other_extras_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ValueError, match="return_outputs` is no longer supported"):
        Evaluate(devset=devset(1), return_outputs=True)
    with caplog.at_level(logging.WARNING, logger="dspex.evaluate.evaluate"):
        Evaluate(devset=devset(1), return_all_scores=True)
    assert "return_all_scores" in caplog.text


async def test_num_threads_and_max_errors_default_to_the_settings() -> None:
    program = Echo()
    with dspex.context(num_threads=3):
        await Evaluate(devset=devset(12), metric=answer_exact_match).acall(program)
    assert program.max_in_flight == 3
    with dspex.context(max_errors=1):
        result = await Evaluate(devset=devset(12), metric=answer_exact_match, num_threads=1).acall(
            Echo(fail=set(range(12)))
        )
    assert result.stopped_early and result.errors == 2


async def test_call_arguments_replace_the_constructor_ones() -> None:
    evaluate = Evaluate(devset=devset(4))
    with pytest.raises(ConfigurationError, match="needs a metric"):
        await evaluate.acall(Echo())
    result = await evaluate.acall(Echo(), metric=answer_exact_match, devset=devset(2), num_threads=2)
    assert result.total == 2 and result.score == 100.0
    with pytest.raises(ConfigurationError, match="empty devset"):
        await evaluate.acall(Echo(), metric=answer_exact_match, devset=[])


async def test_score_is_rounded_to_two_decimals_as_dspy() -> None:
    result = await Evaluate(devset=devset(3), metric=lambda ex, pred: ex.answer == "0").acall(Echo())
    assert result.score == 33.33 and isinstance(result, EvaluationResult)


def test_one_thread_runs_program_and_metric_on_the_calling_thread() -> None:
    threads: list[threading.Thread] = []

    def metric(example: Example, pred: Prediction, trace: object = None) -> bool:
        threads.append(threading.current_thread())
        return answer_exact_match(example, pred)

    program = SyncEcho()
    outcome: list[EvaluationResult] = []
    caller = threading.Thread(
        target=lambda: outcome.append(Evaluate(devset=devset(3), metric=metric, num_threads=1)(program))
    )
    caller.start()
    caller.join()
    assert outcome[0].score == 100.0
    assert threads == program.threads == [caller] * 3


class Recorder(BaseCallback):
    def __init__(self) -> None:
        self.starts: list[tuple[str, dict[str, Any]]] = []
        self.ends: list[tuple[str, Any, BaseException | None]] = []

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.starts.append((call_id, inputs))

    def on_evaluate_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self.ends.append((call_id, outputs, exception))


@pytest.mark.parametrize("num_threads", [1, 2])
def test_callbacks_hear_the_evaluation_once_and_are_parents_of_the_program_calls(num_threads: int) -> None:
    recorder, program = Recorder(), Echo()
    evaluate = Evaluate(devset=devset(2), metric=answer_exact_match, num_threads=num_threads)
    with dspex.context(callbacks=[recorder]):
        result = evaluate(program)
    [(call_id, inputs)] = recorder.starts
    assert inputs["program"] is program
    assert recorder.ends == [(call_id, result, None)]
    assert program.parent_ids == [call_id, call_id]


async def test_callbacks_hear_an_async_evaluation_and_its_failure() -> None:
    recorder = Recorder()
    with dspex.context(callbacks=[recorder]):
        await Evaluate(devset=devset(1), metric=answer_exact_match).acall(Echo())
        with pytest.raises(ConfigurationError):
            await Evaluate(devset=devset(1)).acall(Echo())
    assert len(recorder.starts) == 2
    assert isinstance(recorder.ends[0][1], EvaluationResult)
    assert isinstance(recorder.ends[1][2], ConfigurationError)


class Turn(pydantic.BaseModel):
    messages: list[dict[str, str]]


async def test_save_as_json_and_csv_write_dspy_rows(tmp_path: Path) -> None:
    history = Turn(messages=[{"question": "before", "answer": "then"}])
    examples = [Example(question="q0", answer="0", history=history).with_inputs("question"), *devset(2)[1:]]
    evaluate = Evaluate(
        devset=examples,
        metric=answer_exact_match,
        save_as_json=tmp_path / "rows.json",
        save_as_csv=tmp_path / "rows.csv",
    )
    await evaluate.acall(Echo(fail={1}))
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert rows[0] == {
        "question": "q0",
        "example_answer": "0",
        "history": {"messages": [{"question": "before", "answer": "then"}]},
        "pred_answer": "0",
        "answer_exact_match": 1.0,
    }
    assert rows[1] == {"question": "q1", "answer": "1", "answer_exact_match": 0.0}  # failed: no prediction
    with (tmp_path / "rows.csv").open() as file:
        table = list(csv.DictReader(file))
    assert len(table) == 2 and "messages" in table[0]["history"]


@pytest.mark.parametrize("display_table", [True, 1])
async def test_display_table_prints_the_rows(
    display_table: bool | int, capsys: pytest.CaptureFixture[str]
) -> None:
    await Evaluate(devset=devset(3), metric=answer_exact_match, display_table=display_table).acall(Echo())
    out = capsys.readouterr().out
    assert "q0" in out and "answer_exact_match" in out
    assert ("2 more rows not displayed" in out) is (display_table == 1 and display_table is not True)


async def test_a_module_metric_is_awaited_on_the_loop() -> None:
    lm = DummyLM([{"reasoning": "close", "precision": 1.0, "recall": 0.5}] * 2)
    examples = [Example(question="q", response="r").with_inputs("question") for _ in range(2)]

    async def program(question: str) -> Prediction:
        return Prediction(response="r")

    with dspex.context(lm=lm):
        result = await Evaluate(devset=examples, metric=SemanticF1(), num_threads=2).acall(program)
    assert result.score == round(100 * 2 * 0.5 / 1.5, 2)


@pytest.mark.parametrize("num_threads", [1, 4])
def test_results_keep_what_the_metric_returned_as_dspy_does(num_threads: int) -> None:
    def judged(example: Example, prediction: Prediction, trace: Any = None) -> Any:
        if example.answer == "0":
            return True
        return Prediction(score=0.5, feedback=f"half for {example.answer}")

    result = Evaluate(devset=devset(3), metric=judged, num_threads=num_threads)(Echo(fail={2}))
    first, second, failed = (row[2] for row in result.results)
    assert first is True
    assert isinstance(second, Prediction) and second.feedback == "half for 1"
    assert failed == 0.0  # a failed example holds the failure score, as in DSPy
    assert [record.score for record in result.records] == [1.0, 0.5, 0.0]
    assert result.records[1].feedback == "half for 1" and result.score == 50.0
