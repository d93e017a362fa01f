"""``LM(model_type="responses")``: chat requests as OpenAI Responses API requests (DSPy 3.4.1's
conversion), sent over real HTTP to the simulated LM's ``/v1/responses`` (a simulation, not a
model), and its answers read back as chat answers."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.client._submit import lm_spec
from dspex.lm import LM, LMSettings
from dspex.lm.client import _convert_chat_request_to_responses_request
from dspex.lm.responses_api import chat_to_responses_request, responses_to_chat_answer
from dspex.testing import SimulatedLMServer

PNG = "data:image/png;base64,iVBORw0KGgo="


def test_text_images_and_files_become_input_blocks() -> None:
    request = {
        "model": "gpt-5-mini",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
                    {"type": "image_url", "image_url": "https://example.com/a.jpg"},
                    {"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}},
                    {
                        "type": "file",
                        "file": {"file_data": "data:text/plain;base64,SGk=", "filename": "b.txt"},
                    },
                ],
            }
        ],
    }
    converted = _convert_chat_request_to_responses_request(request)
    assert "messages" not in converted and converted["model"] == "gpt-5-mini"
    assert converted["input"] == [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Compare"},
                {"type": "input_image", "image_url": PNG, "detail": "low"},
                {"type": "input_image", "image_url": "https://example.com/a.jpg"},
                {"type": "input_file", "file_id": "file-1", "filename": "a.pdf"},
                {"type": "input_file", "file_data": "data:text/plain;base64,SGk=", "filename": "b.txt"},
            ],
        }
    ]
    assert request["messages"][0]["content"][0] == {"type": "text", "text": "Compare"}  # not changed


def test_a_conversation_keeps_its_turns_with_assistant_text_as_output_text() -> None:
    converted = chat_to_responses_request(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": [{"type": "text", "text": "4"}]},
                {"role": "user", "content": "3+3?"},
            ],
        }
    )
    assert [(item["role"], item["content"]) for item in converted["input"]] == [
        ("system", [{"type": "input_text", "text": "Be brief."}]),
        ("user", [{"type": "input_text", "text": "2+2?"}]),
        ("assistant", [{"type": "output_text", "text": "4"}]),
        ("user", [{"type": "input_text", "text": "3+3?"}]),
    ]


def test_tools_calls_limits_and_formats_take_the_responses_shapes() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
    converted = chat_to_responses_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "add"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "1"}]},
            ],
            "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "add"}},
            "max_completion_tokens": 500,
            "reasoning_effort": "low",
            "temperature": None,
            "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {}}},
        }
    )
    assert converted["input"][1:] == [
        {"type": "function_call", "name": "add", "arguments": '{"a": 1}', "call_id": "c1"},
        {"type": "function_call_output", "output": "1", "call_id": "c1"},
    ]
    assert converted["tools"] == [{"type": "function", "name": "add", "parameters": {"type": "object"}}]
    assert converted["tool_choice"] == {"type": "function", "name": "add"}
    assert converted["max_output_tokens"] == 500 and "max_completion_tokens" not in converted
    assert converted["reasoning"] == {"effort": "low", "summary": "auto"} and "temperature" not in converted
    assert converted["text"] == {"format": {"type": "json_schema", "name": "out", "schema": {}}}


def test_an_answer_reads_as_one_chat_choice() -> None:
    answer = responses_to_chat_answer(
        {
            "model": "m",
            "output": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "think"}]},
                {
                    "type": "message",
                    "content": [{"type": "output_text", "text": "a"}, {"type": "output_text", "text": "b"}],
                },
                {"type": "function_call", "call_id": "c9", "name": "f", "arguments": {"x": 1}},
            ],
            "usage": {"input_tokens": 7, "output_tokens": 3},
        }
    )
    message = answer["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("ab", "think")
    assert message["tool_calls"] == [
        {"type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}, "id": "c9"}
    ]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(in_process=True) as server:
        yield server


def responses_requests(sim: SimulatedLMServer) -> list[dict[str, Any]]:
    return [entry for entry in sim.control.requests(limit=1000) if entry["path"] == "responses"]


def test_a_program_runs_on_the_responses_api_of_the_simulated_lm(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    lm = LM("openai/simulated", model_type="responses", api_base=sim.base_url, cache_dir=tmp_path)
    before = len(responses_requests(sim))
    with dspex.context(lm=lm):
        first = dspex.Predict("question -> answer")(question="What is 12 + 30?")
        again = dspex.Predict("question -> answer")(question="What is 12 + 30?")
    assert first.answer == "42" and again.answer == "42"
    assert len(responses_requests(sim)) == before + 1  # the second answer came from the cache
    entry = lm.history[0]
    assert entry["response"].usage.prompt_tokens > 0 and entry["response"].usage.completion_tokens > 0
    assert lm.history[1]["response"].cached


def test_a_rollout_gets_its_own_answer_and_system_turns_can_be_developer_turns(
    sim: SimulatedLMServer, tmp_path: Path
) -> None:
    lm = LM("openai/simulated", model_type="responses", api_base=sim.base_url, cache_dir=tmp_path)
    developer = lm.copy(use_developer_role=True)
    assert developer.model_type == "responses" and developer.use_developer_role
    messages = [
        {"role": "system", "content": "Answer with a number."},
        {"role": "user", "content": "What is 2 + 3?"},
    ]
    before = len(responses_requests(sim))
    first = developer.complete(messages)
    developer.complete(messages, rollout_id=1)  # not the cached answer: a request of its own
    assert len(responses_requests(sim)) == before + 2
    assert first.text and first.model == "simulated" and not first.cached
    dumped = json.dumps(developer.dump_state())
    assert '"use_developer_role": true' in dumped and '"model_type": "responses"' in dumped


def test_the_api_travels_with_the_settings_and_chat_settings_read_as_before() -> None:
    chat = LM("openai/simulated", api_base="http://127.0.0.1:9/v1", cache=False)
    assert (
        "model_type" not in chat.settings().model_dump()
        and "use_developer_role" not in chat.settings().model_dump()
    )
    responses = chat.copy(model_type="responses", use_developer_role=True)
    dumped = responses.settings().model_dump(mode="json")
    assert (dumped["model_type"], dumped["use_developer_role"]) == ("responses", True)
    for rebuilt in (
        LM.from_settings(LMSettings.model_validate(dumped)),
        pickle.loads(pickle.dumps(responses)),
    ):
        assert rebuilt.model_type == "responses" and rebuilt.use_developer_role
    program = dspex.Predict("question -> answer")
    program.lm = responses
    loaded = dspex.Predict("question -> answer")
    loaded.load_state(program.dump_state())
    assert isinstance(loaded.lm, LM) and loaded.lm.model_type == "responses"
    with pytest.raises(dspex.ConfigurationError, match="model_type='responses'"):
        lm_spec(responses)  # a job's LM travels as an LMSpec, which has chat calls only
    assert lm_spec(chat) is not None
