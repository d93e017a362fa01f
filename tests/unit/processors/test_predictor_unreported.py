"""What a predictor's heartbeat says beyond the common fields: LM calls answered and not yet
reported, per job, and how many tasks it lets run now.

The ledger lists a run's answered calls until its record is acknowledged (the run's block exits)
and a cancelled run's usage report until it is sent; the heartbeat carries the sums per job. Its
``dispatch_window`` is what runs at most, below the LM limiter's ``limit`` when the event loop
holds the predictor lower.
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from dspex.lm import Usage
from dspex.lm.usage import record_usage
from dspex.processors.common import WorkerOptions
from dspex.processors.endpoints import EndpointOptions
from dspex.processors.predictor import Predictor
from dspex.processors.unreported import UnreportedLedger
from dspex.schemas import UsageRecord
from dspex.streams.config import KafkaSettings

SETTINGS = KafkaSettings(bootstrap_servers="127.0.0.1:1")  # never reached: nothing here connects
CALL = Usage(prompt_tokens=10, completion_tokens=2, cost_usd=0.5, lm_calls=1)


def test_answered_calls_are_listed_per_job_until_the_run_ends() -> None:
    ledger = UnreportedLedger()
    with ledger.run("a"), ledger.run("b"):
        record_usage(CALL)  # a call of the inner run (b) only
    with ledger.run("a") as tracker:
        record_usage(CALL)
        record_usage(CALL)
        assert tracker.usage.lm_calls == 2
        with ledger.run("b"):
            record_usage(CALL)  # nested: charged to both, as the trackers' stack does
            assert ledger.snapshot() == {
                "a": UsageRecord(prompt_tokens=30, completion_tokens=6, cost_usd=1.5, lm_calls=3),
                "b": UsageRecord(prompt_tokens=10, completion_tokens=2, cost_usd=0.5, lm_calls=1),
            }
    assert ledger.snapshot() == {}


def test_a_run_without_calls_lists_nothing_and_a_held_report_until_released() -> None:
    ledger = UnreportedLedger()
    with ledger.run("a"):
        assert ledger.snapshot() == {}
    held = ledger.hold("a", CALL)
    assert ledger.snapshot()["a"].lm_calls == 1
    ledger.release(held)
    assert ledger.snapshot() == {}


def test_the_heartbeat_carries_the_unreported_calls_and_the_window_that_runs() -> None:
    options = WorkerOptions(concurrency=1024, metrics=True, endpoints=EndpointOptions(initial_limit=1024))
    predictor = Predictor(SETTINGS, options)
    predictor.endpoints.limiter("http://a/v1")
    predictor._window_at = -1.0  # past the refresh interval
    # The event loop lags: its window is cut well below what the limiter allows.
    for step in range(12):
        predictor.loop_window.observe(lag_s=1.0, running=predictor.loop_window.value, now=float(step))
    with predictor.unreported.run("job-1"):
        record_usage(CALL)
        beat = predictor.heartbeat()
    assert beat.unreported == {
        "job-1": UsageRecord(prompt_tokens=10, completion_tokens=2, cost_usd=0.5, lm_calls=1)
    }
    assert beat.limit == 1024.0
    assert beat.dispatch_window == predictor.loop_window.value < 200
    assert predictor.heartbeat().unreported == {}
    assert REGISTRY.get_sample_value("dspex_tasks_window", {"kind": "predict"}) == beat.dispatch_window
