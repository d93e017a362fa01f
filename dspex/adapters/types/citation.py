"""``Citations``: the passages an LM cites from the documents it was given (experimental, as in DSPy).

Anthropic models return citations natively; for them the field is removed from the prompt and
filled from the response (``adapt_to_native_lm_feature`` / ``parse_lm_response``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pydantic

from dspex.adapters.types.base_type import Type

if TYPE_CHECKING:
    from dspex.signatures import Signature

__all__ = ["Citations"]


class Citations(Type):
    """Citations with the quoted text and where it comes from.

    class Answer(dspex.Signature):
        documents: list[Document] = dspex.InputField()
        question: str = dspex.InputField()
        answer: str = dspex.OutputField()
        citations: Citations = dspex.OutputField()
    """

    class Citation(Type):
        """One cited passage and its character span in a document."""

        type: str = "char_location"
        cited_text: str
        document_index: int
        document_title: str | None = None
        start_char_index: int
        end_char_index: int
        supported_text: str | None = None

        def format(self) -> dict[str, Any]:  # type: ignore[override]  # one citation is one dict
            """This citation as the dict citation APIs use; empty optional keys are left out."""
            formatted: dict[str, Any] = {
                "type": self.type,
                "cited_text": self.cited_text,
                "document_index": self.document_index,
                "start_char_index": self.start_char_index,
                "end_char_index": self.end_char_index,
            }
            if self.document_title:
                formatted["document_title"] = self.document_title
            if self.supported_text:
                formatted["supported_text"] = self.supported_text
            return formatted

    citations: list[Citation]

    @classmethod
    def from_dict_list(cls, citations_dicts: list[dict[str, Any]]) -> Citations:
        """Citations from a list of citation dicts (``cited_text``, ``document_index``, char indices...)."""
        return cls(citations=[cls.Citation(**item) for item in citations_dicts])

    @classmethod
    def description(cls) -> str:
        """What the adapters tell the LM about this field."""
        return (
            "Citations with quoted text and source references. "
            "Include the exact text being cited and information about its source."
        )

    def format(self) -> list[dict[str, Any]]:
        """One dict per citation."""
        return [citation.format() for citation in self.citations]

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_loose_input(cls, data: Any) -> Any:
        # Accepted: an instance, a list of citation dicts, {"citations": [...]}, or one citation dict.
        if isinstance(data, cls):
            return data
        if isinstance(data, list) and all(isinstance(item, dict) and "cited_text" in item for item in data):
            return {"citations": [cls.Citation(**item) for item in data]}
        if isinstance(data, dict):
            if isinstance(data.get("citations"), list):
                return {"citations": [_as_citation(cls.Citation, item) for item in data["citations"]]}
            if "cited_text" in data:
                return {"citations": [cls.Citation(**data)]}
        raise ValueError(f"Received invalid value for `Citations`: {data}")

    def __iter__(self) -> Iterator[Citation]:  # type: ignore[override]  # iterate citations, not fields
        return iter(self.citations)

    def __len__(self) -> int:
        return len(self.citations)

    def __getitem__(self, index: int) -> Citation:
        return self.citations[index]

    @classmethod
    def adapt_to_native_lm_feature(
        cls,
        signature: type[Signature],
        field_name: str,
        lm: Any,
        lm_kwargs: dict[str, Any],
    ) -> type[Signature]:
        """Anthropic models cite natively: the field leaves the prompt and comes from the response."""
        if str(getattr(lm, "model", "")).startswith("anthropic/"):
            return signature.delete(field_name)
        return signature

    @classmethod
    def is_streamable(cls) -> bool:
        """Citations arrive in stream chunks."""
        return True

    @classmethod
    def parse_stream_chunk(cls, chunk: Any) -> Citations | None:
        """The citation carried by a stream chunk's ``provider_specific_fields``, if any."""
        choices = getattr(chunk, "choices", None)
        if not choices:
            return None
        fields = getattr(choices[0].delta, "provider_specific_fields", None)
        citation = fields.get("citation") if isinstance(fields, dict) else None
        if not citation:
            return None
        try:
            return cls.from_dict_list([citation])
        except (pydantic.ValidationError, TypeError):  # a malformed chunk carries no citation
            return None

    @classmethod
    def parse_lm_response(cls, response: str | dict[str, Any]) -> Citations | None:
        """The citations of a native response (a dict with a ``citations`` list), or ``None``."""
        if isinstance(response, dict) and isinstance(response.get("citations"), list):
            return cls.from_dict_list(response["citations"])
        return None


def _as_citation(citation_cls: type[Citations.Citation], item: Any) -> Any:
    return citation_cls(**item) if isinstance(item, dict) else item
