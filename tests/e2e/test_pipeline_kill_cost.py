"""Cost after a kill -9: what a killed predictor never reported is reported as such.

A predictor killed between its LM answers and its records leaves those calls charged nowhere: its
tasks run again elsewhere, with calls of their own. Its heartbeats said how many it had not
reported; the aggregator, hearing it no more while the other workers' heartbeats keep coming,
puts them in the job's ``usage_unreported`` (an upper bound of the loss, apart from ``usage``).

The program makes two LM calls per example (``e2e_cost_programs.DraftThenCheck``). The simulated
LM (a simulation, not a model) holds every request after the first ones, so each predictor has
tasks whose first call was answered and whose second waits: nothing moves while one of them is
killed, and its last heartbeat says exactly what it had not reported. Its held requests end
unanswered (499), so the job's usage plus ``usage_unreported`` covers every answered call.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import test_pipeline_cost_truth as cost_truth
from e2e_pipeline import Pipeline, wait_for, wait_quiet

from dspex.dev.stack import WorkerProcess
from dspex.errors import KafkaError
from dspex.schemas import JobStatus, WorkerHeartbeat
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = 300
HOLD_AFTER = 120
CONCURRENCY = 64
DEAD_AFTER_S = "6"  # the aggregator's --dead-worker-after: the test need not wait the default 30 s


def test_a_killed_predictors_unreported_calls_are_reported_as_such(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    tmp_path: Path,
) -> None:
    env = {**cost_truth._env(), "DSPEX_AGGREGATOR_DEAD_WORKER_AFTER": DEAD_AFTER_S}
    pipeline = pipeline_factory(env=env)
    pipeline.start_workers(2, *cost_truth.PREDICTOR_ARGS)
    pipeline.wait_ready()
    sim = sim_factory(latency=0.01)
    sim.control.hold(after=HOLD_AFTER)
    job_id = cost_truth.submit(pipeline, sim, tmp_path, EXAMPLES, seed=47)
    frozen_at = _frozen(sim)

    victim, beat = wait_for(
        lambda: _holding_unreported(pipeline, frozen_at), 60, "a predictor's heartbeat after the freeze"
    )
    os.kill(victim.pid, signal.SIGKILL)
    victim.process.wait(10)
    sim.control.release()
    left = sum(usage.lm_calls for usage in beat.unreported.values())
    print(f"\nkilled {victim.name} with {left} LM calls answered and not reported")

    status = cost_truth.finish(pipeline, job_id)
    assert (status.state, status.done, status.errors) == ("completed", EXAMPLES, 0)
    wait_for(
        lambda: cost_truth._drained(pipeline),
        120,
        "predict and score lag 0",
        poll=0.5,
        tolerate=(KafkaError,),
    )
    served = wait_quiet(sim)
    status = wait_for(
        _settled_status(pipeline, job_id),
        60,
        "the job's status to report the killed predictor's calls",
        poll=0.5,
        detail=pipeline.report,
    )
    unreported = status.usage_unreported
    assert unreported is not None
    print(
        f"LM answered {served['completions_ok']}; usage {status.usage.lm_calls}, "
        f"unreported {unreported.lm_calls}: {status.unreported_note}"
    )
    assert status.usage.lm_calls < served["completions_ok"]  # the loss happened
    assert status.usage.lm_calls + unreported.lm_calls >= served["completions_ok"]
    assert 0 < unreported.lm_calls == left <= 2 * CONCURRENCY  # what its last heartbeat said
    assert status.unreported_note == f"up to {left:,} LM calls not charged: a predictor died"


def _frozen(sim: SimulatedLMServer) -> float:
    """Until the held requests stop growing (every running task waits on one); the time then."""
    previous = [-1]

    def still() -> bool:
        held = int(sim.control.stats()["held"])
        settled = held > 0 and held == previous[0]
        previous[0] = held
        return settled

    wait_for(still, 120, "the simulated LM's held requests to stop growing", poll=1.0)
    return time.time()


def _holding_unreported(pipeline: Pipeline, after: float) -> tuple[WorkerProcess, WorkerHeartbeat] | None:
    """The live predictor with the most unreported calls in a heartbeat sent after ``after``."""
    beats = pipeline.heartbeats()
    fresh = [
        (sum(u.lm_calls for u in beats[w.name].unreported.values()), w, beats[w.name])
        for w in pipeline.stack.alive("predict")
        if w.name in beats and beats[w.name].sent_at.timestamp() > after + 0.5
    ]
    if len(fresh) < len(pipeline.stack.alive("predict")):
        return None  # wait for every one's heartbeat after the freeze
    calls, worker, beat = max(fresh, key=lambda found: found[0])
    return (worker, beat) if calls > 0 else None


def _settled_status(pipeline: Pipeline, job_id: str) -> Callable[[], JobStatus | None]:
    """A condition: the job's terminal status once it reports unreported calls and its usage stayed
    the same over two samples (late attempts are charged after the end)."""
    previous: list[int] = [-1]

    def settled() -> JobStatus | None:
        status = cost_truth._terminal(pipeline, job_id)
        if status is None or status.usage_unreported is None:
            return None
        same = status.usage.lm_calls == previous[0]
        previous[0] = status.usage.lm_calls
        return status if same else None

    return settled
