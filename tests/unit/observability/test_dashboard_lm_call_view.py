"""The drill-down's LM calls: kept apart from a cached job's rows as JSON, read back per example."""

from __future__ import annotations

from dspex.observability.dashboard.examples import example_detail, example_rows
from dspex.observability.dashboard.records import JobRecords
from dspex.schemas import LMCallRecord, LMMessageRecord, ScoreRecord

CALL = LMCallRecord(
    model="openai/simulated",
    messages=[
        LMMessageRecord(role="system", content="Answer with a number."),
        LMMessageRecord(role="user", content="What is 2 + 3?"),
    ],
    completion="[[ ## answer ## ]]\n5\n\n[[ ## completed ## ]]",
    prompt_tokens=40,
    completion_tokens=9,
    latency_s=0.2,
)


def score(index: int, calls: list[LMCallRecord] | None) -> ScoreRecord:
    return ScoreRecord(
        job_id="j", candidate_id="c", example_index=index, task_id=f"t{index}", score=1.0,
        example={"question": "What is 2 + 3?", "answer": "5"}, outputs={"answer": "5"},
        lm_call_log=calls, worker_id="score-1", predicted_by="predict-2",
    )  # fmt: skip


def test_the_calls_are_kept_apart_and_read_back_for_the_example_opened() -> None:
    records = JobRecords()
    records.add(score(0, [CALL]))
    records.add(score(1, None))
    assert all(record.lm_call_log is None for record in records.scores), "rows hold no prompts"
    assert records.call_log(records.scores[0]) == [CALL]
    assert records.call_log(records.scores[1]) == []
    detail = example_detail(records.scores[0], ["question"], records.call_log(records.scores[0]))
    [shown] = detail["lm_call_log"]
    assert [m["content"] for m in shown["messages"]] == ["Answer with a number.", "What is 2 + 3?"]
    assert shown["completion"].startswith("[[ ## answer ## ]]\n5") and detail["lm_calls_unlogged"] == 0
    assert (detail["worker_id"], detail["scored_by"]) == ("predict-2", "score-1")
    assert example_rows(records.scores)[0]["worker_id"] == "predict-2"


def test_a_record_given_directly_shows_its_own_calls() -> None:
    detail = example_detail(score(0, [CALL]), [])
    assert detail["lm_call_log"][0]["model"] == "openai/simulated"
    assert detail["inputs"] == {"question": "What is 2 + 3?", "answer": "5"}
