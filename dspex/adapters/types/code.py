"""``dspex.Code``: source code as a field, with its language: ``Code["python"]``, ``Code["java"]``.

As an output, the LM is asked for a fenced code block; the fence (and any text around it) is
removed when the value is parsed. As an input, the code is written as is.
"""

from __future__ import annotations

import functools
import re
from typing import Any, ClassVar

import pydantic

from dspex.adapters.types.base_type import Type

__all__ = ["Code"]

_FENCED = re.compile(r"```(?:[^\n]*)\n(.*?)```", re.DOTALL)
_INLINE_FENCED = re.compile(r"```(.*?)```", re.DOTALL)


class Code(Type):
    """Code in ``code``; the language is the class's (``Code["java"]``), ``python`` by default."""

    code: str

    language: ClassVar[str] = "python"

    def format(self) -> str:
        """The code itself."""
        return f"{self.code}"

    @pydantic.model_serializer()
    def serialize_model(self) -> Any:
        """The code as plain text (no content-part markers)."""
        return self.format()

    @classmethod
    def description(cls) -> str:
        """Tells the LM to answer in a fenced block of the class's language."""
        return (
            "Code represented in a string, specified in the `code` field. "
            "If this is an output field, the code field should follow the markdown code block format, "
            f"e.g. \n```{cls.language.lower()}\n{{code}}\n```"
            f"\nProgramming language: {cls.language}"
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_text(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, str):
            return {"code": _strip_fence(data)}
        if isinstance(data, dict):
            if "code" not in data:
                raise ValueError("`code` field is required for `dspy.Code`")
            if not isinstance(data["code"], str):
                raise ValueError(f"`code` field must be a string, but received type: {type(data['code'])}")
            return {"code": _strip_fence(data["code"])}
        raise ValueError(f"Received invalid value for `dspy.Code`: {data}")

    def __class_getitem__(cls, language: Any) -> Any:  # Code["python"]: a subclass for the language
        return _code_for(cls, language)


@functools.lru_cache(maxsize=64)
def _code_for(base: type[Code], language: str) -> type[Code]:
    # One class per (base, language): Code["python"] is Code["python"], so signatures compare equal.
    return type(f"{base.__name__}_{language}", (base,), {"language": language, "__module__": base.__module__})


def _strip_fence(text: str) -> str:
    """The code inside the first fenced block (language tag dropped), else the text unchanged."""
    match = _FENCED.search(text) or _INLINE_FENCED.search(text)
    return match.group(1).strip() if match else text
