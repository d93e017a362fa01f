"""What an ``RLM`` shows its LM about the REPL: the variables in scope and the steps taken so far.

    var = REPLVariable.from_value("context", long_text)       # name, type, length, head...tail preview
    history = REPLHistory().append(reasoning="look first", code="print(len(context))", output="5000")
    print(history.format())                                   # === Step 1 === ... Output (4 chars): ...

All three are frozen pydantic models. ``REPLVariable`` and ``REPLHistory`` serialize to their
formatted text, so a prompt field typed ``REPLHistory`` shows the LM the formatted steps, not JSON.
The text follows DSPy 3.4.1's, so prompts tuned for DSPy's RLM read the same here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pydantic

from dspex.adapters.utils import serialize_for_json

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

__all__ = ["REPLEntry", "REPLHistory", "REPLVariable"]

DEFAULT_MAX_OUTPUT_CHARS = 10_000
DEFAULT_PREVIEW_CHARS = 1000


def _head_and_tail(text: str, budget: int, separator: str) -> str:
    """``text`` cut to ``budget`` characters kept from both ends, joined by ``separator``."""
    head = budget // 2
    tail = budget - head if budget > 0 else head
    # text[-0:] would be the whole text: an empty tail must stay empty
    return text[:head] + separator + (text[-tail:] if tail else "")


def _field_metadata(field_info: FieldInfo | None) -> tuple[str, str]:
    """A signature field's description and constraints (a ``${name}`` placeholder is no description)."""
    extra = getattr(field_info, "json_schema_extra", None)
    if not isinstance(extra, dict):
        return "", ""
    desc = extra.get("desc") or ""
    if not isinstance(desc, str) or desc.startswith("${"):
        desc = ""
    constraints = extra.get("constraints") or ""
    return desc, constraints if isinstance(constraints, str) else str(constraints)


class REPLVariable(pydantic.BaseModel):
    """A variable the REPL holds: its name, type, length and a preview, for the prompt."""

    model_config = pydantic.ConfigDict(frozen=True)

    name: str
    type_name: str
    desc: str = ""
    constraints: str = ""
    total_length: int
    preview: str

    @classmethod
    def from_value(
        cls,
        name: str,
        value: Any,
        field_info: FieldInfo | None = None,
        preview_chars: int = DEFAULT_PREVIEW_CHARS,
    ) -> REPLVariable:
        """Describe ``value``: lists and dicts as indented JSON, the rest as text, cut in the middle if long.

        ``field_info`` (the signature's field) lends its description and constraints.
        """
        data = serialize_for_json(value)
        text = json.dumps(data, indent=2) if isinstance(data, dict | list) else str(data)
        preview = _head_and_tail(text, preview_chars, "...") if len(text) > preview_chars else text
        desc, constraints = _field_metadata(field_info)
        return cls(
            name=name,
            type_name=type(value).__name__,
            desc=desc,
            constraints=constraints,
            total_length=len(text),
            preview=preview,
        )

    def format(self) -> str:
        """The variable as the prompt lists it."""
        lines = [f"Variable: `{self.name}` (access it in your code)", f"Type: {self.type_name}"]
        if self.desc:
            lines.append(f"Description: {self.desc}")
        if self.constraints:
            lines.append(f"Constraints: {self.constraints}")
        lines.append(f"Total length: {self.total_length:,} characters")
        lines.append(f"Preview:\n```\n{self.preview}\n```")
        return "\n".join(lines)

    @pydantic.model_serializer()
    def serialize_model(self) -> str:
        """Serialized as its formatted text, which is what a prompt field of this type shows."""
        return self.format()


class REPLEntry(pydantic.BaseModel):
    """One step of the loop: the LM's reasoning, the code it wrote, and what the code printed."""

    model_config = pydantic.ConfigDict(frozen=True)

    reasoning: str = ""
    code: str
    output: str

    @staticmethod
    def format_output(output: str, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> str:
        """``output`` under a header with its true length; the middle left out past ``max_output_chars``."""
        length = len(output)
        if length > max_output_chars:
            note = f"\n\n... ({length - max_output_chars:,} characters omitted) ...\n\n"
            output = _head_and_tail(output, max_output_chars, note)
        return f"Output ({length:,} chars):\n{output}"

    def format(self, index: int, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> str:
        """The step as the prompt shows it; ``index`` counts from 0, the heading from 1."""
        reasoning = f"Reasoning: {self.reasoning}\n" if self.reasoning else ""
        code = f"```python\n{self.code}\n```"
        output = self.format_output(self.output, max_output_chars)
        return f"=== Step {index + 1} ===\n{reasoning}Code:\n{code}\n{output}"


class REPLHistory(pydantic.BaseModel):
    """The steps so far. Immutable: :meth:`append` returns a new history.

    ``max_output_chars`` bounds each step's output in :meth:`format` (the entries keep it whole).
    """

    model_config = pydantic.ConfigDict(frozen=True)

    entries: list[REPLEntry] = pydantic.Field(default_factory=list)
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS

    def format(self) -> str:
        """Every step, numbered; a note when there is none yet."""
        if not self.entries:
            return "You have not interacted with the REPL environment yet."
        return "\n".join(
            entry.format(index=i, max_output_chars=self.max_output_chars)
            for i, entry in enumerate(self.entries)
        )

    @pydantic.model_serializer()
    def serialize_model(self) -> str:
        """Serialized as its formatted text, which is what a prompt field of this type shows."""
        return self.format()

    def append(self, *, reasoning: str = "", code: str, output: str) -> REPLHistory:
        """A new history with one more step."""
        entry = REPLEntry(reasoning=reasoning, code=code, output=output)
        return REPLHistory(entries=[*self.entries, entry], max_output_chars=self.max_output_chars)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[REPLEntry]:  # type: ignore[override]  # steps, not pydantic's field pairs
        return iter(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)
