"""Content ids of candidates and tasks: stable, and leaving out exactly what they document."""

from __future__ import annotations

from dspex.ids import content_id
from dspex.schemas import ProgramSpec, Task, program_candidate_id, task_id_for

PROGRAM = {"dspex_program": 1, "type": "dspex.Predict", "demos": [{"question": "q", "answer": "a"}]}


def test_task_id_is_stable_and_is_the_content_id_of_its_three_parts() -> None:
    first = task_id_for("job", "cand", 3)
    assert first == task_id_for("job", "cand", 3)
    assert first == content_id({"example_index": 3, "candidate_id": "cand", "job_id": "job"})
    assert len(first) == 32 and int(first, 16) >= 0


def test_task_id_changes_with_each_part() -> None:
    ids = {
        task_id_for("job", "cand", 3),
        task_id_for("job2", "cand", 3),
        task_id_for("job", "cand2", 3),
        task_id_for("job", "cand", 4),
    }
    assert len(ids) == 4


def test_task_id_leaves_out_attempt_example_lm_and_deadline() -> None:
    base = Task.build(job_id="j", candidate_id="c", example_index=1, example={"q": 1}, input_keys=["q"])
    retried = Task.build(
        job_id="j",
        candidate_id="c",
        example_index=1,
        example={"q": 2, "label": 3},
        input_keys=["q"],
        attempt=2,
        deadline="2030-01-01T00:00:00Z",
    )
    assert base.task_id == retried.task_id == task_id_for("j", "c", 1)


def test_candidate_id_ignores_key_order_and_changes_with_content() -> None:
    reordered = dict(reversed(list(PROGRAM.items())))
    assert program_candidate_id(PROGRAM) == program_candidate_id(reordered)
    assert program_candidate_id(PROGRAM) == content_id(PROGRAM)
    changed = {**PROGRAM, "demos": []}
    assert program_candidate_id(changed) != program_candidate_id(PROGRAM)


def test_candidate_id_leaves_out_who_published_the_program() -> None:
    one = ProgramSpec.build(PROGRAM, job_id="a", label="x")
    other = ProgramSpec.build(PROGRAM, job_id="b", label=None)
    assert one.candidate_id == other.candidate_id == program_candidate_id(PROGRAM)
    assert one.id_matches
    assert not ProgramSpec(candidate_id="forged", program=PROGRAM).id_matches


def test_task_inputs_are_the_input_fields_only() -> None:
    task = Task.build(
        job_id="j", candidate_id="c", example_index=0, example={"q": 1, "a": 2}, input_keys=["q"]
    )
    assert task.inputs == {"q": 1}


def test_task_ids_built_from_a_hashed_prefix_equal_task_id_for() -> None:
    from dspex.schemas.tasks import TaskIds

    for job_id, candidate_id in [("job", "cand"), ('jo"b\\', "ünïcode ✓"), ("", "x" * 300)]:
        ids = TaskIds(job_id, candidate_id)
        for index in (0, 7, 10_000_000):
            assert ids.of(index) == task_id_for(job_id, candidate_id, index)
