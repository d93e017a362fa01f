"""A prediction's LM calls as its result keeps them: logged as made, texts bounded, keys never kept."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import dspex
from dspex.configuration import context
from dspex.lm.base import BaseLM
from dspex.lm.call_log import LMCall, current_log, logging_lm_calls
from dspex.lm.client import LMResponse
from dspex.lm.usage import Usage
from dspex.processors.lm_calls import (
    MAX_EXAMPLE_CHARS,
    MAX_TEXT_CHARS,
    call_records,
    logged_fields,
    logged_lm_calls,
)
from dspex.schemas import PredictionRecord, ScoreRecord, decode, encode

SECRET = "sk-drilldown-test-0123456789"


class Answering(BaseLM):
    """Answers in DSPy's chat format with its own text, reporting some usage."""

    def __init__(self, answer: str, api_key: str | None = None) -> None:
        super().__init__("test/answering", api_key=api_key)
        self.answer = answer

    def forward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> Any:
        return {
            "choices": [
                {"message": {"content": f"[[ ## answer ## ]]\n{self.answer}\n\n[[ ## completed ## ]]"}}
            ],
            "usage": {"prompt_tokens": 31, "completion_tokens": 7},
            "model": "test/answering-v2",
        }


class Failing(BaseLM):
    def forward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> Any:
        raise RuntimeError(f"refused with key {SECRET}")


def response(text: str) -> LMResponse:
    return LMResponse(text=text, model="m", usage=Usage(lm_calls=1))


def test_every_call_of_a_program_is_logged_with_its_messages_and_answer() -> None:
    with context(lm=Answering("forty-two")), logging_lm_calls() as log:
        prediction = dspex.Predict("question -> answer")(question="what is six times seven, in words?")
    assert prediction.answer == "forty-two"
    assert current_log() is None, "the log is closed with its block"
    [record] = call_records(log.calls)
    roles = [message.role for message in record.messages]
    assert roles[0] == "system" and roles[-1] == "user"
    assert "what is six times seven, in words?" in record.messages[-1].content
    assert record.completion is not None and "forty-two" in record.completion
    assert (record.model, record.prompt_tokens, record.completion_tokens) == ("test/answering-v2", 31, 7)
    assert record.error is None and record.cache_hit is False and record.truncated_chars == 0
    assert record.latency_s >= 0 and record.start_s >= 0


def test_outside_a_log_nothing_is_kept_and_a_switched_off_log_is_none() -> None:
    with context(lm=Answering("4")):
        assert dspex.Predict("question -> answer")(question="2 + 2?").answer == "4"
    with logged_lm_calls(False) as log:
        assert log is None and current_log() is None and logged_fields() == {}


def test_a_failed_call_is_kept_with_its_error_and_the_key_is_never_kept() -> None:
    lm = Failing("test/failing", api_key=SECRET)
    with context(lm=lm), logging_lm_calls() as log, pytest.raises(Exception, match="refused"):
        dspex.Predict("question -> answer")(question=f"is {SECRET} a key?")
    [record] = call_records(log.calls)
    assert record.completion is None and record.error is not None
    assert record.error.startswith("RuntimeError") and "[redacted]" in record.error
    text = repr(record.model_dump())
    assert SECRET not in text and "is [redacted] a key?" in text


def test_long_texts_keep_head_and_tail_and_say_how_much_was_cut() -> None:
    long = "A" * 3000 + "B" * 7000 + "Z" * 10
    call = LMCall(Answering("x"), [{"role": "user", "content": long}], response("ok"), None, 0.1, 0.2)
    [record] = call_records([call])
    content = record.messages[0].content
    cut = len(long) - MAX_TEXT_CHARS
    assert f"…[truncated {cut} chars]…" in content
    assert content.startswith("A" * 3000) and content.endswith("Z" * 10)
    assert len(content) < MAX_TEXT_CHARS + 40 and record.truncated_chars == cut
    assert record.completion == "ok"


def test_the_texts_of_one_example_stay_within_its_budget() -> None:
    calls = [
        LMCall(
            Answering("x"),
            [{"role": "user", "content": chr(97 + i) * 4000}],
            response("y" * 100),
            None,
            i,
            0.1,
        )
        for i in range(20)
    ]
    records = call_records(calls)
    kept = sum(len(m.content) for r in records for m in r.messages) + sum(
        len(r.completion or "") for r in records
    )
    texts = [m.content for r in records for m in r.messages] + [r.completion or "" for r in records]
    markers = sum(1 for text in texts if "truncated" in text)
    assert kept <= MAX_EXAMPLE_CHARS + markers * 40
    assert len(records) == 20, "every call keeps its numbers"
    assert records[0].messages[0].content == "a" * 4000 and records[0].truncated_chars == 0
    last = records[-1]
    assert last.messages[0].content == "…[truncated 4000 chars]…" and last.truncated_chars == 4100


def test_media_are_placeholders_and_base64_in_text_is_replaced() -> None:
    image = "data:image/png;base64," + "iVBORw0K" * 5000
    messages = [
        {"role": "system", "content": "Look closely."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": image}},
                {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}},
                {"type": "input_audio", "input_audio": {"data": "UklGR" * 100, "format": "wav"}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "function": {"name": "look"}}]},
        {"role": "user", "content": f"inline {image} here"},
    ]
    tool = {"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"q": "cats"}'}}
    answered = LMResponse(text="", model="m", usage=Usage(lm_calls=1), tool_calls=[tool], cached=True)
    [record] = call_records([LMCall(Answering("x"), messages, answered, None, 0.0, 0.0)])
    user = record.messages[1].content
    assert user.startswith("What is in this picture?\n[image: data:image/png;base64 (40000 chars)]")
    assert "[image: https://example.org/cat.png]" in user and "[audio: wav (500 chars)]" in user
    assert record.messages[2].content.startswith("[tool_calls] ")
    assert record.messages[3].content == "inline [data: image/png;base64 (40022 chars)] here"
    assert record.tool_calls == [{"id": "c1", "name": "search", "arguments": '{"q": "cats"}'}]
    assert record.cache_hit is True and record.truncated_chars == 0


def test_calls_beyond_the_limit_are_counted_and_the_records_travel() -> None:
    fields = {"task_id": "t", "job_id": "j", "candidate_id": "c", "example_index": 0, "example": {}}

    async def many() -> PredictionRecord:
        lm = Answering("x")
        with logging_lm_calls(max_calls=3) as log:
            await asyncio.gather(*(lm.acall(f"question {i}") for i in range(5)))
            assert (len(log.calls), log.dropped) == (3, 2)
            return PredictionRecord(**fields, outputs={}, worker_id="w", **logged_fields())

    logged = asyncio.run(many())
    assert logged.lm_calls_unlogged == 2 and logged.lm_call_log is not None
    assert {call.messages[0].content for call in logged.lm_call_log} <= {f"question {i}" for i in range(5)}
    back = decode(encode(logged), PredictionRecord)
    assert back.lm_call_log == logged.lm_call_log and back.schema_version == "1.4"
    score = ScoreRecord(
        job_id="j", candidate_id="c", example_index=0, task_id="t", score=1.0, lm_call_log=back.lm_call_log
    )
    assert decode(encode(score), ScoreRecord).lm_call_log == back.lm_call_log
    older = encode(logged.model_copy(update={"schema_version": "1.3", "lm_call_log": None}))
    assert decode(older, PredictionRecord).lm_call_log is None, "records from before 1.4 still read"


def test_a_record_built_inside_a_log_carries_its_calls() -> None:
    fields = {"task_id": "t", "job_id": "j", "candidate_id": "c", "example_index": 0, "example": {}}
    with context(lm=Answering("7")), logging_lm_calls():
        assert logged_fields() == {}, "no call yet: nothing to add"
        dspex.Predict("question -> answer")(question="3 + 4?")
        record = PredictionRecord(**fields, outputs={"answer": "7"}, worker_id="w", **logged_fields())
    assert record.lm_call_log is not None and record.lm_calls_unlogged is None
    [call] = record.lm_call_log
    assert "3 + 4?" in call.messages[-1].content and call.completion is not None and "7" in call.completion
    assert logged_fields() == {}, "outside the log"
