"""Model-written code that abuses the sandbox, end to end through a predictor's pool (issue 24).

The simulated LM's ``code_abuse`` knob answers a share of RLM's code steps with code a sandbox must
contain (``dspex.testing._code.ABUSE_KINDS``): an endless loop, a gigabyte allocation against the
512 MB limit, 100 MB of output, a read of ``/etc/passwd`` and a ``fetch`` to a loopback listener of
this test. Through Kafka, on one predictor with ``--sandbox-pool 2`` (its wall-time limit set to 3 s
through ``DSPEX_SANDBOX_TIMEOUT_S``, so the loops end quickly): every example of the job ends, as an
answer or as a failed example with its reason; the limits really fired (the predictor's sandbox
metrics count timeouts and output kills); the listener saw no connection and no output carries the
password file; then, with the knob off, the same worker answers a second job exactly (the pool
replaced what it killed); and once the predictor stops no Deno process it started is left.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_pipeline import Pipeline, devset, sim_lm
from e2e_sandbox_checks import deno_processes, sandbox_executions
from e2e_sandbox_programs import ArithmeticRLM

from dspex.testing import SimulatedLMServer
from dspex.testing.listener import LoopbackListener

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PROGRAMS_DIR = Path(__file__).resolve().parent
ABUSED_EXAMPLES = 16
CLEAN_EXAMPLES = 12
# devset seed whose first code steps include loops and floods of output at this share (every
# request is a function of its prompt, so this holds on every run; the 1 GB allocation is killed
# by the same pool in tests/integration/sandbox)
SEED = 31
ABUSE_SHARE = 0.5


@pytest.fixture
def listener() -> Iterator[LoopbackListener]:
    with LoopbackListener() as counter:
        yield counter


def test_abusive_code_is_contained_and_the_predictor_serves_on(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
    listener: LoopbackListener,
) -> None:
    python_path = os.pathsep.join(filter(None, [str(PROGRAMS_DIR), os.environ.get("PYTHONPATH")]))
    pipeline = pipeline_factory(env={"PYTHONPATH": python_path, "DSPEX_SANDBOX_TIMEOUT_S": "3"})
    pipeline.start("aggregate")
    pipeline.start("score")
    predictor = pipeline.start("predict", "--sandbox-pool", "2", "--allow-module", "e2e_sandbox_programs")
    pipeline.wait_ready()
    sim = sim_factory(latency=0.005, code_abuse=ABUSE_SHARE, code_abuse_port=listener.port)
    lm = sim_lm(sim, cache_dir)

    [abused] = pipeline.evaluate([ArithmeticRLM()], devset(ABUSED_EXAMPLES, seed=SEED), lm, name="rlm-abuse")
    outcomes = sandbox_executions(pipeline.work_dir / "prometheus-targets", predictor.name)
    sim.control.configure(code_abuse=0.0)
    [clean] = pipeline.evaluate(
        [ArithmeticRLM()], devset(CLEAN_EXAMPLES, seed=SEED + 1), lm, name="rlm-after"
    )

    assert len(abused.records) == ABUSED_EXAMPLES  # every example ended, answered or failed
    for record in abused.records:
        assert record.prediction is not None or record.error, record
        assert "root:x:0:0" not in str(record.prediction and record.prediction.to_dict())
    assert outcomes.get("timeout", 0) >= 1 and outcomes.get("output", 0) >= 1, str(outcomes)
    assert listener.connections == 0
    assert (clean.errors, clean.score) == (0, 100.0), clean.error_messages
    pipeline.check_running()
    assert predictor.stop() == 0, predictor.log_tail()
    assert deno_processes(predictor.pid) == []
