"""StreamListener fed chunks by hand: the adapter in the settings decides the format."""

from __future__ import annotations

from typing import Any

import pytest

import dspex
from dspex.lm.sse import ChatChunk
from dspex.streaming import StreamListener, StreamResponse


def chunk(content: str | None = None, *, finish: str | None = None, **delta: Any) -> ChatChunk:
    return ChatChunk.from_openai(
        {
            "id": "c1",
            "model": "m",
            "choices": [{"delta": {"content": content, **delta}, "finish_reason": finish}],
        }
    )


def feed(listener: StreamListener, texts: list[str]) -> list[StreamResponse]:
    return [response for text in texts if (response := listener.receive(chunk(text))) is not None]


def test_without_an_adapter_in_the_settings_the_chat_format_is_read() -> None:
    listener = StreamListener("answer", predict_name="p")
    responses = feed(listener, ["[[ ## answer ## ]]\n", "Hi", " there", "\n\n[[ ## completed ## ]]"])
    assert [(r.predict_name, r.chunk, r.is_last_chunk) for r in responses] == [
        ("p", "Hi", False), ("p", " there", False), ("p", "", True),
    ]  # fmt: skip
    assert listener.stream_start and listener.stream_end


def test_the_settings_adapter_picks_the_format() -> None:
    listener = StreamListener("answer")
    with dspex.context(adapter=dspex.JSONAdapter()):
        responses = feed(listener, ['{"answer": "Hi', '!"}'])
    assert [(r.chunk, r.is_last_chunk) for r in responses] == [('"Hi', False), ('!"', True)]


def test_a_finished_chunk_ends_the_field_even_without_a_marker() -> None:
    listener = StreamListener("answer")
    feed(listener, ["[[ ## answer ## ]]\n", "Hi"])
    last = listener.receive(chunk(" you", finish="stop"))
    assert last is not None and (last.chunk, last.is_last_chunk) == (" you", True)


def test_a_listener_ignores_chunks_after_its_field_unless_reusable() -> None:
    once = StreamListener("answer")
    feed(once, ["[[ ## answer ## ]]\nA\n\n[[ ## completed ## ]]"])
    assert feed(once, ["[[ ## answer ## ]]\n", "B", "\n\n[[ ## completed ## ]]"]) == []
    again = StreamListener("answer", allow_reuse=True)
    feed(again, ["[[ ## answer ## ]]\nA\n\n[[ ## completed ## ]]"])
    assert [r.chunk for r in feed(again, ["[[ ## answer ## ]]\n", "B", "\n\n[[ ## completed ## ]]"])] == [
        "B",
        "",
    ]


def test_finalize_flushes_what_a_started_field_still_holds() -> None:
    listener = StreamListener("answer")
    feed(listener, ["[[ ## answer ## ]]\n", "almost [["])
    last = listener.finalize()
    assert last is not None and (last.chunk, last.is_last_chunk) == ("almost", True)
    assert listener.finalize() is None
    assert StreamListener("answer").finalize() is None  # never started: nothing to flush


def test_an_adapter_that_cannot_stream_is_a_clear_error() -> None:
    listener = StreamListener("answer")
    with (
        dspex.context(adapter=dspex.TwoStepAdapter(dspex.DummyLM([{"answer": "x"}]))),
        pytest.raises(ValueError, match="Unsupported adapter for streaming: TwoStepAdapter"),
    ):
        listener.receive(chunk("[[ ## answer ## ]]"))


def test_a_natively_streamed_type_is_read_by_the_type() -> None:
    class WithReasoning(dspex.Signature):
        question: str = dspex.InputField()
        reasoning: dspex.Reasoning = dspex.OutputField()
        answer: str = dspex.OutputField()

    listener = StreamListener("reasoning", predict=dspex.Predict(WithReasoning), predict_name="p")
    response = listener.receive(chunk(None, reasoning_content="First, think. "))
    assert response is not None and response.chunk == "First, think. "
    assert listener.receive(chunk("[[ ## answer ## ]]")) is None


@pytest.mark.parametrize(
    ("adapter", "text", "could"),
    [
        ("ChatAdapter", "some text [", True),
        ("ChatAdapter", "some text [[ ## com", True),
        ("ChatAdapter", "answer: hello", False),
        ("JSONAdapter", 'some text "', True),
        ("JSONAdapter", 'some text ",', True),
        ("JSONAdapter", 'some text "}', True),
        ("JSONAdapter", "hello", False),
        ("XMLAdapter", "some text <", True),
        ("XMLAdapter", "some text </answer", True),
        ("XMLAdapter", "plain", False),
    ],
)
def test_could_form_end_identifier(adapter: str, text: str, could: bool) -> None:
    assert StreamListener("answer")._could_form_end_identifier(text, adapter) is could
