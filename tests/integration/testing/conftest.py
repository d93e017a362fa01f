"""One simulated LM subprocess per module; each test starts from default knobs and zero counters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dspex.testing import SimLMConfig, SimulatedLMServer

DEFAULT_KNOBS = SimLMConfig().model_dump()


@pytest.fixture(scope="module")
def sim_server() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer() as server:
        yield server


@pytest.fixture
def sim(sim_server: SimulatedLMServer) -> Iterator[SimulatedLMServer]:
    control = sim_server.control
    control.release()
    control.up()
    control.configure(**{**DEFAULT_KNOBS, "require_api_key": None})
    control.reset()
    yield sim_server
    control.release()
