"""Usage of repeated attempts: each distinct (task, attempt id) is charged once, scores count once."""

from __future__ import annotations

import json
from typing import Any

from dspex.processors.aggregate_state import (
    AggregateBatch,
    ChunkState,
    JobMeta,
    StatusClock,
    build_status,
    chunk_key,
    job_totals,
    open_state,
)
from dspex.schemas import EvalJob, MetricSpec, ScoreRecord, UsageRecord, decode, encode
from dspex.schemas.results import PredictionRecord


def _job(n: int = 3) -> EvalJob:
    return EvalJob(
        job_id="j1", candidate_ids=["c1"], metric=MetricSpec(name="exact_match:answer"), num_examples=n
    )


def _score(index: int, attempt_id: str | None, calls: int = 1, value: float = 1.0) -> ScoreRecord:
    usage = UsageRecord(
        prompt_tokens=10 * calls, completion_tokens=2 * calls, cost_usd=0.001 * calls, lm_calls=calls
    )
    return ScoreRecord(
        job_id="j1",
        candidate_id="c1",
        example_index=index,
        task_id=f"t{index}",
        score=value,
        usage=usage,
        attempt_id=attempt_id,
    )


class _Tables:
    def __init__(self) -> None:
        self.jobs: dict[str, Any] = {}
        self.chunks: dict[str, Any] = {}
        self.clock = StatusClock()

    def run(self, *records: ScoreRecord, job: EvalJob | None = None) -> list[str]:
        batch = AggregateBatch(self.jobs, self.chunks, self.clock)
        if job is not None:
            batch.add_job(job, 0)
        outcomes = [batch.add_score(record, 0) for record in records]
        result = batch.finish()
        self.jobs.update({key: value for key, (_, value) in result.jobs.items()})
        # Through JSON, as the changelog stores it.
        self.chunks.update({key: json.loads(json.dumps(value)) for key, (_, value) in result.chunks.items()})
        return outcomes

    def usage(self) -> UsageRecord:
        meta = JobMeta.from_value("j1", self.jobs["j1"])
        totals = job_totals(meta, self.chunks.get)
        return build_status(meta, totals, state=open_state(totals), seq=1, now=self.clock.now()).usage


def test_the_same_attempt_twice_is_charged_once() -> None:
    tables = _Tables()
    assert tables.run(_score(0, "a1"), _score(0, "a1"), job=_job()) == ["counted", "duplicate"]
    assert tables.run(_score(0, "a1")) == ["duplicate"]  # read again in a later batch (after a restart)
    usage = tables.usage()
    assert (usage.lm_calls, usage.prompt_tokens, usage.completion_tokens) == (1, 10, 2)


def test_two_attempts_of_one_task_are_both_charged_and_scored_once() -> None:
    tables = _Tables()
    tables.run(_score(0, "a1", calls=2, value=1.0), job=_job())
    assert tables.run(_score(0, "a2", calls=3, value=0.0)) == ["duplicate"]
    assert tables.run(_score(0, "a2", calls=3), _score(0, "a1", calls=2)) == ["duplicate", "duplicate"]
    usage = tables.usage()
    assert usage.lm_calls == 5 and usage.prompt_tokens == 50
    assert abs(usage.cost_usd - 0.005) < 1e-12
    meta = JobMeta.from_value("j1", tables.jobs["j1"])
    totals = job_totals(meta, tables.chunks.get)["c1"]
    assert totals.done == 1 and float(totals.score_sum) == 1.0  # the first score wins


def test_records_without_attempt_ids_charge_the_first_only() -> None:
    tables = _Tables()
    tables.run(_score(0, None, calls=2), _score(0, None, calls=2), job=_job())
    assert tables.usage().lm_calls == 2
    # A later writer's attempt of a task first counted without an id is a new attempt.
    tables.run(_score(0, "a9", calls=1))
    assert tables.usage().lm_calls == 3


def test_repeats_count_toward_the_final_status() -> None:
    tables = _Tables()
    batch = AggregateBatch(tables.jobs, tables.chunks, tables.clock)
    batch.add_job(_job(2), 0)
    for record in (_score(0, "a1"), _score(0, "b1"), _score(1, "a2"), _score(0, "a1")):
        batch.add_score(record, 0)
    result = batch.finish()
    ((_, status),) = result.statuses
    assert json.loads(status)["usage"]["lm_calls"] == 3
    assert json.loads(status)["state"] == "completed"


def test_chunk_values_round_trip_attempts_and_read_old_values() -> None:
    state = ChunkState()
    state.add(5, _score(5, "a1"))
    state.add(5, _score(5, "a2"))
    again = ChunkState.from_value(json.loads(json.dumps(state.to_value())))
    assert again.add(5, _score(5, "a1")) == "duplicate"
    assert again.add(5, _score(5, "a2")) == "duplicate"
    assert again.add(5, _score(5, "a3")) == "repeat"
    old = {key: value for key, value in state.to_value().items() if key not in ("attempts", "repeats")}
    legacy = ChunkState.from_value(old)  # written by an aggregator from before attempt ids
    assert legacy.add(5, _score(5, None)) == "duplicate"
    assert chunk_key("j1", "c1", 0) == "j1:c1:0"


def test_attempt_ids_travel_on_the_wire_and_are_optional() -> None:
    record = _score(0, "a1")
    assert decode(encode(record), ScoreRecord).attempt_id == "a1"
    older = json.loads(encode(record))
    del older["attempt_id"]
    older["schema_version"] = "1.1"
    assert decode(json.dumps(older).encode(), ScoreRecord).attempt_id is None
    prediction = PredictionRecord(
        task_id="t0", job_id="j1", candidate_id="c1", example_index=0, example={}, outputs={}, worker_id="w"
    )
    assert prediction.attempt_id is None
