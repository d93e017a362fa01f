"""``dspex.Reasoning``: an LM's reasoning as an output field, from a reasoning model or from text.

It behaves as a string (compares equal to one, supports ``len``, slicing, ``in``, ``+`` and every
``str`` method). With a reasoning-capable LM the field leaves the prompt and is filled from the
model's native reasoning (``reasoning_content``); otherwise the LM writes it as a text field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pydantic

from dspex.adapters.types.base_type import Type

if TYPE_CHECKING:
    from dspex.signatures import Signature

__all__ = ["Reasoning"]


class Reasoning(Type):
    """Reasoning text in ``content``; use it as a ``str``."""

    content: str

    def format(self) -> str:
        """The reasoning text."""
        return f"{self.content}"

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_text(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, str):
            return {"content": data}
        if isinstance(data, dict):
            if "content" not in data:
                raise ValueError("`content` field is required for `dspy.Reasoning`")
            if not isinstance(data["content"], str):
                raise ValueError(
                    f"`content` field must be a string, but received type: {type(data['content'])}"
                )
            return {"content": data["content"]}
        raise ValueError(f"Received invalid value for `dspy.Reasoning`: {data}")

    @classmethod
    def adapt_to_native_lm_feature(
        cls,
        signature: type[Signature],
        field_name: str,
        lm: Any,
        lm_kwargs: dict[str, Any],
    ) -> type[Signature]:
        """With an LM that reasons natively, ask for reasoning (``reasoning_effort``) and drop the field.

        The effort is the call's, else the LM's, else ``"low"``; an explicit ``None`` turns it off.
        GPT-5 models on the chat API do not return their reasoning, so the field stays there.
        """
        lm_settings = getattr(lm, "kwargs", None) or {}
        effort = lm_kwargs.get("reasoning_effort", lm_settings.get("reasoning_effort", "low"))
        if effort is None or not getattr(lm, "supports_reasoning", False):
            return signature
        if "gpt-5" in str(getattr(lm, "model", "")) and getattr(lm, "model_type", "chat") == "chat":
            return signature
        lm_kwargs["reasoning_effort"] = effort
        return signature.delete(field_name)

    @classmethod
    def parse_lm_response(cls, response: str | dict[str, Any]) -> Reasoning | None:
        """The native reasoning of a response dict (``reasoning_content``), or None."""
        if isinstance(response, dict) and "reasoning_content" in response:
            return Reasoning(content=response["reasoning_content"])
        return None

    @classmethod
    def parse_stream_chunk(cls, chunk: Any) -> str | None:  # type: ignore[override]  # a text delta
        """The reasoning text of a stream chunk, or None."""
        choices = getattr(chunk, "choices", None)
        if not choices:
            return None
        return getattr(choices[0].delta, "reasoning_content", None)

    @classmethod
    def is_streamable(cls) -> bool:
        """Reasoning arrives in stream chunks."""
        return True

    def __repr__(self) -> str:
        return f"{self.content!r}"

    def __str__(self) -> str:
        return self.content

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Reasoning):
            return self.content == other.content
        if isinstance(other, str):
            return self.content == other
        return False

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # equal to a str, so it cannot hash like one

    def __len__(self) -> int:
        return len(self.content)

    def __getitem__(self, key: int | slice) -> str:
        return self.content[key]

    def __contains__(self, item: str) -> bool:
        return item in self.content

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # iterate characters, not fields
        return iter(self.content)

    def __add__(self, other: object) -> Any:
        if isinstance(other, Reasoning):
            return Reasoning(content=self.content + other.content)
        if isinstance(other, str):
            return self.content + other
        return NotImplemented

    def __radd__(self, other: object) -> Any:
        if isinstance(other, str):
            return other + self.content
        if isinstance(other, Reasoning):
            return Reasoning(content=other.content + self.content)
        return NotImplemented

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are neither fields nor methods: hand str's methods to content.
        if hasattr(str, name):
            return getattr(self.content, name)
        raise AttributeError(
            f"`{type(self).__name__}` object has no attribute '{name}'. "
            "If you are using `dspy.ChainOfThought`, note that the 'reasoning' field in ChainOfThought "
            "is now a "
            "`dspy.Reasoning` object (not a plain string). "
            "You can convert it to a string with str(reasoning) or access the content with reasoning.content."
        )
