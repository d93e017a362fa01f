"""The LM provider goes away for 30 s in the middle of a job, then comes back on the same port.

The circuit breakers open (heartbeats say so), the predictors pause their partitions, the calls in
flight wait for the breaker instead of failing, and the job completes with the score it has
without an outage.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from resilience_helpers import assert_exact, devset, local_scores, pipeline_of, sim_lm, wait_for

from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 2_000
OUTAGE_AFTER = 600  # responses before the outage
OUTAGE_S = 30.0


def test_an_outage_opens_the_breaker_and_fails_nothing(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    examples = devset(EXAMPLES, seed=31)
    with (
        SimulatedLMServer(latency=0.02) as sim,
        pipeline_of(kafka_bootstrap, topic_prefix, tmp_path / "stack") as pipeline,
    ):
        pipeline.start("aggregate")
        pipeline.start("score")
        predictors = [pipeline.start("predict", "--allow-api-base", sim.base_url) for _ in range(2)]
        expected = local_scores(sim.base_url, examples)
        pipeline.wait_ready()

        sim.control.hold(after=OUTAGE_AFTER)
        job_id = pipeline.submit(examples, sim_lm(sim.base_url))
        sim.control.wait_until(lambda stats: stats["held"] > 0, timeout=120)
        went_down = time.monotonic()
        sim.stop()  # requests held in flight lose their connection; new ones are refused

        def breakers_open() -> bool:
            beats = pipeline.heartbeats()
            return all(beats[p.name].breaker_state == "open" for p in predictors if p.name in beats)

        wait_for(breakers_open, OUTAGE_S - 5, "every predictor's heartbeat to show an open breaker")
        beats = pipeline.heartbeats()
        assert all(beats[p.name].paused_partitions == beats[p.name].assigned_partitions for p in predictors)
        status = pipeline.client.status(job_id)
        assert status.errors == 0 and status.done < EXAMPLES
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - went_down)))  # the outage's length itself
        sim.start()

        status, result = pipeline.finish(job_id, timeout=180)
        assert_exact(pipeline, job_id, status, EXAMPLES)
        assert [score for _, _, score in result.results] == expected
        beats = pipeline.heartbeats()
        assert {beats[p.name].breaker_state for p in predictors} == {"closed"}
        assert all(p.alive for p in predictors)
