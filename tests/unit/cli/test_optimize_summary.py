"""`dspex optimize`: progress out of a known total (or an honest count) and the closing summary."""

from __future__ import annotations

import pytest

from dspex.cli._optimize_view import OptimizeProgress, baseline_of, planned_candidates, summary
from dspex.schemas import OptimizeStatus, TrialRecord, UsageRecord

STUDENT = "student-id"


def _status(**update: object) -> OptimizeStatus:
    steps = [
        TrialRecord(step=0, candidate_id="other-first", score=40.0, num_examples=10),
        TrialRecord(step=1, candidate_id=STUDENT, score=50.0, num_examples=10),
        TrialRecord(step=1, candidate_id="best-candidate-id", score=80.0, num_examples=10),
        TrialRecord(step=2, candidate_id="best-candidate-id", score=70.0, num_examples=5, kind="minibatch"),
    ]
    fields: dict[str, object] = {
        "job_id": "0123456789abcdef",
        "name": "qa",
        "state": "completed",
        "optimizer": "bootstrap-rs",
        "steps": steps,
        "best_candidate_id": "best-candidate-id",
        "best_score": 80.0,
        "usage": UsageRecord(
            prompt_tokens=1000, completion_tokens=234, cost_usd=0.0123, lm_calls=321, cache_hits=5
        ),
        "seq": 3,
    }
    return OptimizeStatus(**{**fields, **update})  # type: ignore[arg-type]


def test_random_search_states_its_number_of_candidates() -> None:
    assert planned_candidates("bootstrap-rs", {"num_candidate_programs": 8}, {}) == 11  # + seeds -3..-1
    assert planned_candidates("BootstrapFewShotWithRandomSearch", {}, {}) == 16 + 3  # its default


@pytest.mark.parametrize(
    ("name", "options"),
    [("bootstrap-rs", {"restrict": [0, 1]}), ("mipro", {}), ("copro", {}), ("no-such-optimizer", {})],
)
def test_other_optimizers_leave_the_total_open(name: str, options: dict[str, object]) -> None:
    assert planned_candidates(name, {}, options) is None


def test_the_baseline_is_the_program_as_given_when_a_trial_scored_it() -> None:
    base = baseline_of(_status(), STUDENT)
    assert (base.score, base.what) == (50.0, "the program as given")


def test_else_the_baseline_is_the_first_full_evaluation_and_says_so() -> None:
    base = baseline_of(_status(), "never-evaluated")
    assert base.score == 40.0 and "first candidate evaluated" in base.what


def test_the_summary_has_scores_candidates_usage_time_and_where_the_program_went() -> None:
    text = summary(_status(), student_id=STUDENT, wall_s=83.4, saved="saved to best.json")
    assert text.splitlines() == [
        "optimization 0123456789abcdef (qa) completed",
        "  score: 50.00 -> 80.00 (candidate best-candida); baseline: the program as given",
        "  candidates tried: 3 (4 evaluations)",
        "  LM calls: 321 (5 from cache); tokens: 1,234; cost: $0.0123",
        "  wall time: 1m23s",
        "  best program: saved to best.json",
    ]


def test_a_failed_optimization_summary_gives_its_reason() -> None:
    failed = _status(
        state="failed", reason="401 from the LM", steps=[], best_score=None, best_candidate_id=None
    )
    lines = summary(failed, student_id=STUDENT, wall_s=2, saved=None).splitlines()
    assert lines[0] == "optimization 0123456789abcdef (qa) failed: 401 from the LM"
    assert lines[1] == "  score: - -> -; baseline: no candidate was scored"
    assert not any("best program" in line for line in lines)


def test_progress_off_a_terminal_is_one_line_per_new_status(capsys: pytest.CaptureFixture[str]) -> None:
    with OptimizeProgress("0123456789abcdef", 11, label="optimize qa") as shown:
        shown.update(_status(state="running", seq=1, steps=[]))
        shown.update(_status(state="running", seq=1, steps=[]))  # the same status again: no line
        shown.update(_status(seq=3))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("optimize qa: running, 0/11 candidates, step 1, best 80.0%")
    assert "3/11 candidates, step 3" in lines[1] and "321 LM calls" in lines[1] and "$0.0123" in lines[1]


def test_progress_without_a_total_counts_honestly(capsys: pytest.CaptureFixture[str]) -> None:
    with OptimizeProgress("0123456789abcdef", None) as shown:
        shown.update(_status(seq=2))
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("optimize 0123456789ab: completed, 3 candidates, step 2")
