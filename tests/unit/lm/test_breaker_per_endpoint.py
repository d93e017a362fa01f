"""One dead LM endpoint opens its own breaker only: calls to every other endpoint keep going.

Real HTTP on both sides: the simulated LM (a simulation, not a model) answers on one API base,
nothing listens on the other, and both LMs take their breakers from one worker's ``Endpoints``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from dspex.lm import LM
from dspex.processors.endpoints import EndpointOptions, Endpoints
from dspex.testing import SimulatedLMServer

QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(in_process=True) as server:
        yield server


def dead_api_base() -> str:
    """An API base on a loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def test_an_open_breaker_holds_only_its_own_endpoint(sim: SimulatedLMServer) -> None:
    # open for far longer than anything below takes, even on a loaded machine
    endpoints = Endpoints(EndpointOptions(breaker_failures=3, breaker_open_s=600.0, breaker_max_open_s=600.0))
    dead_base = dead_api_base()
    dead = LM("openai/simulated", api_base=dead_base, cache=False, breaker=endpoints.breaker(dead_base))
    live = LM("openai/simulated", api_base=sim.base_url, cache=False, breaker=endpoints.breaker(sim.base_url))

    stuck = [asyncio.create_task(dead.acomplete(QUESTION)) for _ in range(5)]
    try:
        for _ in range(600):  # the refused connections open the dead endpoint's breaker
            if endpoints.breaker(dead_base).state == "open":
                break
            await asyncio.sleep(0.05)
        assert endpoints.breaker(dead_base).state == "open"
        assert endpoints.breaker(sim.base_url).state == "closed"

        # The live endpoint answers while the dead one is open.
        answers = await asyncio.wait_for(asyncio.gather(*(live.acomplete(QUESTION) for _ in range(20))), 60)
        assert len(answers) == 20 and all(answer.text for answer in answers)
        assert endpoints.breaker(dead_base).state == "open"  # still open: nothing probed it yet
        assert not any(task.done() for task in stuck)  # calls to the dead one wait, they do not fail
        health = {h.api_base: h.breaker_state for h in endpoints.health()}
        assert health == {dead_base: "open", sim.base_url: "closed"}
    finally:
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        await live.aclose()


def test_the_worker_pauses_only_when_no_endpoint_answers() -> None:
    endpoints = Endpoints(EndpointOptions(breaker_failures=1, breaker_open_s=60.0, breaker_max_open_s=60.0))
    dead, other = endpoints.breaker("http://dead/v1"), endpoints.breaker("http://other/v1")
    assert endpoints.hold_state() == "closed"
    dead.record_failure()
    # one endpoint down: its own calls wait on its breaker, the worker keeps its partitions running
    assert (endpoints.worst_state(), endpoints.hold_state()) == ("open", "closed")
    other.record_failure()
    assert endpoints.hold_state() == "open"  # every endpoint in use down: pause, tasks wait in Kafka
