"""The task headers the publisher builds once per candidate equal what headers_for gives each task."""

from __future__ import annotations

import pytest

from dspex.client._publish import task_headers
from dspex.schemas import Task
from dspex.schemas.headers import TRACEPARENT, headers_for


def _task(**fields: object) -> Task:
    return Task.build(
        job_id="job-1", candidate_id="cand-1", example_index=7, example={"q": "x"}, input_keys=["q"], **fields
    )


@pytest.mark.parametrize("fields", [{}, {"priority": "bulk", "max_in_flight": 3}, {"max_in_flight": 1}])
@pytest.mark.parametrize("traceparent", [None, b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"])
def test_task_headers_equal_headers_for(fields: dict[str, object], traceparent: bytes | None) -> None:
    task = _task(**fields)
    token = TRACEPARENT.set(traceparent)
    try:
        expected = headers_for(task)
    finally:
        TRACEPARENT.reset(token)
    assert task_headers(task, traceparent) == expected
    assert ("dspex-example-index", b"7") in expected


def test_submission_tasks_equal_task_build() -> None:
    """The copies Submission.tasks makes of a candidate's first task are the tasks Task.build makes."""
    import dataclasses

    import dspex
    from dspex.client._submit import Limits, Policy, build_submission
    from dspex.schemas.serde import encode

    examples = [dspex.Example(question=f"q{i} é", answer=str(i)).with_inputs("question") for i in range(12)]
    programs = [dspex.Predict("question -> answer"), dspex.ChainOfThought("question -> answer")]
    lm = dspex.LM("openai/sim", api_base="http://127.0.0.1:9/v1", api_key_env="SIM_KEY")
    limits = Limits(priority="bulk", num_threads=4)
    with dspex.context(lm=lm):
        submission = build_submission(
            programs, examples, "exact_match:answer", policy=Policy(), limits=limits
        )
    submission = dataclasses.replace(submission, lm_mode="batch")
    job = submission.job
    assert (job.priority, job.max_in_flight, job.lm is not None) == ("bulk", 4, True)
    expected = [
        Task.build(
            job_id=job.job_id, candidate_id=cid, example_index=index, example=row,
            input_keys=submission.input_keys[index], lm=job.lm, priority=job.priority,
            max_in_flight=job.max_in_flight, lm_mode="batch",
        )
        for cid in job.candidate_ids
        for index, row in enumerate(submission.rows)
    ]  # fmt: skip
    tasks = list(submission.tasks())
    assert len(tasks) == 24 and len({task.task_id for task in tasks}) == 24
    assert tasks == expected
    assert [encode(task) for task in tasks] == [encode(task) for task in expected]
