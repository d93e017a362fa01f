"""ChatAdapter: DSPy 3.4.1's ChatAdapter wire format, byte for byte.

Fields travel as ``[[ ## name ## ]]`` sections and the answer ends with ``[[ ## completed ## ]]``::

    [[ ## reasoning ## ]]
    2 + 3 is 5.

    [[ ## answer ## ]]
    5

    [[ ## completed ## ]]

When an answer cannot be parsed, the call is retried once with :class:`JSONAdapter`, as DSPy does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from dspex.adapters._render import COMPLETED_MARKER, STRUCTURE_INTRO, python_type_hint, type_note
from dspex.adapters.base import Adapter, SignatureLike, section
from dspex.adapters.json_adapter import JSONAdapter
from dspex.adapters.types import AdapterResult
from dspex.errors import AdapterParseError
from dspex.signatures import Signature, ensure_signature

if TYPE_CHECKING:
    from dspex.lm import LM

__all__ = ["ChatAdapter"]

logger = logging.getLogger(__name__)

_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")


class ChatAdapter(Adapter):
    """DSPy's default adapter. ``json_fallback=False`` turns off the one retry with JSONAdapter."""

    name: ClassVar[str] = "chat"

    def __init__(self, *, json_fallback: bool = True) -> None:
        self.json_fallback = json_fallback

    def field_structure(self, signature: type[Signature]) -> str:
        inputs = _placeholders(signature.input_fields.values())
        outputs = _placeholders(signature.output_fields.values())
        return "\n\n".join([STRUCTURE_INTRO, inputs, outputs, COMPLETED_MARKER + "\n"]).strip()

    def output_requirements(self, signature: type[Signature]) -> str:
        fields = ", then ".join(
            f"`[[ ## {name} ## ]]`{python_type_hint(spec.annotation)}"
            for name, spec in signature.output_fields.items()
        )
        return (
            f"Respond with the corresponding output fields, starting with the field {fields}, "
            f"and then ending with the marker for `{COMPLETED_MARKER}`."
        )

    def assistant_content(
        self, signature: type[Signature], outputs: Mapping[str, Any], missing: str | None = None
    ) -> str:
        sections = [
            section(spec, outputs.get(name, missing)) for name, spec in signature.output_fields.items()
        ]
        return "\n\n".join(sections).strip() + f"\n\n{COMPLETED_MARKER}\n"

    def parse(self, signature: SignatureLike, text: str) -> dict[str, Any]:
        """Split ``text`` at ``[[ ## name ## ]]`` headers; the first section of each output field counts."""
        sig = ensure_signature(signature)
        found: dict[str, Any] = {}
        for name, value in _sections(text):
            if name in sig.output_fields and name not in found:
                found[name] = value
        return self.typed_outputs(sig, found, text)

    async def acall(
        self,
        lm: LM,
        signature: SignatureLike,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
        *,
        config: Mapping[str, Any] | None = None,
    ) -> AdapterResult:
        """As :meth:`Adapter.acall`; on a parse error, one more call through :class:`JSONAdapter`.

        If that fails to parse too, the original chat parse error is raised (with its raw text), with a
        note saying the JSON fallback failed as well.
        """
        try:
            return await super().acall(lm, signature, demos, inputs, config=config)
        except AdapterParseError as chat_error:
            if not self.json_fallback:
                raise
            logger.info(
                "ChatAdapter could not parse the LM output (%s); retrying once with JSONAdapter", chat_error
            )
            try:
                return await JSONAdapter().acall(lm, signature, demos, inputs, config=config)
            except AdapterParseError as json_error:
                chat_error.add_note(f"The JSONAdapter fallback failed too: {json_error}")
                raise chat_error from None

    def __repr__(self) -> str:
        return f"ChatAdapter(json_fallback={self.json_fallback})"


def _placeholders(specs: Any) -> str:
    return "\n\n".join(f"[[ ## {spec.name} ## ]]\n{type_note(spec)}" for spec in specs).strip()


def _sections(text: str) -> list[tuple[str | None, str]]:
    """(header name, stripped body) pairs in order; text before the first header has name None."""
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines():
        stripped = line.strip()
        match = _HEADER.match(stripped)
        if match:
            rest = stripped[match.end() :].strip()
            sections.append((match.group(1), [rest] if rest else []))
        else:
            sections[-1][1].append(line)
    return [(name, "\n".join(lines).strip()) for name, lines in sections]
