"""``Document``: source text an LM may cite (experimental, as in DSPy); pairs with ``Citations``."""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from dspex.adapters.types.base_type import Type

__all__ = ["Document"]


class Document(Type):
    """A document given to the LM as a citable content block.

    ``Document("plain text")`` is accepted as shorthand for ``Document(data="plain text")``.

        docs = [Document(data="Water boils at 100°C.", title="Physics")]
    """

    data: str
    title: str | None = None
    media_type: Literal["text/plain", "application/pdf"] = "text/plain"
    context: str | None = None

    def format(self) -> list[dict[str, Any]]:
        """One ``document`` content block with citations enabled."""
        # A PDF's data is base64; plain text is sent as is.
        source_type = "base64" if self.media_type == "application/pdf" else "text"
        block: dict[str, Any] = {
            "type": "document",
            "source": {"type": source_type, "media_type": self.media_type, "data": self.data},
            "citations": {"enabled": True},
        }
        if self.title:
            block["title"] = self.title
        if self.context:
            block["context"] = self.context
        return [block]

    @classmethod
    def description(cls) -> str:
        """What the adapters tell the LM about this field."""
        return (
            "A document containing text content that can be referenced and cited. "
            "Include the full text content and optionally a title for proper referencing."
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_plain_text(cls, data: Any) -> Any:
        if isinstance(data, cls | dict):
            return data
        if isinstance(data, str):
            return {"data": data}
        raise ValueError(f"Received invalid value for `Document`: {data}")

    def __str__(self) -> str:
        title = f"'{self.title}': " if self.title else ""
        return f"Document({title}{len(self.data)} chars)"
