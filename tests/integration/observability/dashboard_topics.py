"""Records written straight to a real broker's topics for the dashboard tests: an optimization with
three sub-evaluations (one half done and stalled), an evaluation of its own and a predictor whose
last heartbeat is five minutes old; and two evaluations on one dataset (jobs, scores, statuses)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dspex.schemas import CandidateAggregate, JobStatus, OptimizeStatus, ScoreRecord, WorkerHeartbeat
from dspex.schemas.base import Message
from dspex.schemas.common import ErrorInfo, MetricSpec, TraceEntry, UsageRecord
from dspex.schemas.jobs import DatasetSummary, EvalJob
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import to_record
from dspex.streams.topics import TopicRegistry, TopicRole

OPT = "opt-fold"
HALF = "ev2-half"
SOLO = "solo-nightly"
DEAD_PREDICTOR = "pred-dead"
STALL_AGE_S = 45


async def write_stalled_fleet(producer: AsyncProducer, prefix: str) -> datetime:
    """Write the scene; returns when the half-done evaluation last finished a task."""
    registry = TopicRegistry(prefix)
    now = datetime.now(UTC)
    last_task = now - timedelta(seconds=STALL_AGE_S)
    done = [
        JobStatus(
            job_id=f"ev{i}-done",
            parent_job_id=OPT,
            state="completed",
            total_tasks=20,
            done=20,
            candidates=[CandidateAggregate(candidate_id=f"c{i}", total=20, done=20, score_sum=10.0)],
            started_at=now - timedelta(seconds=50 - i),
        )
        for i in range(2)
    ]
    half = JobStatus(
        job_id=HALF,
        parent_job_id=OPT,
        state="running",
        total_tasks=20,
        done=5,
        candidates=[CandidateAggregate(candidate_id="c2", total=20, done=5, score_sum=5.0)],
        started_at=now - timedelta(seconds=48),
        updated_at=last_task,
    )
    opt = OptimizeStatus(
        job_id=OPT,
        name="fold run",
        state="running",
        optimizer="bootstrap_rs",
        started_at=now - timedelta(seconds=60),
    )
    solo = JobStatus(
        job_id=SOLO,
        name="Nightly QA",
        state="completed",
        total_tasks=4,
        done=4,
        started_at=now - timedelta(seconds=120),
    )
    dead = WorkerHeartbeat(
        worker_id=DEAD_PREDICTOR,
        kind="predict",
        host="gone-host",
        pid=7,
        started_at=now - timedelta(hours=1),
        sent_at=now - timedelta(seconds=301),
        in_flight=2,
    )
    # the half-done job's writer keeps sending the same count: no progress since `last_task`
    ticking = half.model_copy(update={"updated_at": now, "seq": 1})
    messages: list[tuple[TopicRole, str, Message]] = [
        ("status", "status", status) for status in (opt, *done, half, ticking, solo)
    ]
    messages.append(("workers", "workers", dead))
    for topic, role, message in messages:
        await producer.produce_record(registry.name(topic), to_record(message, role=role))
    return last_task


BASE = "eval-base"
TUNED = "eval-tuned"
OTHER = "eval-other-data"


def _eval_job(job_id: str, fingerprint: str, name: str) -> EvalJob:
    return EvalJob(
        job_id=job_id,
        name=name,
        candidate_ids=["c"],
        metric=MetricSpec(name="exact_match:answer"),
        num_examples=4,
        dataset=DatasetSummary(fingerprint=fingerprint, input_keys=["question"]),
    )


def _score(job_id: str, index: int, value: float, *, failed: bool = False) -> ScoreRecord:
    answer = "4" if value else "5"
    return ScoreRecord(
        job_id=job_id,
        candidate_id="c",
        example_index=index,
        task_id=f"{job_id}-{index}",
        outputs=None if failed else {"answer": answer},
        score=value,
        trace=[
            TraceEntry(predictor="predict", inputs={"question": f"2+{index}?"}, outputs={"answer": answer})
        ],
        usage=UsageRecord(prompt_tokens=30 + index, completion_tokens=5, cost_usd=0.0001, lm_calls=1),
        latency_s=0.5 + index,
        error=ErrorInfo(type="TimeoutError", message="the LM did not answer") if failed else None,
        example={"question": f"2+{index}?", "answer": "4"},
        worker_id=f"predict-{index % 2}",
    )


async def write_two_evaluations(producer: AsyncProducer, prefix: str) -> None:
    """Two evaluations of one candidate each on the same 4 examples (scores 1,0,0,0 and 1,1,1,0,
    the last one failed), and a third on another dataset: jobs, scores and statuses."""
    registry = TopicRegistry(prefix)
    now = datetime.now(UTC)
    scores = {BASE: [1.0, 0.0, 0.0, 0.0], TUNED: [1.0, 1.0, 1.0, 0.0], OTHER: [1.0, 1.0, 1.0, 1.0]}
    names = {BASE: "baseline", TUNED: "tuned", OTHER: "other data"}
    messages: list[tuple[TopicRole, str, Message]] = []
    for job_id, values in scores.items():
        messages.append(
            ("jobs", "jobs", _eval_job(job_id, "ds2" if job_id == OTHER else "ds1", names[job_id]))
        )
        failed = job_id == TUNED
        records = [_score(job_id, i, v, failed=failed and i == 3) for i, v in enumerate(values)]
        messages += [("scores", "scores", record) for record in records]
        # a redelivered task's second score is not a second result
        messages.append(("scores", "scores", records[0].model_copy(update={"score": 0.0})))
        candidate = CandidateAggregate(candidate_id="c", total=4, done=4, score_sum=sum(values))
        status = JobStatus(
            job_id=job_id,
            name=names[job_id],
            state="completed",
            total_tasks=4,
            done=4,
            candidates=[candidate],
            started_at=now - timedelta(seconds=30),
            finished_at=now,
        )
        messages.append(("status", "status", status))
    for topic, role, message in messages:
        await producer.produce_record(registry.name(topic), to_record(message, role=role))
