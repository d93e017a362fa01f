"""Optimizer compiles as the callbacks hear them: one start/end pair per compile the caller asked for,
with the compile's arguments, its result or its exception, and the call ids nesting as the calls do."""

from __future__ import annotations

import asyncio
from typing import Any

import cloudpickle
import pytest

from dspex._sync import run_sync
from dspex.configuration import context
from dspex.optimizers import Teleprompter
from dspex.optimizers.labeled import LabeledFewShot
from dspex.primitives import Example, Module, Prediction
from dspex.utils.callback import ACTIVE_CALL_ID, BaseCallback


class Log(BaseCallback):
    """Every compile and module event, with the call id active when the hook ran."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append({"event": "compile+", "id": call_id, "parent": ACTIVE_CALL_ID.get(),
                            "instance": instance, "inputs": inputs})  # fmt: skip

    def on_compile_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self.events.append({"event": "compile-", "id": call_id, "parent": ACTIVE_CALL_ID.get(),
                            "outputs": outputs, "exception": exception})  # fmt: skip

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append({"event": "module+", "id": call_id, "parent": ACTIVE_CALL_ID.get()})

    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self.events.append({"event": "module-", "id": call_id, "parent": ACTIVE_CALL_ID.get()})

    def kinds(self) -> list[str]:
        return [event["event"] for event in self.events]


class Echo(Module):
    def forward(self, text: str) -> Prediction:
        return Prediction(text=text)


class PlainCompile(Teleprompter):
    """A DSPy-style optimizer: a plain ``compile`` with its own keywords."""

    def compile(self, student: Module, *, trainset: list[Any], rounds: int = 2) -> Module:  # type: ignore[override]
        for item in trainset:
            student(text=item)
        return student


def test_a_plain_compile_reports_its_bound_arguments_result_and_call_id() -> None:
    log, optimizer, student = Log(), PlainCompile(), Echo()
    with context(callbacks=[log]):
        result = optimizer.compile(student, trainset=["a"])
    assert log.kinds() == ["compile+", "module+", "module-", "compile-"]
    start, module_start, _, end = log.events
    assert start["instance"] is optimizer and start["parent"] is None
    assert start["inputs"] == {"student": student, "trainset": ["a"], "rounds": 2}
    assert module_start["parent"] == start["id"] != module_start["id"]
    assert end["id"] == start["id"] and end["outputs"] is result is student and end["exception"] is None


def test_a_failing_compile_reports_the_exception_it_raises() -> None:
    failure = RuntimeError("no candidates")

    class Failing(Teleprompter):
        def compile(self, student: Module, *, trainset: list[Any]) -> Module:  # type: ignore[override]
            raise failure

    log = Log()
    with context(callbacks=[log]), pytest.raises(RuntimeError) as raised:
        Failing().compile(Echo(), trainset=[])
    assert raised.value is failure
    assert log.kinds() == ["compile+", "compile-"]
    assert log.events[1]["exception"] is failure and log.events[1]["outputs"] is None


def test_super_calls_and_inherited_compiles_are_one_compile_each() -> None:
    class Inherits(PlainCompile):
        pass

    class Overrides(PlainCompile):
        def compile(self, student: Module, *, trainset: list[Any], rounds: int = 2) -> Module:  # type: ignore[override]
            return super().compile(student, trainset=trainset, rounds=rounds)

    log = Log()
    with context(callbacks=[log]):
        Inherits().compile(Echo(), trainset=[])
        Overrides().compile(Echo(), trainset=[])
    assert log.kinds() == ["compile+", "compile-", "compile+", "compile-"]
    assert isinstance(log.events[2]["instance"], Overrides) and log.events[2]["parent"] is None


def test_one_optimizer_compiling_with_another_nests_the_second_under_the_first() -> None:
    class Outer(Teleprompter):
        def compile(self, student: Module, *, trainset: list[Any]) -> Module:  # type: ignore[override]
            return PlainCompile().compile(student, trainset=trainset)

    log = Log()
    with context(callbacks=[log]):
        Outer().compile(Echo(), trainset=["x"])
    assert log.kinds() == ["compile+", "compile+", "module+", "module-", "compile-", "compile-"]
    outer, inner, module, _, inner_end, outer_end = log.events
    assert inner["parent"] == outer["id"] and module["parent"] == inner["id"]
    assert inner_end["parent"] == outer["id"] and outer_end["parent"] is None


def test_a_stepwise_compile_is_one_compile_sync_or_async_and_shows_dspy_arguments() -> None:
    trainset = [Example(text=str(n)).with_inputs("text") for n in range(3)]
    log, optimizer, student = Log(), LabeledFewShot(k=0), Echo()
    with context(callbacks=[log]):
        compiled = optimizer.compile(student, trainset=trainset)
        again = run_sync(optimizer.acompile(student, trainset=trainset))
    assert log.kinds() == ["compile+", "compile-", "compile+", "compile-"]
    # the made compile's None extras (valset, metric, executor) are not DSPy's arguments
    assert log.events[0]["inputs"] == {"student": student, "trainset": trainset, "sample": True}
    assert log.events[1]["outputs"] is compiled and log.events[3]["outputs"] is again


def test_a_sync_compile_that_runs_its_own_acompile_is_one_compile() -> None:
    class Bridged(Teleprompter):
        def compile(self, student: Module, *, trainset: list[Any]) -> Module:  # type: ignore[override]
            return run_sync(self.acompile(student, trainset=trainset))

        async def acompile(self, student: Module, *, trainset: list[Any]) -> Module:  # type: ignore[override]
            await asyncio.sleep(0)
            return student

    log = Log()
    with context(callbacks=[log]):
        Bridged().compile(Echo(), trainset=[])
    assert log.kinds() == ["compile+", "compile-"]


async def test_an_async_compile_started_again_in_a_new_task_is_a_nested_compile() -> None:
    class Restarts(Teleprompter):
        async def acompile(self, student: Module, *, trainset: list[Any], inner: bool = False) -> Module:  # type: ignore[override]
            if inner:
                return student
            return await asyncio.create_task(self.acompile(student, trainset=trainset, inner=True))

    log, optimizer = Log(), Restarts()
    with context(callbacks=[log]):
        await optimizer.acompile(Echo(), trainset=[])
    assert log.kinds() == ["compile+", "compile+", "compile-", "compile-"]
    outer, inner, inner_end, outer_end = log.events
    assert inner["parent"] == outer["id"] and inner_end["id"] == inner["id"]
    assert outer_end["id"] == outer["id"] and outer_end["parent"] is None


def test_a_compile_wrapper_survives_cloudpickle_by_value() -> None:
    class Local(Teleprompter):
        def compile(self, student: Module, *, trainset: list[Any]) -> Module:  # type: ignore[override]
            return student

    copied = cloudpickle.loads(cloudpickle.dumps(Local))
    log, student = Log(), Echo()
    with context(callbacks=[log]):
        assert copied().compile(student, trainset=[]) is student
    assert log.kinds() == ["compile+", "compile-"]


def test_no_callbacks_means_no_events_and_the_same_result() -> None:
    student = Echo()
    assert PlainCompile().compile(student, trainset=["a"]) is student
    assert ACTIVE_CALL_ID.get() is None


async def test_awaiting_the_acompile_of_a_plain_compile_is_one_compile() -> None:
    log, student = Log(), Echo()
    with context(callbacks=[log]):
        assert await PlainCompile().acompile(student, trainset=["a"]) is student
    assert log.kinds() == ["compile+", "module+", "module-", "compile-"]


def test_a_dspy_style_override_of_a_stepwise_optimizer_is_one_compile() -> None:
    class Mine(LabeledFewShot):
        def compile(self, student: Module, *, trainset: list[Example]) -> Module:  # type: ignore[override]
            return super().compile(student, trainset=trainset)

    log, optimizer = Log(), Mine(k=1)
    with context(callbacks=[log]):
        optimizer.compile(Echo(), trainset=[Example(text="a").with_inputs("text")])
    assert log.kinds() == ["compile+", "compile-"]
    assert log.events[0]["instance"] is optimizer
