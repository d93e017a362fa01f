"""Adapter.acall: the request it makes, and ChatAdapter's single fallback to JSONAdapter.

The LM here is a scripted stand-in with the LM's ``acomplete`` shape (no HTTP, no Kafka): it
records each call and answers from a list. Real-HTTP behaviour is covered by the LM's own tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from dspex.adapters import AdapterResult, ChatAdapter, JSONAdapter
from dspex.errors import AdapterParseError, LMRequestError
from dspex.signatures import make_signature


@dataclass
class Reply:
    text: str


@dataclass
class ScriptedLM:
    replies: list[str | Exception]
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def acomplete(self, messages: list[Mapping[str, Any]], **overrides: Any) -> Reply:
        self.calls.append({"messages": messages, **overrides})
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return Reply(reply)


def scripted(*replies: str | Exception) -> Any:
    """A ScriptedLM, typed loosely: it stands where the adapters expect a dspex.lm.LM."""
    return ScriptedLM(list(replies))


SIG = make_signature("question -> answer: int")
CHAT_OK = "[[ ## answer ## ]]\n5\n\n[[ ## completed ## ]]"


async def test_chat_call_sends_messages_and_config() -> None:
    lm = scripted(CHAT_OK)
    result = await ChatAdapter().acall_result(lm, SIG, [], {"question": "2+3?"}, config={"temperature": 0.7})
    assert isinstance(result, AdapterResult)
    assert result.outputs == {"answer": 5} and result.adapter == "chat" and result.response.text == CHAT_OK
    assert lm.calls[0]["messages"] == ChatAdapter().format(SIG, [], {"question": "2+3?"})
    assert lm.calls[0]["temperature"] == 0.7 and "response_format" not in lm.calls[0]


async def test_json_call_adds_response_format_and_config_wins() -> None:
    lm = scripted('{"answer": 1}', '{"answer": 2}')
    first = await JSONAdapter().acall_result(lm, SIG, [], {"question": "q"})
    assert first.outputs == {"answer": 1} and first.adapter == "json"
    assert lm.calls[0]["response_format"] == {"type": "json_object"}
    schema = {"type": "json_schema", "json_schema": {}}
    await JSONAdapter().acall_result(lm, SIG, [], {"question": "q"}, config={"response_format": schema})
    assert lm.calls[1]["response_format"] == schema


async def test_chat_falls_back_to_json_once() -> None:
    lm = scripted("The answer is five.", '{"answer": 5}')
    result = await ChatAdapter().acall_result(lm, SIG, [], {"question": "q"}, config={"rollout_id": 3})
    assert result.outputs == {"answer": 5} and result.adapter == "json"
    assert len(lm.calls) == 2
    assert lm.calls[1]["response_format"] == {"type": "json_object"} and lm.calls[1]["rollout_id"] == 3
    assert lm.calls[1]["messages"] == JSONAdapter().format(SIG, [], {"question": "q"})


async def test_when_the_fallback_fails_too_the_chat_error_is_raised() -> None:
    lm = scripted("The answer is five.", "still not json")
    with pytest.raises(AdapterParseError) as info:
        await ChatAdapter().acall_result(lm, SIG, [], {"question": "q"})
    assert info.value.adapter == "ChatAdapter" and info.value.raw_text == "The answer is five."
    assert any("JSONAdapter fallback failed too" in note for note in info.value.__notes__)
    assert len(lm.calls) == 2


async def test_no_fallback_when_disabled() -> None:
    lm = scripted("nonsense")
    with pytest.raises(AdapterParseError):
        await ChatAdapter(use_json_adapter_fallback=False).acall_result(lm, SIG, [], {"question": "q"})
    assert len(lm.calls) == 1


async def test_lm_errors_are_not_parse_errors_and_do_not_fall_back() -> None:
    lm = scripted(LMRequestError("bad request", status=400))
    with pytest.raises(LMRequestError):
        await ChatAdapter().acall_result(lm, SIG, [], {"question": "q"})
    assert len(lm.calls) == 1


async def test_json_adapter_does_not_fall_back() -> None:
    lm = scripted("no json")
    with pytest.raises(AdapterParseError) as info:
        await JSONAdapter().acall_result(lm, SIG, [], {"question": "q"})
    assert info.value.adapter == "JSONAdapter" and len(lm.calls) == 1
