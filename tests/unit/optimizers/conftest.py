"""An in-process simulated LM shared by the optimizer unit tests that talk to one (a real HTTP server).

    def test_x(sim): lm = sim_lm_of(sim)   # from dspex_optimizer_fakes

``sim`` is reset before each test, with garbling off, so a test's counters and faults are its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dspex.testing import SimulatedLMServer


@pytest.fixture(scope="module")
def sim_server() -> Iterator[SimulatedLMServer]:
    with SimulatedLMServer(in_process=True) as server:
        yield server


@pytest.fixture
def sim(sim_server: SimulatedLMServer) -> SimulatedLMServer:
    sim_server.control.configure(garble=0.0, garble_fields=None)
    sim_server.control.reset()
    return sim_server
