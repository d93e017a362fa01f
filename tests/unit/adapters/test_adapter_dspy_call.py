"""DSPy's adapter call, ``adapter(lm, lm_kwargs, signature, demos, inputs)`` and ``await adapter.acall(...)``:
what reaches the LM, what comes back, and ChatAdapter's fallback to JSONAdapter on that path too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from dspex.adapters import ChatAdapter, JSONAdapter
from dspex.errors import AdapterParseError
from dspex.lm import BaseLM
from dspex.signatures import make_signature

SIG = make_signature("question -> answer: int")


class Recording(BaseLM):
    """A DSPy-style LM: ``__call__``/``acall`` answer from a list of completions, and are recorded."""

    def __init__(self, *answers: Any, params: Sequence[str] = (), schema: bool = False) -> None:
        super().__init__("test/recording")
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []
        self._params = set(params)
        self._schema = schema

    @property
    def supported_params(self) -> set[str]:
        return self._params

    @property
    def supports_response_schema(self) -> bool:
        return self._schema

    def __call__(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> list[Any]:
        self.calls.append({"messages": messages, **kwargs})
        answer = self.answers.pop(0)
        return answer if isinstance(answer, list) else [answer]

    async def acall(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> list[Any]:
        return self(prompt, messages, **kwargs)


def test_call_returns_one_dict_per_completion_and_passes_kwargs_through() -> None:
    lm = Recording(["[[ ## answer ## ]]\n1", "[[ ## answer ## ]]\n2"])
    kwargs = {"temperature": 0.5, "n": 2, "tools": ["dropped"], "tool_choice": "auto"}
    assert ChatAdapter()(lm, kwargs, SIG, [], {"question": "q"}) == [{"answer": 1}, {"answer": 2}]
    call = lm.calls[0]
    assert call["messages"] == ChatAdapter().format(SIG, [], {"question": "q"})
    assert {k: v for k, v in call.items() if k != "messages"} == {"temperature": 0.5, "n": 2}
    assert kwargs["tools"] == ["dropped"]  # the caller's dict is not changed


async def test_acall_has_the_same_shape() -> None:
    lm = Recording("[[ ## answer ## ]]\n5")
    assert await ChatAdapter().acall(lm, {}, SIG, [], {"question": "q"}) == [{"answer": 5}]


def test_logprobs_ride_along_and_empty_answers_are_parse_errors() -> None:
    lm = Recording({"text": "[[ ## answer ## ]]\n3", "logprobs": None})
    assert ChatAdapter()(lm, {}, SIG, [], {"question": "q"}) == [{"answer": 3}]  # no logprobs: no key
    lm = Recording({"text": "[[ ## answer ## ]]\n3", "logprobs": {"content": [1]}})
    assert ChatAdapter()(lm, {}, SIG, [], {"question": "q"})[0]["logprobs"] == {"content": [1]}
    with pytest.raises(AdapterParseError, match="empty or null response"):
        JSONAdapter()(Recording(""), {}, SIG, [], {"question": "q"})


def test_chat_falls_back_to_json_and_json_does_not() -> None:
    lm = Recording("five", '{"answer": 5}')
    assert ChatAdapter()(lm, {}, SIG, [], {"question": "q"}) == [{"answer": 5}]
    assert lm.calls[1]["messages"] == JSONAdapter().format(SIG, [], {"question": "q"})
    lm = Recording("five", "still five")
    with pytest.raises(AdapterParseError) as info:
        ChatAdapter()(lm, {}, SIG, [], {"question": "q"})
    assert info.value.raw_text == "five" and "JSONAdapter fallback failed too" in info.value.__notes__[0]
    lm = Recording("five")
    with pytest.raises(AdapterParseError):
        ChatAdapter(use_json_adapter_fallback=False)(lm, {}, SIG, [], {"question": "q"})
    assert len(lm.calls) == 1


def test_json_response_format_follows_what_the_lm_supports() -> None:
    answer = '{"answer": 1}'
    lm = Recording(answer)  # declares no response_format: none is sent, as DSPy does
    JSONAdapter()(lm, {}, SIG, [], {"question": "q"})
    assert "response_format" not in lm.calls[0]
    lm = Recording(answer, params=["response_format"])
    JSONAdapter()(lm, {}, SIG, [], {"question": "q"})
    assert lm.calls[0]["response_format"] == {"type": "json_object"}
    lm = Recording(answer, params=["response_format"], schema=True)
    JSONAdapter()(lm, {}, SIG, [], {"question": "q"})
    schema = lm.calls[0]["response_format"]
    assert schema["type"] == "json_schema" and schema["json_schema"]["schema"]["required"] == ["answer"]
    open_mapping = make_signature("question -> scores: dict[str, int]")
    lm = Recording('{"scores": {}}', params=["response_format"], schema=True)
    JSONAdapter()(lm, {}, open_mapping, [], {"question": "q"})
    assert lm.calls[0]["response_format"] == {"type": "json_object"}


def test_finetune_data_is_the_messages_plus_the_answer() -> None:
    data = ChatAdapter().format_finetune_data(SIG, [], {"question": "q"}, {"answer": 4})
    *prompt, answer = data["messages"]
    assert prompt == ChatAdapter().format(SIG, [], {"question": "q"})
    assert answer == {"role": "assistant", "content": "[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]\n"}
    with pytest.raises(NotImplementedError):
        JSONAdapter().format_finetune_data(SIG, [], {"question": "q"}, {"answer": 4})


def test_missing_outputs_take_defaults_then_none() -> None:
    from dspex.signatures import InputField, OutputField, Signature

    class Optional(Signature):
        question: str = InputField()
        answer: str = OutputField()
        note: str | None = OutputField(default="no note")
        tags: list[str] = OutputField(default_factory=list)
        maybe: int | None = OutputField()

    parsed: Mapping[str, Any] = ChatAdapter().parse(Optional, "[[ ## answer ## ]]\n42")
    assert parsed == {"answer": "42", "note": "no note", "tags": [], "maybe": None}
    with pytest.raises(AdapterParseError) as info:
        JSONAdapter().parse(Optional, '{"note": "x"}')
    assert (
        "Adapter JSONAdapter failed to parse" in str(info.value) and info.value.adapter_name == "JSONAdapter"
    )
