"""What `dspex purge` deletes: the job, an optimization's sub-jobs and checkpoint, and the programs
no other job on the status topic names."""

from __future__ import annotations

from typing import Any

from dspex.cli.purge import plan_purge
from dspex.schemas import CandidateAggregate, JobStatus, OptimizeStatus, TrialRecord


def evaluation(job_id: str, *candidates: str, parent: str | None = None) -> JobStatus:
    aggregates = [CandidateAggregate(candidate_id=c, total=4, done=4) for c in candidates]
    return JobStatus(
        job_id=job_id, state="completed", total_tasks=4 * len(candidates), done=4 * len(candidates),
        candidates=aggregates, parent_job_id=parent,
    )  # fmt: skip


def statuses() -> dict[str, Any]:
    optimization = OptimizeStatus(
        job_id="opt",
        state="completed",
        optimizer="bootstrap-rs",
        steps=[
            TrialRecord(step=0, candidate_id="base", score=50.0, num_examples=4, eval_job_id="ev-a"),
            # a sub-job whose status is gone already: its id comes from the trajectory
            TrialRecord(step=1, candidate_id="c1", score=75.0, num_examples=4, eval_job_id="ev-lost"),
        ],
        best_candidate_id="c1",
    )
    every = [
        optimization,
        evaluation("ev-a", "base", parent="opt"),
        evaluation("ev-b", "c2", parent="opt"),  # named by its parent link only
        evaluation("other", "base"),  # another job evaluating the same baseline program
    ]
    return {status.job_id: status for status in every}


def test_an_optimization_takes_its_sub_jobs_checkpoint_and_own_programs() -> None:
    plan = plan_purge("opt", statuses())
    assert plan.job_ids == ("opt", "ev-a", "ev-b", "ev-lost")
    assert plan.optimizations == ("opt",)
    assert plan.candidates == ("c1", "c2")
    assert plan.shared == ("base",)  # "other" still needs it


def test_an_evaluation_alone() -> None:
    plan = plan_purge("other", statuses())
    assert (plan.job_ids, plan.optimizations, plan.candidates) == (("other",), (), ())
    assert plan.shared == ("base",)


def test_a_job_with_no_status_still_gets_its_status_key_tombstoned() -> None:
    plan = plan_purge("pending", statuses())
    assert plan.job_ids == ("pending",) and plan.candidates == () and plan.shared == ()
