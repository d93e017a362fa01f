"""Stop reasons on the shared pipeline with the simulated LM: a refused key is an error, even with
``max_errors`` set; failures past ``max_errors`` are partial results, as local Evaluate gives them.

The aggregator decides why a job stopped and writes it in the status (``stop_reason``); the client
acts on that, never on the counts (issue 17, item 1).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_pipeline import Pipeline, cot_program, devset, local_evaluate, sim_lm, wait_quiet

from dspex.errors import JobError, LMAuthenticationError
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SimFactory = Callable[..., SimulatedLMServer]


def test_a_refused_key_with_max_errors_set_raises_what_local_evaluate_raises(
    shared_pipeline: Pipeline, sim_factory: SimFactory, cache_dir: Path
) -> None:
    sim = sim_factory(latency=0.005, require_api_key="sk-e2e-only-the-sim-knows")
    lm = sim_lm(sim, cache_dir, api_key_env="DSPEX_E2E_ABSENT_KEY")
    with pytest.raises(LMAuthenticationError) as local:
        local_evaluate(cot_program(), devset(50), lm)

    with pytest.raises(LMAuthenticationError) as raised:
        shared_pipeline.evaluate([cot_program()], devset(400), lm, name="refused-key", max_errors=10)
    error = raised.value
    assert isinstance(error, type(local.value)) and isinstance(error, JobError)
    assert error.status == 401 and str(error) == str(local.value)
    status = shared_pipeline.status(error.job_id)
    assert status is not None and (status.state, status.stop_reason) == ("failed", "systemic")
    wait_quiet(sim)
    shared_pipeline.wait_drained()


def test_failures_past_max_errors_give_partial_results_marked_stopped_early(
    shared_pipeline: Pipeline, sim_factory: SimFactory, cache_dir: Path
) -> None:
    sim = sim_factory(latency=0.005, fail=1.0)  # every request answered with a 500
    lm = sim_lm(sim, cache_dir, num_retries=0)
    [result] = shared_pipeline.evaluate([cot_program()], devset(200), lm, name="flaky", max_errors=5)
    assert result.stopped_early and result.errors > 5 and result.score == 0.0
    assert all("LMServerError" in message for message in result.error_messages.values())
    [job_id] = [j for j, s in shared_pipeline.client.jobs().items() if getattr(s, "name", None) == "flaky"]
    status = shared_pipeline.status(job_id)
    assert status is not None and (status.state, status.stop_reason) == ("failed", "max_errors")
    wait_quiet(sim)
    shared_pipeline.wait_drained()
