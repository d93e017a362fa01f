"""One LM call of a prediction as its result keeps it: the messages sent, the answer, usage and timing.

Texts are bounded by the writer (see :mod:`dspex.processors.lm_calls`): a long one keeps its head
and tail around a ``…[truncated N chars]…`` marker, an image or audio part is a placeholder such as
``[image: data:image/png;base64 (81234 chars)]``, and an LM's API key never appears.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dspex.schemas.base import WireModel

__all__ = ["LMCallRecord", "LMMessageRecord"]


class LMMessageRecord(WireModel):
    """One chat message sent: its role (system, user, assistant, tool) and its text."""

    role: str
    content: str = ""


class LMCallRecord(WireModel):
    """One LM call of a prediction, in the order the program made them.

    ``start_s`` is when it started in seconds since the run began and ``latency_s`` how long it took
    (limiter waits and retries included). ``completion`` is the answer's text (None when the call
    failed: ``error`` says why), ``tool_calls`` the function calls it asked for (OpenAI's shape).
    ``cache_hit``: answered from the response cache, no request sent (no tokens, no cost).
    ``truncated_chars`` counts the characters the writer left out of this call's texts.
    """

    model: str
    messages: list[LMMessageRecord] = Field(default_factory=list)
    completion: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    latency_s: float = Field(default=0.0, ge=0)
    start_s: float = Field(default=0.0, ge=0)
    cache_hit: bool = False
    error: str | None = None
    truncated_chars: int = Field(default=0, ge=0)
