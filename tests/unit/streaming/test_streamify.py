"""streamify end to end over a scripted streaming LM: routing, listeners, status messages, sync use."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

import dspex
from dspex.lm.sse import ChatChunk
from dspex.streaming import (
    StatusMessage,
    StatusMessageProvider,
    StreamListener,
    StreamResponse,
    apply_sync_streaming,
    streamify,
    streaming_response,
)

CHAT_ANSWER = [
    "[[",
    " ##",
    " answer",
    " ##",
    " ]]\n\n",
    "To",
    " get",
    " there",
    "!\n\n[[ ##",
    " completed",
    " ## ]]",
]
CHAT_JUDGEMENT = ["[[ ## judgement ## ]]\n\n", "Funny", " enough", ".", "\n\n[[ ## completed ## ]]"]


class TwoSteps(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.predict1 = dspex.Predict("question -> answer")
        self.predict2 = dspex.Predict("question, answer -> judgement")

    async def aforward(self, question: str) -> dspex.Prediction:
        answer = await self.predict1.acall(question=question)
        return await self.predict2.acall(question=question, answer=answer.answer)


async def collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


def listeners(*fields: str, **options: Any) -> list[StreamListener]:
    return [StreamListener(signature_field_name=field, **options) for field in fields]


async def test_each_listened_field_streams_its_chunks_in_order(streaming_lm: Any) -> None:
    program = streamify(TwoSteps(), stream_listeners=listeners("answer", "judgement"))
    with dspex.context(lm=streaming_lm([CHAT_ANSWER, CHAT_JUDGEMENT])):
        items = await collect(program(question="Why did the chicken cross?"))
    chunks = [item for item in items if isinstance(item, StreamResponse)]
    assert [(c.predict_name, c.signature_field_name, c.chunk, c.is_last_chunk) for c in chunks] == [
        ("predict1", "answer", "To", False),
        ("predict1", "answer", " get", False),
        ("predict1", "answer", " there", False),
        ("predict1", "answer", "!", True),
        ("predict2", "judgement", "Funny", False),
        ("predict2", "judgement", " enough", False),
        ("predict2", "judgement", ".", False),
        ("predict2", "judgement", "", True),
    ]
    assert isinstance(items[-1], dspex.Prediction) and items[-1].judgement == "Funny enough."


async def test_only_the_listened_predictors_stream(streaming_lm: Any) -> None:
    lm = streaming_lm([CHAT_ANSWER, CHAT_JUDGEMENT])
    program = streamify(TwoSteps(), stream_listeners=listeners("judgement"))
    with dspex.context(lm=lm):
        items = await collect(program(question="q"))
    assert lm.streamed == 1 and lm.calls == 2
    assert {item.signature_field_name for item in items if isinstance(item, StreamResponse)} == {"judgement"}


async def test_without_listeners_the_raw_lm_chunks_come_out(streaming_lm: Any) -> None:
    program = streamify(dspex.Predict("question -> answer"))
    with dspex.context(lm=streaming_lm([CHAT_ANSWER])):
        items = await collect(program(question="q"))
    chunks = [item for item in items if isinstance(item, ChatChunk)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(CHAT_ANSWER)
    assert items[-1].answer == "To get there!"


async def test_the_final_prediction_can_be_left_out_once_something_streamed(streaming_lm: Any) -> None:
    program = streamify(
        dspex.Predict("question -> answer"),
        stream_listeners=listeners("answer"),
        include_final_prediction_in_output_stream=False,
    )
    with dspex.context(lm=streaming_lm([CHAT_ANSWER])):
        streamed = await collect(program(question="q"))
    assert not any(isinstance(item, dspex.Prediction) for item in streamed)
    # an LM that does not stream (here: a DummyLM) leaves nothing but the prediction to yield
    with dspex.context(lm=dspex.DummyLM([{"answer": "red"}])):
        quiet = await collect(program(question="q"))
    assert len(quiet) == 1 and quiet[0].answer == "red"


async def test_json_adapter_fields_stream_as_raw_json_values(streaming_lm: Any) -> None:
    script = ['{"', "answer", '":', '"To', " get", ' there!"', "}"]
    program = streamify(dspex.Predict("question -> answer"), stream_listeners=listeners("answer"))
    with dspex.context(lm=streaming_lm([script]), adapter=dspex.JSONAdapter()):
        items = await collect(program(question="q"))
    chunks = [(i.chunk, i.is_last_chunk) for i in items if isinstance(i, StreamResponse)]
    assert chunks == [('"To', False), (" get", False), (' there!"', True)]
    assert items[-1].answer == "To get there!"


async def test_xml_adapter_fields_stream_between_their_tags(streaming_lm: Any) -> None:
    script = ["<", "answer", ">", "To", " get", "!", "<", "/answer", ">"]
    program = streamify(dspex.Predict("question -> answer"), stream_listeners=listeners("answer"))
    with dspex.context(lm=streaming_lm([script]), adapter=dspex.XMLAdapter()):
        items = await collect(program(question="q"))
    assert "".join(i.chunk for i in items if isinstance(i, StreamResponse)) == "To get!"


async def test_an_answer_without_its_end_marker_ends_with_the_stream(streaming_lm: Any) -> None:
    script = ["[[ ## answer ## ]]\n\n", "This", " is", " a", " test", " [[", " ## x"]
    program = streamify(dspex.Predict("question -> answer"), stream_listeners=listeners("answer"))
    with dspex.context(lm=streaming_lm([script])):
        items = await collect(program(question="q"))
    chunks = [item for item in items if isinstance(item, StreamResponse)]
    assert "".join(c.chunk for c in chunks) == "This is a test" and chunks[-1].is_last_chunk


class Twice(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.predict = dspex.Predict("question -> answer")

    async def aforward(self, question: str) -> dspex.Prediction:
        await self.predict.acall(question=question)
        return await self.predict.acall(question=question)


@pytest.mark.parametrize(
    ("allow_reuse", "expected"), [(True, "To get there!To get there!"), (False, "To get there!")]
)
async def test_a_reusable_listener_streams_every_call(
    streaming_lm: Any, allow_reuse: bool, expected: str
) -> None:
    program = streamify(Twice(), stream_listeners=listeners("answer", allow_reuse=allow_reuse))
    with dspex.context(lm=streaming_lm([CHAT_ANSWER])):
        items = await collect(program(question="q"))
    assert "".join(i.chunk for i in items if isinstance(i, StreamResponse)) == expected


def test_a_field_of_no_predictor_or_of_several_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a field of any predictor"):
        streamify(TwoSteps(), stream_listeners=listeners("nope"))
    program = Twice()
    program.other = dspex.Predict("question -> answer")
    with pytest.raises(ValueError, match="not unique"):
        streamify(program, stream_listeners=listeners("answer"))


def test_a_listener_given_its_predictor_gets_the_predictors_name() -> None:
    program = TwoSteps()
    listener = StreamListener("answer", predict=program.predict1)
    streamify(program, stream_listeners=[listener])
    assert listener.predict_name == "predict1"


class AskWithTool(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.generate_question = dspex.Tool(lambda x: f"What color is the {x}?", name="generate_question")
        self.predict = dspex.Predict("question -> answer")

    async def aforward(self, x: str) -> dspex.Prediction:
        question = await self.generate_question.acall(x=x)
        return await self.predict.acall(question=question)


async def test_default_status_messages_announce_tool_calls() -> None:
    with dspex.context(lm=dspex.DummyLM([{"answer": "blue"}])):
        items = await collect(streamify(AskWithTool())(x="sky"))
    assert [item.message for item in items if isinstance(item, StatusMessage)] == [
        "Calling tool generate_question...",
        "Tool calling finished! Querying the LLM with tool calling results...",
    ]
    assert items[-1].answer == "blue"


class Loud(StatusMessageProvider):
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def module_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        return f"{self.tag}: predict" if isinstance(instance, dspex.Predict) else None

    def lm_end_status_message(self, outputs: Any) -> str | None:
        return f"{self.tag}: lm done"


async def test_custom_providers_of_concurrent_runs_do_not_mix() -> None:
    callbacks_before = list(dspex.settings.callbacks)

    async def run(tag: str) -> list[str]:
        with dspex.context(lm=dspex.DummyLM([{"answer": "a"}])):
            items = await collect(streamify(AskWithTool(), status_message_provider=Loud(tag))(x=tag))
        return [item.message for item in items if isinstance(item, StatusMessage)]

    first, second = await asyncio.gather(run("one"), run("two"))
    assert first[-2:] == ["one: predict", "one: lm done"] and all(m.startswith("one") for m in first[2:])
    assert second[-2:] == ["two: predict", "two: lm done"]
    assert dspex.settings.callbacks == callbacks_before


class SendsItsOwn(dspex.Module):
    async def aforward(self, question: str) -> dspex.Prediction:
        await dspex.settings.send_stream.send({"custom": question})
        return dspex.Prediction(answer="done")


async def test_a_program_can_send_its_own_items() -> None:
    items = await collect(streamify(SendsItsOwn())(question="hi"))
    assert items[0] == {"custom": "hi"} and items[1].answer == "done"


class Fails(dspex.Module):
    async def aforward(self, question: str) -> dspex.Prediction:
        raise dspex.LMServerError("down", status=503)


async def test_the_programs_exception_reaches_the_consumer() -> None:
    with pytest.raises(dspex.LMServerError, match="down"):
        await collect(streamify(Fails())(question="q"))


async def test_stopping_early_cancels_the_run(streaming_lm: Any) -> None:
    lm = streaming_lm([CHAT_ANSWER], delay=0.05)
    stream = streamify(Twice(), stream_listeners=listeners("answer"))(question="q")
    with dspex.context(lm=lm):
        first = await anext(stream)
        await stream.aclose()
    assert isinstance(first, StreamResponse)
    await asyncio.sleep(0.2)
    assert lm.calls == 1  # the second call never started


def test_sync_streaming_yields_chunks_before_the_answer_is_complete(streaming_lm: Any) -> None:
    program = streamify(
        dspex.Predict("question -> answer"), stream_listeners=listeners("answer"), async_streaming=False
    )
    started = time.perf_counter()
    seen: list[tuple[float, Any]] = []
    with dspex.context(lm=streaming_lm([CHAT_ANSWER], delay=0.05)):
        for item in program(question="q"):
            seen.append((time.perf_counter() - started, item))
    first_chunk_at = next(at for at, item in seen if isinstance(item, StreamResponse))
    done_at, result = seen[-1]
    assert isinstance(result, dspex.Prediction) and result.answer == "To get there!"
    assert done_at - first_chunk_at >= 0.2  # five more chunks, 50 ms apart, came after the first


def test_apply_sync_streaming_turns_any_streamed_program_sync() -> None:
    with dspex.context(lm=dspex.DummyLM([{"answer": "blue"}])):
        items = list(apply_sync_streaming(streamify(AskWithTool())(x="sky")))
    assert [type(item).__name__ for item in items] == ["StatusMessage", "StatusMessage", "Prediction"]


def test_apply_sync_streaming_raises_the_programs_exception() -> None:
    with pytest.raises(dspex.LMServerError):
        list(apply_sync_streaming(streamify(Fails())(question="q")))


async def test_streaming_response_frames_every_item_as_a_server_sent_event(streaming_lm: Any) -> None:
    program = streamify(dspex.Predict("question -> answer"), stream_listeners=listeners("answer"))
    with dspex.context(lm=streaming_lm([CHAT_ANSWER])):
        events = await collect(streaming_response(program(question="q")))
    assert all(event.startswith("data: ") and event.endswith("\n\n") for event in events)
    assert events[-1] == "data: [DONE]\n\n"
    assert json.loads(events[-2][6:]) == {"prediction": {"answer": "To get there!"}}
    assert json.loads(events[0][6:])["stream_response"]["chunk"] == "To"


async def test_streaming_response_passes_framed_text_and_rejects_unknown_items() -> None:
    async def items() -> Any:
        yield "data: {}\n\n"
        yield object()

    events = streaming_response(items())
    assert await anext(events) == "data: {}\n\n"
    with pytest.raises(ValueError, match="Unknown chunk value type"):
        await anext(events)
