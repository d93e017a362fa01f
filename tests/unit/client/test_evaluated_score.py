"""Client.evaluate reads score records without their trace, callback events and LM call log."""

from __future__ import annotations

import dspex
from dspex.client._cluster import _scores
from dspex.client.results import EvaluatedScore, evaluation_result
from dspex.schemas import (
    CallbackEvent,
    LMCallRecord,
    LMMessageRecord,
    ScoreRecord,
    ToolCallRecord,
    TraceEntry,
    UsageRecord,
)
from dspex.schemas.serde import encode


def _record(index: int) -> ScoreRecord:
    question = f"What is {index} + 1?"
    return ScoreRecord(
        job_id="j", candidate_id="c", example_index=index, task_id=f"t{index}",
        outputs={"answer": str(index + 1)}, score=1.0, feedback="ok", latency_s=0.25,
        trace=[TraceEntry(predictor="self", inputs={"question": question}, outputs={"answer": "1"})],
        callback_events=[CallbackEvent(callback="pkg.mod:Cb", hook="on_module_start", data={"q": question})],
        tool_calls=[ToolCallRecord(tool="search", start_s=0.0, duration_s=0.1)],
        lm_call_log=[LMCallRecord(model="m", messages=[LMMessageRecord(role="user", content=question)])],
        usage=UsageRecord(prompt_tokens=10, completion_tokens=2, lm_calls=1),
        example={"question": question, "answer": str(index + 1)}, attempt_id=f"a{index}",
    )  # fmt: skip


def test_the_three_drill_down_fields_stay_unread_and_the_rest_is_as_written() -> None:
    full = _record(3)
    lean = _scores([encode(full)], EvaluatedScore)[0]
    assert isinstance(lean, EvaluatedScore) and isinstance(lean, ScoreRecord)
    assert (lean.trace, lean.callback_events, lean.lm_call_log) == ([], None, None)
    unread = {"trace", "callback_events", "lm_call_log"}
    assert lean.model_dump(exclude=unread) == full.model_dump(exclude=unread)
    assert _scores([encode(full)])[0] == full  # the default reader keeps every field


def test_an_evaluation_result_from_lean_records_equals_the_one_from_full_records() -> None:
    full = [_record(i) for i in range(5)]
    lean = _scores([encode(r) for r in full], EvaluatedScore)
    examples = [dspex.Example(question=f"What is {i} + 1?").with_inputs("question") for i in range(5)]
    expected = evaluation_result("c", full, examples, total=5, metric="exact_match:answer")
    found = evaluation_result("c", lean, examples, total=5, metric="exact_match:answer")
    assert found.score == expected.score and found.usage == expected.usage
    assert [(r.index, r.prediction, r.score, r.feedback, r.error, r.latency_s, r.tool_calls)
            for r in found.records] == [
        (r.index, r.prediction, r.score, r.feedback, r.error, r.latency_s, r.tool_calls)
        for r in expected.records
    ]  # fmt: skip
    rebuilt = evaluation_result("c", lean, None, total=5, metric="exact_match:answer")
    assert [r.example for r in rebuilt.records] == [dspex.Example(**r.example or {}) for r in full]
