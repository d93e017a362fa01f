"""Parallel and Module.batch without an LM: order, the concurrency bound, errors, input kinds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dspex.errors import ConfigurationError, InputError
from dspex.modules import Parallel
from dspex.primitives import Example, Module, Prediction


class Gauge:
    """Counts calls in flight; each call waits until `release` is set or enough are in flight."""

    def __init__(self, release_at: int) -> None:
        self.in_flight = self.peak = 0
        self.release_at = release_at
        self.release = asyncio.Event()

    async def __call__(self, value: int) -> int:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight >= self.release_at:
            self.release.set()
        await self.release.wait()
        self.in_flight -= 1
        return value * 2


async def test_results_come_in_order_with_at_most_concurrency_in_flight() -> None:
    gauge = Gauge(release_at=7)
    results = await Parallel(concurrency=7).acall([(gauge, {"value": i}) for i in range(100)])
    assert results == [2 * i for i in range(100)]
    assert gauge.peak == 7


async def test_num_threads_is_dspys_name_for_concurrency() -> None:
    gauge = Gauge(release_at=3)
    await Parallel(num_threads=3).acall([(gauge, (i,)) for i in range(10)])
    assert gauge.peak == 3
    with pytest.raises(ConfigurationError, match="disagree"):
        Parallel(concurrency=2, num_threads=3)
    with pytest.raises(ConfigurationError, match="positive integer"):
        Parallel(concurrency=0)


def _sometimes_fails(value: int) -> int:
    if value % 3 == 0:
        raise ValueError(f"no multiples of three: {value}")
    return value


def test_failures_give_none_and_can_be_returned() -> None:
    pairs = [(_sometimes_fails, {"value": i}) for i in range(7)]
    results, failed, errors = Parallel(return_failed_examples=True, concurrency=2)(pairs)
    assert results == [None, 1, 2, None, 4, 5, None]
    assert failed == [{"value": 0}, {"value": 3}, {"value": 6}]
    assert [str(e) for e in errors] == [f"no multiples of three: {v}" for v in (0, 3, 6)]


def test_more_than_max_errors_raises() -> None:
    pairs = [(_sometimes_fails, {"value": i}) for i in range(30)]
    with pytest.raises(ValueError, match="no multiples of three") as caught:
        Parallel(max_errors=2, concurrency=1)(pairs)
    assert "more than max_errors=2" in caught.value.__notes__[0]


async def test_a_configuration_error_stops_everything_at_once() -> None:
    calls = []

    async def misconfigured(value: int) -> int:
        calls.append(value)
        raise ConfigurationError("no LM")

    with pytest.raises(ConfigurationError, match="no LM"):
        await Parallel(concurrency=1).acall([(misconfigured, {"value": i}) for i in range(10)])
    assert calls == [0]


class Echo(Module):
    async def aforward(self, question: str) -> Prediction:
        await asyncio.sleep(0)
        return Prediction(answer=question.upper())


async def test_examples_are_called_with_their_inputs_and_whole_when_asked() -> None:
    example = Example(question="hi", answer="HI").with_inputs("question")
    [pred] = await Parallel().acall([(Echo(), example)])
    assert pred.answer == "HI"
    [whole] = await Parallel(access_examples=False).acall([(lambda ex: ex.answer, example)])
    assert whole == "HI"
    with pytest.raises(InputError, match="no input fields marked"):
        await Parallel().acall([(Echo(), Example(question="hi"))])
    with pytest.raises(InputError, match=r"use a dspex\.Example, a dict or a tuple"):
        await Parallel().acall([(Echo(), ["hi"])])


def test_module_batch_runs_examples_in_order() -> None:
    examples = [Example(question=f"q{i}").with_inputs("question") for i in range(25)]
    preds = Echo().batch(examples, concurrency=4)
    assert [p.answer for p in preds] == [f"Q{i}" for i in range(25)]


async def test_module_abatch_returns_failures_on_request() -> None:
    examples: list[Any] = [{"question": "ok"}, {"question": 3}]
    results, failed, errors = await Echo().abatch(examples, return_failed_examples=True)
    assert results[0].answer == "OK" and results[1] is None
    assert failed == [{"question": 3}] and isinstance(errors[0], AttributeError)
