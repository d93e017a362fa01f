"""One valid instance of every message model, for the schema tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from dspex.schemas import (
    Cancel,
    CandidateAggregate,
    DatasetSummary,
    DeadLetter,
    EndpointHealth,
    ErrorInfo,
    EvalJob,
    ExampleSet,
    JobStatus,
    LMSpec,
    MetricSpec,
    OptimizeJob,
    OptimizerCheckpoint,
    OptimizeStatus,
    PredictionRecord,
    ProgramSpec,
    PurgeJob,
    ScoreRecord,
    SubmitJob,
    Task,
    TraceEntry,
    TrialRecord,
    UsageRecord,
    WorkerHeartbeat,
)
from dspex.schemas.provider_batch import LMBatchAnswer, ParkedLMRequest, ProviderBatchCheckpoint, StoredAnswer

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
LM = LMSpec(model="openai/sim", api_base="http://127.0.0.1:9/v1", api_key_env="SIM_KEY", extra={"top_p": 0.9})
METRIC = MetricSpec(name="exact_match:answer")
USAGE = UsageRecord(prompt_tokens=10, completion_tokens=5, cost_usd=0.001, lm_calls=1)
PROGRAM = {"dspex_program": 1, "type": "dspex.Predict", "signature": {"instructions": "Add.", "fields": []}}
EXAMPLE = {"question": "1+2?", "answer": "3"}
TRACE = [TraceEntry(predictor="predict", inputs={"question": "1+2?"}, outputs={"answer": "3"})]


def _samples() -> list[BaseModel]:
    task = Task.build(
        job_id="job-1",
        candidate_id="cand-1",
        example_index=7,
        example=EXAMPLE,
        input_keys=["question"],
        lm=LM,
    )
    trial = TrialRecord(step=0, candidate_id="cand-1", score=50.0, num_examples=20, note="zero-shot")
    parked = ParkedLMRequest(
        request_hash="h1", job_id="job-1", task_id=task.task_id, round=0, api_base=LM.api_base or "",
        model="openai/sim", api_key_env="SIM_KEY", body={"model": "sim", "messages": []},
        task=task.model_copy(update={"lm_mode": "batch"}),
    )  # fmt: skip
    return [
        EvalJob(
            job_id="job-1",
            name="nightly",
            candidate_ids=["cand-1", "cand-2"],
            metric=METRIC,
            lm=LM,
            num_examples=20,
            max_errors=3,
            max_cost_usd=1.5,
            dataset=DatasetSummary(name="arith", input_keys=["question"]),
            created_at=T0,
        ),
        OptimizeJob(
            job_id="opt-1",
            optimizer="BootstrapFewShot",
            knobs={"max_bootstrapped_demos": 4},
            candidate_id="cand-1",
            trainset=ExampleSet(examples=[EXAMPLE], input_keys=["question"]),
            valset=ExampleSet(uri="data/val.jsonl", input_keys=["question"]),
            metric=MetricSpec(name="judge", kind="judge", judge_signature="question, answer -> ok: bool"),
            lm=LM,
            max_lm_calls=1000,
            max_cost_usd=2.0,
            seed=7,
            evaluation_mode="batch",
            created_at=T0,
        ),
        Cancel(job_id="job-1", reason="user asked", requested_at=T0),
        PurgeJob(job_id="job-1", requested_at=T0),
        ProgramSpec.build(PROGRAM, job_id="job-1", created_at=T0),
        task,
        PredictionRecord(
            task_id=task.task_id,
            job_id="job-1",
            candidate_id="cand-1",
            example_index=7,
            example=EXAMPLE,
            outputs={"answer": "3"},
            trace=TRACE,
            usage=USAGE,
            adapter="chat",
            latency_s=0.12,
            worker_id="w-1",
            produced_at=T0,
        ),
        ScoreRecord(
            job_id="job-1",
            candidate_id="cand-1",
            example_index=7,
            task_id=task.task_id,
            outputs=None,
            score=0.0,
            error=ErrorInfo(type="LMAuthenticationError", message="bad key", status=401, systemic=True),
            usage=USAGE,
            source="scorer",
            scored_at=T0,
        ),
        JobStatus(
            job_id="job-1",
            state="running",
            total_tasks=40,
            done=3,
            candidates=[CandidateAggregate(candidate_id="cand-1", total=20, done=3, score_sum=2.0)],
            usage=USAGE,
            started_at=T0,
            updated_at=T0,
        ),
        OptimizeStatus(
            job_id="opt-1",
            state="completed",
            optimizer="BootstrapFewShot",
            steps=[trial],
            best_candidate_id="cand-1",
            best_score=50.0,
            updated_at=T0,
            finished_at=T0,
        ),
        WorkerHeartbeat(
            worker_id="w-1",
            kind="predict",
            host="h",
            pid=123,
            started_at=T0,
            sent_at=T0,
            in_flight=12,
            limit=32.0,
            breaker_state="half_open",
            endpoints=[EndpointHealth(api_base=LM.api_base or "", limit=32.0, breaker_state="half_open")],
            paused_partitions=2,
            metrics_url="http://127.0.0.1:9100/metrics",
        ),
        DeadLetter.build(
            topic="dspex.tasks",
            partition=3,
            offset=42,
            key=b"task-key",
            value=b"\xff\x00not json",
            headers=[("dspex-job-id", b"job-1"), ("dspex-example-index", b"7"), ("empty", None)],
            error=ValueError("bad bytes"),
            reason="undecodable",
            worker_id="w-1",
            dead_lettered_at=T0,
        ),
        OptimizerCheckpoint(
            job_id="opt-1",
            step=1,
            optimizer="BootstrapFewShot",
            state={"demos": [EXAMPLE]},
            rng_state=[3, [1, 2, 3], None],
            history=[trial],
            best_candidate_id="cand-1",
            best_score=50.0,
            written_at=T0,
        ),
        SubmitJob(
            job_id="job-1",
            program={"dspex_program": 1, "type": "dspex.Predict"},
            examples=[EXAMPLE],
            input_keys=["question"],
            metric="exact_match:answer",
            lm=LMSpec(model="openai/gpt-4o-mini", api_key_env="OPENAI_API_KEY"),
            mode="batch",
            created_at=T0,
        ),
        parked,
        LMBatchAnswer(request_hash="h1", batch_id="b1", answer=StoredAnswer(status=200, body={})),
        ProviderBatchCheckpoint(
            key="k1",
            api_base=LM.api_base or "",
            model="openai/sim",
            state="submitted",
            batch_id="b1",
            requests=[parked],
            created_at=T0,
        ),
    ]


@pytest.fixture
def samples() -> list[BaseModel]:
    """One instance of every top-level message model."""
    return _samples()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # `sample` parametrizes a test over every message model, named by model.
    if "sample" in metafunc.fixturenames:
        items = _samples()
        metafunc.parametrize("sample", items, ids=[type(item).__name__ for item in items])
