"""A scores record nobody can read is accounted to its task by the aggregator's dead letter."""

from __future__ import annotations

from dspex.errors import SchemaError
from dspex.processors.aggregator import _dead_letter_score
from dspex.schemas import DeadLetter, ScoreRecord
from dspex.schemas.results import SCORE_SOURCE_DLQ
from dspex.schemas.tasks import task_id_for
from dspex.streams.serde import to_record


def letter_for(headers: object) -> DeadLetter:
    return DeadLetter.build(
        topic="dspex.scores",
        partition=3,
        offset=17,
        key=b"job-1",
        value=b"\xff not a score",
        headers=headers,  # type: ignore[arg-type]
        error=SchemaError("not JSON"),
        reason="undecodable",
        worker_id="aggregate-1",
    )


def test_a_poison_score_naming_its_task_becomes_an_error_score_for_that_task() -> None:
    real = ScoreRecord(
        job_id="job-1", candidate_id="c1", example_index=4, task_id=task_id_for("job-1", "c1", 4), score=1.0
    )
    letter = letter_for(to_record(real, role="scores").headers)
    score = _dead_letter_score(letter, "aggregate-1")
    assert score is not None
    assert (score.job_id, score.candidate_id, score.example_index) == ("job-1", "c1", 4)
    assert score.task_id == real.task_id and score.score == 0.0 and score.source == SCORE_SOURCE_DLQ
    assert score.error is not None and "undecodable" in score.error.message and not score.error.systemic


def test_a_poison_score_without_ids_is_not_accounted() -> None:
    assert _dead_letter_score(letter_for(None), "aggregate-1") is None
