"""What an optimize worker lists as spent on a step not checkpointed yet, and what a resuming owner
takes from the workers topic: a step's own LM calls and its sub-jobs' reported usage are listed
until the step's block exits; only a silent, not-final owner's listing counts as a death."""

from __future__ import annotations

import datetime as dt

from dspex.lm import Usage
from dspex.lm.usage import record_usage
from dspex.primitives import Prediction
from dspex.processors.aggregate_deaths import death_key
from dspex.processors.common import WorkerOptions
from dspex.processors.optimize_unreported import (
    SILENT_AFTER_S,
    StepSpend,
    dead_owners_spend,
    results_usage,
    total_unreported,
)
from dspex.processors.optimizer import OptimizeCoordinator
from dspex.processors.unreported import UnreportedLedger
from dspex.schemas import OptimizerCheckpoint, OptimizeStatus, UsageRecord, WorkerHeartbeat, decode, encode
from dspex.streams.config import KafkaSettings

SETTINGS = KafkaSettings(bootstrap_servers="127.0.0.1:1")  # never reached: nothing here connects
CALL = Usage(prompt_tokens=10, completion_tokens=2, cost_usd=0.5, lm_calls=1)
NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
STARTED = NOW - dt.timedelta(hours=1)


def test_a_steps_own_calls_and_sub_job_usage_are_listed_until_it_ends() -> None:
    ledger = UnreportedLedger()
    with StepSpend(ledger, "opt") as spend:
        record_usage(CALL)  # a proposal made by the worker itself
        spend.add(Usage(prompt_tokens=100, completion_tokens=20, cost_usd=2.0, lm_calls=10))  # a sub-job
        spend.add(Usage())  # a sub-job that spent nothing lists nothing
        assert ledger.snapshot() == {
            "opt": UsageRecord(prompt_tokens=110, completion_tokens=22, cost_usd=2.5, lm_calls=11)
        }
    assert ledger.snapshot() == {}


def test_results_usage_sums_what_predictions_carry() -> None:
    pred = Prediction(answer="x")
    object.__setattr__(pred, "_usage", CALL)  # as a prediction from a predictor's record carries it
    assert results_usage([pred, pred, ValueError("failed run")]).lm_calls == 2


def beat(worker_id: str, *, age_s: float, calls: int, final: bool = False) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=worker_id,
        kind="optimize",
        host="h",
        pid=1,
        started_at=STARTED,
        sent_at=NOW - dt.timedelta(seconds=age_s),
        unreported={"opt": UsageRecord(lm_calls=calls)} if calls else {},
        final=final,
    )


def test_only_a_silent_owner_that_did_not_stop_in_order_counts_as_dead() -> None:
    beats = {
        "dead": beat("dead", age_s=SILENT_AFTER_S + 5, calls=7),
        "alive": beat("alive", age_s=0.5, calls=3),  # revoked a moment ago: it stops listing it
        "stopped": beat("stopped", age_s=60, calls=4, final=True),
        "idle": beat("idle", age_s=60, calls=0),
        "me": beat("me", age_s=60, calls=9),
    }
    found = dead_owners_spend(beats, "opt", me=death_key(beats["me"]), now=NOW)
    assert found == {death_key(beats["dead"]): UsageRecord(lm_calls=7)}
    assert dead_owners_spend(beats, "other", me="x", now=NOW) == {}
    total = total_unreported({"a": UsageRecord(lm_calls=2, cost_usd=0.5), "b": UsageRecord(lm_calls=3)})
    assert total == UsageRecord(lm_calls=5, cost_usd=0.5)
    assert total_unreported({}) is None


def test_the_optimize_workers_heartbeat_lists_its_steps_spending() -> None:
    worker = OptimizeCoordinator(SETTINGS, WorkerOptions())
    with worker._step_spend("opt"):
        record_usage(CALL)
        worker._spent("opt", Usage(lm_calls=4))
        assert worker.heartbeat().unreported == {
            "opt": UsageRecord(prompt_tokens=10, completion_tokens=2, cost_usd=0.5, lm_calls=5)
        }
    worker._spent("opt", Usage(lm_calls=4))  # no step in progress: nothing to list
    assert worker.heartbeat().unreported == {}


def test_new_fields_are_optional_for_older_readers_and_writers() -> None:
    status = OptimizeStatus(job_id="opt", state="running", optimizer="copro")
    assert status.usage_unreported is None and status.unreported_note is None
    noted = status.model_copy(update={"usage_unreported": UsageRecord(lm_calls=3)})
    assert noted.unreported_note == "up to 3 LM calls not charged: an optimize worker died mid-step"
    assert decode(encode(noted), OptimizeStatus).usage_unreported == UsageRecord(lm_calls=3)
    checkpoint = OptimizerCheckpoint(job_id="opt", step=1, optimizer="copro")
    assert decode(encode(checkpoint), OptimizerCheckpoint).unreported == {}
