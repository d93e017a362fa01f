"""A ReAct program runs unchanged in the pipeline's predictors (module breadth, issue 9).

200 arithmetic questions through a ReAct agent whose tools live in a module the predictors are
started to allow (`--allow-module e2e_react_tools`): the per-example results through Kafka
equal local ``Evaluate``'s on the same deterministic simulated LM, and the tools really ran in the
workers (every trace has the tool step).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_pipeline import Pipeline, devset, local_evaluate, per_example, sim_lm
from e2e_react_tools import add, multiply

from dspex.modules import ReAct
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 200
TOOLS_DIR = Path(__file__).resolve().parent


def test_react_program_through_kafka_equals_local_evaluate(
    pipeline_factory: Callable[..., Pipeline], sim_factory: Callable[..., SimulatedLMServer], cache_dir: Path
) -> None:
    python_path = os.pathsep.join(filter(None, [str(TOOLS_DIR), os.environ.get("PYTHONPATH")]))
    pipeline = pipeline_factory(env={"PYTHONPATH": python_path})
    pipeline.start_workers(2, "--allow-module", "e2e_react_tools")
    pipeline.wait_ready()
    sim = sim_factory(latency=0.005)
    lm = sim_lm(sim, cache_dir)
    agent = ReAct("question -> answer: int", tools=[add, multiply], max_iters=4)
    examples = devset(EXAMPLES, seed=11)

    [remote] = pipeline.evaluate([agent], examples, lm, name="react-through-kafka")
    pipeline_requests = sim.control.stats()["completions_ok"]
    [local] = [local_evaluate(agent, examples, lm)]

    assert (remote.errors, local.errors) == (0, 0), (remote.error_messages, local.error_messages)
    assert per_example(remote) == per_example(local)
    assert remote.score == local.score
    # at least a step and the extraction per question, and the same calls in both runs
    assert pipeline_requests >= 2 * EXAMPLES
    assert sim.control.stats()["completions_ok"] == 2 * pipeline_requests
    tools_used = {
        record.prediction.trajectory["tool_name_0"]
        for record in remote.records
        if record.prediction is not None
    }
    assert tools_used <= {"add", "multiply", "finish"} and tools_used & {"add", "multiply"}
