"""BaseLM, DummyLM, callbacks, history and inspect_history: DSPy's LM-side behaviour in dspex."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.configuration import reset_settings
from dspex.errors import ConfigurationError
from dspex.lm import cache as cache_mod
from dspex.utils import BaseCallback, DummyLM


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    reset_settings()
    yield
    reset_settings()


class Recorder(BaseCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("module_start", type(instance).__name__))

    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self.events.append(("module_end", exception))

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("lm_start", len(inputs["messages"])))

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        self.events.append(("lm_end", outputs))


def test_callbacks_hear_module_and_lm_calls_in_order() -> None:
    recorder = Recorder()
    dspex.configure(lm=DummyLM([{"answer": "blue"}]), callbacks=[recorder])
    assert dspex.Predict("question -> answer")(question="sky?").answer == "blue"
    assert [kind for kind, _ in recorder.events] == ["module_start", "lm_start", "lm_end", "module_end"]
    assert recorder.events[2][1] == ["[[ ## answer ## ]]\nblue"]


def test_a_failing_call_reaches_on_module_end_with_its_exception() -> None:
    recorder = Recorder()

    class Broken(dspex.Module):
        async def aforward(self, **kwargs: Any) -> Any:
            raise RuntimeError("down")

    with dspex.context(callbacks=[recorder]), pytest.raises(RuntimeError, match="down"):
        Broken()(x=1)
    assert recorder.events[-1][0] == "module_end" and isinstance(recorder.events[-1][1], RuntimeError)


def test_a_callback_that_raises_never_breaks_the_call(caplog: pytest.LogCaptureFixture) -> None:
    class Faulty(BaseCallback):
        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            raise ValueError("callback bug")

    dspex.configure(lm=DummyLM([{"answer": "4"}]), callbacks=[Faulty()])
    assert dspex.Predict("question -> answer")(question="2 + 2?").answer == "4"
    assert "on_lm_start" in caplog.text


def test_history_is_kept_per_lm_and_per_module_and_printed() -> None:
    lm = DummyLM([{"answer": "a"}, {"answer": "b"}, {"answer": "c"}])
    dspex.configure(lm=lm, max_history_size=2)
    program = dspex.Predict("question -> answer")
    for question in ("one", "two", "three"):
        program(question=question)
    # max_history_size bounds the LM's history too, as in DSPy 3.4.1: the oldest call is dropped
    assert len(lm.history) == 2 and len(program.history) == 2
    assert isinstance(lm.history, list) and "one" not in str(lm.history[0]["messages"])
    assert program.history[-1]["outputs"] == ["[[ ## answer ## ]]\nc"]
    out = io.StringIO()
    lm.inspect_history(n=1, file=out)
    text = out.getvalue()
    assert "User message:" in text and "three" in text and "Response:" in text and "\x1b[" not in text


def test_disable_history_keeps_nothing() -> None:
    lm = DummyLM([{"answer": "a"}])
    program = dspex.Predict("question -> answer")
    with dspex.context(lm=lm, disable_history=True):
        program(question="one")
    assert len(lm.history) == 0 and program.history == []


def test_dummy_lm_follows_the_demo_whose_input_matches() -> None:
    lm = DummyLM([{"answer": "unused"}], follow_examples=True)
    demo = dspex.Example(question="What is 1 + 1?", answer="2")
    program = dspex.Predict("question -> answer", demos=[demo])
    with dspex.context(lm=lm):
        assert program(question="What is 1 + 1?").answer == "2"


def test_dummy_lm_answers_by_prompt_key_and_then_says_it_has_no_more() -> None:
    lm = DummyLM({"sky": {"answer": "blue"}})
    program = dspex.Predict("question -> answer")
    with dspex.context(lm=lm):
        assert program(question="the sky?").answer == "blue"
        # no key matches: DSPy's bare "No more responses", which no adapter can parse
        with pytest.raises(dspex.AdapterParseError, match="No more responses"):
            program(question="the sea?")


def test_a_dspy_style_lm_with_only_forward_is_called_through_it() -> None:
    class Echo(dspex.BaseLM):
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            content = "[[ ## answer ## ]]\n" + str(len(messages))
            return {"choices": [{"message": {"content": content}}], "usage": {"prompt_tokens": 3}}

    pred = dspex.Predict("question -> answer", lm=Echo("echo"))(question="hi")
    assert pred.answer == "2"  # system + user message
    assert pred.usage.prompt_tokens == 3 and pred.usage.lm_calls == 1


def test_lm_state_is_dspys_and_never_holds_a_key() -> None:
    lm = dspex.LM("openai/gpt-4o-mini", api_key="sk-secret", temperature=1, max_tokens=100, num_retries=10)
    state = lm.dump_state()
    assert state["_dspy_lm_class"] == "dspy.clients.lm.LM" and state["num_retries"] == 10
    assert "sk-secret" not in repr(state)
    again = dspex.BaseLM.load_state(state)
    assert isinstance(again, dspex.LM) and again.dump_state() == state
    with pytest.raises(ConfigurationError, match="Refusing to import custom serialized LM class"):
        dspex.BaseLM.load_state({**state, "_dspy_lm_class": "somewhere.Else"})


def test_configure_cache_replaces_the_cache_of_lms_without_their_own_dir(tmp_path: Path) -> None:
    original = dspex.cache
    lm = dspex.LM("openai/x")  # made before: it follows dspex.cache at each call
    try:
        dspex.configure_cache(enable_disk_cache=False, disk_cache_dir=tmp_path)
        cache = lm._response_cache()
        assert cache is dspex.cache and (cache.enable_disk_cache, cache.enable_memory_cache) == (False, True)
        dspex.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
        assert lm._response_cache() is None and dspex.LM("openai/x")._response_cache() is None
        own = dspex.LM("openai/x", cache_dir=tmp_path)._response_cache()  # its own dir: both tiers
        assert own is not None and own.enable_disk_cache and own.enable_memory_cache
        assert dspex.LM("openai/x", cache=False)._response_cache() is None
    finally:
        dspex.cache = original
    assert cache_mod.cache_for(None) is original
