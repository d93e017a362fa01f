"""A ReActV2 agent runs in the pipeline's predictors exactly as locally (issue 19).

Arithmetic questions through ``ReActV2`` with three tools from a module the predictors are started to
allow (``--allow-module e2e_agent_tools``): ``add``, ``multiply`` (a coroutine) and ``lookup`` (an
HTTP call to a service of the test). The simulated LM answers with native tool calls over HTTP (all
three tools in one turn, then ``submit`` with the operation tool's result): the per-example results
through Kafka equal local ``Evaluate``'s, and the tools really ran in the workers (every trace has
the three calls and their results, and the lookup service saw the workers' calls). Each result also
carries its tool calls' starts and durations (``ExampleResult.tool_calls``), as locally.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_agent_tools import add, lookup, multiply
from e2e_lookup_service import LookupService, answer_for
from e2e_pipeline import Pipeline, devset, local_evaluate, per_example, sim_lm

from dspex.adapters import JSONAdapter
from dspex.modules import ReActV2
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 120
TOOLS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def lookup_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[LookupService]:
    service = LookupService().start()
    monkeypatch.setenv("DSPEX_E2E_LOOKUP_URL", service.url)  # the local run's tool reads it
    yield service
    service.stop()


def agent_env(service: LookupService) -> dict[str, str]:
    python_path = os.pathsep.join(filter(None, [str(TOOLS_DIR), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": python_path, "DSPEX_E2E_LOOKUP_URL": service.url}


def agent() -> ReActV2:
    # JSONAdapter: native function calling (DSPy 3.4.1's default for it), saved by name with the program
    return ReActV2(
        "question -> answer: int", tools=[add, multiply, lookup], max_iters=4, adapter=JSONAdapter()
    )


def test_react_v2_program_through_kafka_equals_local_evaluate(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
    lookup_service: LookupService,
) -> None:
    pipeline = pipeline_factory(env=agent_env(lookup_service))
    pipeline.start_workers(2, "--allow-module", "e2e_agent_tools")
    pipeline.wait_ready()
    sim = sim_factory(latency=0.005)
    lm = sim_lm(sim, cache_dir)
    program = agent()
    examples = devset(EXAMPLES, seed=19)

    [remote] = pipeline.evaluate([program], examples, lm, name="react-v2-through-kafka")
    pipeline_requests = sim.control.stats()["completions_ok"]
    pipeline_lookups = len(lookup_service.accepted)
    [local] = [local_evaluate(program, examples, lm)]

    assert (remote.errors, local.errors) == (0, 0), (remote.error_messages, local.error_messages)
    assert per_example(remote) == per_example(local)
    assert remote.score == local.score
    # a turn calling the three tools, then submit: two requests per question, in both runs
    assert pipeline_requests == 2 * EXAMPLES
    assert sim.control.stats()["completions_ok"] == 2 * pipeline_requests
    assert pipeline_lookups == EXAMPLES and len(lookup_service.accepted) == 2 * EXAMPLES
    for record in remote.records:
        assert record.prediction is not None and record.prediction.termination_reason == "submit"
        # the history as JSON: what a prediction through Kafka carries (locally it is a History)
        first = record.prediction.to_dict()["history"]["messages"][0]["tool_calls"]
        assert [call["name"] for call in first["tool_calls"]] == ["add", "multiply", "lookup"]
        results = first["tool_call_results"]["tool_call_results"]
        assert not any(result["is_error"] for result in results)
        assert results[2]["value"] == answer_for(record.example.question)
    # each tool call's start and duration came back with the result, as local Evaluate records them
    for remote_record, local_record in zip(remote.records, local.records, strict=True):
        calls = {call.tool: call for call in remote_record.tool_calls}
        assert sorted(calls) == sorted(call.tool for call in local_record.tool_calls)
        assert sorted(calls) == ["add", "lookup", "multiply", "submit"]
        assert all(call.outcome == "ok" for call in calls.values())
        assert calls["multiply"].duration_s >= 0.009  # it sleeps 10 ms
        turn_end = max(calls[name].start_s + calls[name].duration_s for name in ("add", "lookup", "multiply"))
        assert calls["submit"].start_s >= turn_end  # the next turn's call
        assert turn_end <= (remote_record.latency_s or 0.0) + 0.01
