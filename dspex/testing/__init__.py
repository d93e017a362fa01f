"""Testing helpers: the simulated OpenAI-compatible LM (a simulation, not a real model) and its task.

    from dspex.testing import SimulatedLMServer, arithmetic_dataset

    devset = arithmetic_dataset(200, seed=1)
    with SimulatedLMServer(latency=0.1) as sim:
        lm = dspex.LM("openai/simulated", api_base=sim.base_url)

Names load on first use, so that the simulated LM's own process (``python -m
dspex.testing.sim_lm``) starts without importing the HTTP client or the programming model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AsyncSimLMControl",
    "SimLMConfig",
    "SimLMControl",
    "SimulatedLMServer",
    "arithmetic_dataset",
    "arithmetic_rows",
]

_EXPORTS = {
    "AsyncSimLMControl": "dspex.testing.control",
    "SimLMControl": "dspex.testing.control",
    "SimulatedLMServer": "dspex.testing.control",
    "SimLMConfig": "dspex.testing._server",
    "arithmetic_dataset": "dspex.testing.task",
    "arithmetic_rows": "dspex.testing.task",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dspex.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from dspex.testing._server import SimLMConfig
    from dspex.testing.control import AsyncSimLMControl, SimLMControl, SimulatedLMServer
    from dspex.testing.task import arithmetic_dataset, arithmetic_rows
