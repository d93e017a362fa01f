"""Python function calls per example of a local Evaluate, per tracing configuration.

On a loaded machine CPU time cannot tell a 5% difference; the number of Python function calls
(counted by cProfile) does not depend on the load, so it compares two trees' tracing cost
deterministically (up to the event loop's scheduling and the 1% sampling draw).

    .venv/bin/python bench/tracing_calls.py
    PYTHONPATH=/tmp/other-tree .venv/bin/python bench/tracing_calls.py   # another tree, same figures

``ChainOfThought("question -> answer")`` over 500 arithmetic examples (after 100 of warm-up), width
32, the simulated LM in its own process at latency 0, the evaluation run on this thread's loop.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import pstats
from typing import Any

import dspex
from dspex.observability.tracing import TracingSettings
from dspex.testing import SimulatedLMServer
from dspex.testing.task import arithmetic_dataset

EXAMPLES = 500


class Silent(dspex.BaseCallback):
    """Listens to the module and LM hooks and does nothing: the callback seam's own cost."""

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None: ...
    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None: ...
    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None: ...
    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None: ...
    def on_lm_request(self, call_id: str | None, instance: Any, request: Any) -> None: ...
    def on_lm_attempt(self, call_id: str | None, instance: Any, attempt: Any) -> None: ...


def _calls_per_example(base_url: str, examples: int, profile: bool) -> float:
    program = dspex.ChainOfThought("question -> answer")
    program.set_lm(dspex.LM("openai/sim", api_base=base_url, api_key="sim", cache=False))
    evaluate = dspex.Evaluate(
        devset=arithmetic_dataset(examples, 7), metric=dspex.metrics.exact_match("answer"), concurrency=32
    )
    profiler = cProfile.Profile()

    async def run() -> None:
        if profile:
            profiler.enable()
        await evaluate.acall(program)
        if profile:
            profiler.disable()

    asyncio.run(run())
    return pstats.Stats(profiler).total_calls / examples if profile else 0.0  # type: ignore[attr-defined]


def main() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    configurations: dict[str, dict[str, Any]] = {
        "off": {"tracing": None, "callbacks": []},
        "no-op callback": {"tracing": None, "callbacks": [Silent()]},
        "tracing, ratio 0": {"tracing": TracingSettings(exporter=InMemorySpanExporter(), sample_ratio=0.0)},
        "tracing, default (1%)": {"tracing": TracingSettings(exporter=InMemorySpanExporter())},
    }
    found: dict[str, float] = {}
    with SimulatedLMServer(latency=0.0) as sim:
        for name, settings in configurations.items():
            dspex.configure(**{"callbacks": [], **settings})
            _calls_per_example(sim.base_url, 100, profile=False)  # warm-up
            found[name] = round(_calls_per_example(sim.base_url, EXAMPLES, profile=True), 1)
    dspex.configure(tracing=None, callbacks=[])
    print(json.dumps(found))


if __name__ == "__main__":
    main()
