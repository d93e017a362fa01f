"""User callbacks recorded per prediction (what a predictor stores as ``callback_events``)."""

from __future__ import annotations

from typing import Any

import dspex
from dspex.configuration import context
from dspex.observability.recorder import MAX_EVENTS, EventLog, RecordedCallback, compact, recording
from dspex.schemas import CallbackEvent, PredictionRecord, decode, encode
from dspex.utils import BaseCallback, DummyLM


class Noting(BaseCallback):
    """Returns a finding from one hook and fails in another."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> dict[str, str]:  # type: ignore[override]
        self.heard.append("module")
        return {"seen": type(instance).__name__}

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        raise RuntimeError("boom")


def run_predict(callback: BaseCallback) -> list[CallbackEvent] | None:
    recorded = RecordedCallback(callback, "tests.noting:Noting")
    with context(lm=DummyLM([{"answer": "4"}]), callbacks=[recorded]), recording() as log:
        prediction = dspex.Predict("question -> answer")(question="2 + 2?")
    assert prediction.answer == "4", "a failing hook never breaks the call"
    return log.recorded()


def test_every_hook_the_callback_hears_is_recorded_in_order() -> None:
    noting = Noting()
    events = run_predict(noting)
    assert events is not None and noting.heard == ["module"]
    hooks = [event.hook for event in events]
    assert hooks[0] == "on_module_start" and hooks[-1] == "on_module_end"
    assert {"on_lm_start", "on_lm_end"} <= set(hooks)
    assert all(event.callback == "tests.noting:Noting" for event in events)
    assert [event.at_s for event in events] == sorted(event.at_s for event in events)
    start = events[0]
    assert (start.instance, start.data, start.returned) == (
        "Predict",
        {"question": "2 + 2?"},
        {"seen": "Predict"},
    )
    assert events[-1].call_id == start.call_id
    lm_end = next(event for event in events if event.hook == "on_lm_end")
    assert lm_end.hook_error == "RuntimeError: boom" and lm_end.error is None


def test_nothing_is_recorded_outside_a_prediction() -> None:
    recorded = RecordedCallback(Noting(), "tests.noting:Noting")
    with context(lm=DummyLM([{"answer": "4"}]), callbacks=[recorded]):
        assert dspex.Predict("question -> answer")(question="2 + 2?").answer == "4"
    with recording() as log:
        pass
    assert log.recorded() is None


def test_a_long_run_keeps_its_first_events_and_counts_the_rest() -> None:
    log = EventLog()
    for index in range(MAX_EVENTS + 7):
        log.add(CallbackEvent(callback="c:C", hook="on_lm_start", call_id=str(index)))
    events = log.recorded()
    assert events is not None and len(events) == MAX_EVENTS + 1
    assert (events[-1].hook, events[-1].data) == ("events_dropped", {"dropped": 7})


def test_data_is_kept_in_json_form_with_long_values_cut() -> None:
    value = compact({"prompt": "x" * 5000, "items": list(range(150)), "obj": object()})
    assert value["prompt"].startswith("x" * 1000) and value["prompt"].endswith("(5000 characters)")
    assert len(value["items"]) == 101 and value["items"][-1] == "... (150 items)"
    assert value["obj"].startswith("<object object")


def test_prediction_records_carry_events_and_records_without_them_still_read() -> None:
    event = CallbackEvent(callback="c:C", hook="on_module_start", call_id="1", data={"q": 1}, returned=[1])
    record = PredictionRecord(
        task_id="t", job_id="j", candidate_id="c", example_index=0, example={}, outputs={"a": 1},
        worker_id="w", callback_events=[event],
    )  # fmt: skip
    assert decode(encode(record), PredictionRecord).callback_events == [event]
    assert record.schema_version == "1.4"  # 1.2: attempt_id; 1.3: tool_calls; 1.4: lm_call_log
    older = record.model_copy(update={"callback_events": None, "schema_version": "1.0"})
    assert decode(encode(older), PredictionRecord).callback_events is None
