"""The tool-calling tests' LM: answers every call with one scripted response and records the requests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dspex.lm import BaseLM
from dspex.lm.client import LMResponse
from dspex.lm.usage import Usage


def search(query: str, k: int = 3) -> str:
    """Search for documents."""
    return query


class ScriptedLM(BaseLM):
    """Answers ``text`` (and ``tool_calls``, the provider's native calls) to every call; keeps each
    request (its messages and options) in :attr:`requests`. ``native``: whether the LM says it
    supports function calling."""

    def __init__(
        self,
        text: str,
        tool_calls: list[dict[str, Any]] | None,
        *,
        native: bool = True,
        model: str = "scripted",
    ) -> None:
        super().__init__(model, "chat", 0.0, 1000, False)
        self.text, self.tool_calls, self.native = text, tool_calls, native
        self.requests: list[dict[str, Any]] = []

    @property
    def supports_function_calling(self) -> bool:
        return self.native

    async def acomplete(
        self, messages: Sequence[Mapping[str, Any]], *, rollout_id: int | None = None, **request: Any
    ) -> LMResponse:
        self.requests.append({"messages": list(messages), **request})
        return LMResponse(
            text=self.text, model="scripted", usage=Usage(lm_calls=1), tool_calls=self.tool_calls
        )
