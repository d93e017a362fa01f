"""Each tool call's start and duration come back with the results through Kafka (issue 19).

A ReActV2 agent with two tools from a module the predictor is started to allow, one sleeping 0.2 s
on the event loop and one 0.4 s in a thread; the simulated LM (a simulation, not a model) calls both
in one turn, then ``submit``. Every example's result carries the calls' timings, within sane
bounds, overlapping (they ran at once), and the same calls as local ``Evaluate`` records; the
predictions themselves carry no timing (the history is what the LM saw).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_pipeline import Pipeline, devset, local_evaluate, per_example, sim_lm
from e2e_timed_tools import long_lookup, short_lookup

from dspex.adapters import JSONAdapter
from dspex.modules import ReActV2
from dspex.testing import SimulatedLMServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = 8
TOOLS_DIR = Path(__file__).resolve().parent


def test_tool_call_timings_come_back_with_the_results_and_show_the_calls_overlapping(
    pipeline_factory: Callable[..., Pipeline],
    sim_factory: Callable[..., SimulatedLMServer],
    cache_dir: Path,
) -> None:
    python_path = os.pathsep.join(filter(None, [str(TOOLS_DIR), os.environ.get("PYTHONPATH")]))
    pipeline = pipeline_factory(env={"PYTHONPATH": python_path})
    pipeline.start_workers(1, "--allow-module", "e2e_timed_tools")
    pipeline.wait_ready()
    lm = sim_lm(sim_factory(latency=0.005), cache_dir)
    agent = ReActV2("question -> answer: int", tools=[short_lookup, long_lookup], adapter=JSONAdapter())
    examples = devset(EXAMPLES, seed=29)

    [remote] = pipeline.evaluate([agent], examples, lm, name="tool-timings")
    local = local_evaluate(agent, examples, lm)

    assert (remote.errors, local.errors) == (0, 0), (remote.error_messages, local.error_messages)
    assert per_example(remote) == per_example(local)
    for remote_record, local_record in zip(remote.records, local.records, strict=True):
        calls = {call.tool: call for call in remote_record.tool_calls}
        assert sorted(calls) == sorted(call.tool for call in local_record.tool_calls)
        assert sorted(calls) == ["long_lookup", "short_lookup", "submit"]
        short, long = calls["short_lookup"], calls["long_lookup"]
        # at least each tool's own sleep; the upper bounds are loose (a loaded machine delays a thread's
        # wake-up by seconds), the overlap and the example's latency below bound them for real
        assert 0.19 <= short.duration_s < 5.0 and 0.39 <= long.duration_s < 5.0
        # both started before either ended: concurrent, not 0.2 s apart
        assert long.start_s < short.start_s + short.duration_s
        assert short.start_s < long.start_s + long.duration_s
        assert calls["submit"].start_s >= long.start_s + long.duration_s
        assert long.start_s + long.duration_s <= (remote_record.latency_s or 0.0)
        assert remote_record.prediction is not None
        assert "duration" not in str(remote_record.prediction.to_dict())
