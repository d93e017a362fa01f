"""A user's callback module for the worker tests, installed by import path (``callbacks_kafka:Marking``)."""

from __future__ import annotations

from typing import Any

from dspex.utils import BaseCallback


class Marking(BaseCallback):
    """Answers each module start with a finding of its own, which the worker stores with the event."""

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        return {"marked": type(instance).__name__, "inputs": sorted(inputs)}
