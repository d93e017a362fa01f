"""The aggregator is killed mid-job and a new one takes over from the changelog; counts stay exact.

The simulated LM holds its answers after half the job, so the job cannot finish early; once a
running status with a quarter of the job done is seen, the aggregator gets SIGKILL (scores are
still flowing), a new aggregator process with an EMPTY local state directory starts (its tables can
only come from the changelog topics), the LM lets go, and the job completes with done == total and
the score local Evaluate gives.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_pipeline import Pipeline, cot_program, devset, local_evaluate, per_example, sim_lm, wait_for

from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 1200


def test_a_killed_aggregator_recovers_from_the_changelog_and_counts_exactly(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    pipeline = pipeline_factory()
    pipeline.start_workers(2)
    pipeline.wait_ready()
    sim = sim_factory(latency=0.005)
    lm = sim_lm(sim, cache_dir)
    examples = devset(EXAMPLES, seed=33)

    sim.control.hold(after=EXAMPLES // 2)
    job_id = pipeline.submit([cot_program()], examples, lm, name="aggregator-restart")
    seen = pipeline.wait_status(
        job_id, lambda s: s.state == "running" and s.done >= EXAMPLES // 4, "a running status, 1/4 done"
    )
    # Counted scores whose offsets are committed are never read again: after the restart they
    # exist only in the changelog-backed tables.
    wait_for(lambda: pipeline.committed("aggregate", "scores") > 0, 60, "the aggregator to commit scores")
    first = pipeline.stack.workers[0]
    assert first.name == "aggregate-1"
    first.kill()
    assert first.process.returncode == -signal.SIGKILL
    second = pipeline.start("aggregate")
    assert second.name == "aggregate-2"  # with its own, new --data-dir: no local state to reuse
    sim.control.release()

    status = pipeline.finish(job_id)
    assert status.seq > seen.seq
    assert (status.state, status.total_tasks, status.done, status.errors) == (
        "completed",
        EXAMPLES,
        EXAMPLES,
        0,
    )
    [aggregate] = status.candidates
    assert (aggregate.total, aggregate.done, aggregate.errors) == (EXAMPLES, EXAMPLES, 0)
    stats = sim.control.stats()
    assert stats["completions_ok"] == stats["requests_total"] == EXAMPLES  # the predictors were not disturbed

    [result] = pipeline.client.collect(job_id)
    local = local_evaluate(cot_program(), examples, lm)
    assert per_example(result) == per_example(local)
    assert aggregate.score == result.score == local.score
    assert sim.control.stats()["completions_ok"] == 2 * EXAMPLES
