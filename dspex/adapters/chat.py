"""ChatAdapter: DSPy 3.4.1's ChatAdapter wire format, byte for byte.

Fields travel as ``[[ ## name ## ]]`` sections and the answer ends with ``[[ ## completed ## ]]``::

    [[ ## reasoning ## ]]
    2 + 3 is 5.

    [[ ## answer ## ]]
    5

    [[ ## completed ## ]]

When an answer cannot be parsed, the call is retried once with :class:`~dspex.adapters.JSONAdapter`,
as DSPy does (``use_json_adapter_fallback=False`` turns that off).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

from pydantic.fields import FieldInfo

from dspex.adapters._render import (
    COMPLETED_MARKER,
    STRUCTURE_INTRO,
    field_descriptions,
    format_value,
    python_type_hint,
)
from dspex.adapters.base import Adapter, SignatureLike, task_objective
from dspex.adapters.types import AdapterResult
from dspex.adapters.utils import translate_field_type
from dspex.errors import AdapterParseError
from dspex.signatures import Signature, ensure_signature

if TYPE_CHECKING:
    from dspex.lm import BaseLM

__all__ = ["ChatAdapter", "FieldInfoWithName"]

logger = logging.getLogger(__name__)

_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_T = TypeVar("_T")


class FieldInfoWithName(NamedTuple):
    """A field's name with its ``FieldInfo``: the keys of ``format_field_with_value``'s mapping."""

    name: str
    info: FieldInfo


class ChatAdapter(Adapter):
    """DSPy's default adapter. ``use_json_adapter_fallback=False`` turns off the one retry with JSON."""

    name: ClassVar[str] = "chat"
    # Set by dspex.adapters.json_adapter (which subclasses this one): the adapter a failed parse
    # falls back to. None until that module is imported, which importing dspex.adapters does.
    fallback_factory: ClassVar[Callable[[ChatAdapter], Adapter] | None] = None

    def __init__(
        self,
        callbacks: list[Any] | None = None,
        use_native_function_calling: bool = False,
        native_response_types: list[type] | None = None,
        use_json_adapter_fallback: bool = True,
        parallel_tool_calls: bool | None = None,
    ) -> None:
        super().__init__(callbacks, use_native_function_calling, native_response_types, parallel_tool_calls)
        self.use_json_adapter_fallback = use_json_adapter_fallback

    # -- calls, with the JSON fallback -------------------------------------------------------
    def __call__(
        self,
        lm: BaseLM,
        lm_kwargs: dict[str, Any],
        signature: SignatureLike,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        try:
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)
        except AdapterParseError as error:
            fallback = self._fallback(error)
            return _raise_first(error, lambda: fallback(lm, lm_kwargs, signature, demos, inputs))

    async def acall(
        self,
        lm: BaseLM,
        lm_kwargs: dict[str, Any],
        signature: SignatureLike,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        try:
            return await super().acall(lm, lm_kwargs, signature, demos, inputs)
        except AdapterParseError as error:
            fallback = self._fallback(error)
            return await _araise_first(error, lambda: fallback.acall(lm, lm_kwargs, signature, demos, inputs))

    async def acall_result(
        self,
        lm: BaseLM,
        signature: SignatureLike,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
        *,
        config: Mapping[str, Any] | None = None,
    ) -> AdapterResult:
        """As :meth:`Adapter.acall_result`; on a parse error, one more call through JSONAdapter.

        If that fails to parse too, the original parse error is raised (with its raw text), with a
        note saying the JSON fallback failed as well.
        """
        try:
            return await super().acall_result(lm, signature, demos, inputs, config=config)
        except AdapterParseError as error:
            fallback = self._fallback(error)
            return await _araise_first(
                error, lambda: fallback.acall_result(lm, signature, demos, inputs, config=config)
            )

    async def acall_results(
        self,
        lm: BaseLM,
        signature: SignatureLike,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
        *,
        configs: Sequence[Mapping[str, Any]],
        announced: Mapping[str, Any],
    ) -> list[AdapterResult]:
        """As :meth:`Adapter.acall_results`; when a sample fails to parse, the samples are asked
        again through JSONAdapter (DSPy retries the whole call), as :meth:`acall_result` does."""
        try:
            return await super().acall_results(
                lm, signature, demos, inputs, configs=configs, announced=announced
            )
        except AdapterParseError as error:
            fallback = self._fallback(error)
            return await _araise_first(
                error,
                lambda: fallback.acall_results(
                    lm, signature, demos, inputs, configs=configs, announced=announced
                ),
            )

    def _fallback(self, error: AdapterParseError) -> Adapter:
        """The adapter to retry with, or ``error`` re-raised when there is none."""
        factory = type(self).fallback_factory
        if not self.use_json_adapter_fallback or factory is None:
            raise error
        logger.info("%s could not parse the LM output; retrying once with JSONAdapter", type(self).__name__)
        return factory(self)

    # -- formatting -------------------------------------------------------------------------
    def format_field_description(self, signature: type[Signature]) -> str:
        return (
            f"Your input fields are:\n{field_descriptions(signature.input_fields)}\n"
            f"Your output fields are:\n{field_descriptions(signature.output_fields)}"
        )

    def format_field_structure(self, signature: type[Signature]) -> str:
        """Each field as its own ``[[ ## name ## ]]`` section, then the ``[[ ## completed ## ]]`` marker."""
        inputs = self.format_field_with_value(_placeholders(signature.input_fields))
        outputs = self.format_field_with_value(_placeholders(signature.output_fields))
        return "\n\n".join([STRUCTURE_INTRO, inputs, outputs, COMPLETED_MARKER + "\n"]).strip()

    def format_task_description(self, signature: type[Signature]) -> str:
        return task_objective(signature)

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: Mapping[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        parts = [prefix]
        parts += [
            f"[[ ## {name} ## ]]\n{format_value(spec.annotation, inputs[name])}"
            for name, spec in signature.input_fields.items()
            if name in inputs
        ]
        if main_request:
            reminder = self.cached_text(
                "requirements", signature, lambda: self.user_message_output_requirements(signature)
            )
            if reminder is not None:
                parts.append(reminder)
        parts.append(suffix)
        return "\n\n".join(parts).strip()

    def user_message_output_requirements(self, signature: type[Signature]) -> str:
        """The short reminder of the answer's format that ends the last user message."""
        fields = ", then ".join(
            f"`[[ ## {name} ## ]]`{python_type_hint(spec.annotation)}"
            for name, spec in signature.output_fields.items()
        )
        return (
            f"Respond with the corresponding output fields, starting with the field {fields}, "
            f"and then ending with the marker for `{COMPLETED_MARKER}`."
        )

    def format_assistant_message_content(
        self,
        signature: type[Signature],
        outputs: Mapping[str, Any],
        missing_field_message: str | None = None,
    ) -> str:
        specs, missing = signature.output_fields, missing_field_message
        if type(self).format_field_with_value is ChatAdapter.format_field_with_value:
            # The hot path (every demo of every call): the same text without building the mapping.
            sections = (
                f"[[ ## {name} ## ]]\n{format_value(spec.annotation, outputs.get(name, missing))}"
                for name, spec in specs.items()
            )
            return "\n\n".join(sections).strip() + f"\n\n{COMPLETED_MARKER}\n"
        values = {FieldInfoWithName(name, spec): outputs.get(name, missing) for name, spec in specs.items()}
        return self.format_field_with_value(values) + f"\n\n{COMPLETED_MARKER}\n"

    def format_field_with_value(self, fields_with_values: Mapping[FieldInfoWithName, Any]) -> str:
        """Each field as a ``[[ ## name ## ]]`` section holding its formatted value."""
        return "\n\n".join(
            f"[[ ## {field.name} ## ]]\n{format_value(field.info.annotation, value)}"
            for field, value in fields_with_values.items()
        ).strip()

    # -- parsing ----------------------------------------------------------------------------
    def parse(self, signature: SignatureLike, completion: str) -> dict[str, Any]:
        """Split ``completion`` at ``[[ ## name ## ]]`` headers; the first section of each output counts."""
        sig = ensure_signature(signature)
        found: dict[str, Any] = {}
        for name, value in _sections(completion):
            if name in sig.output_fields and name not in found:
                found[name] = value
        return self.typed_outputs(sig, found, completion)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(use_json_adapter_fallback={self.use_json_adapter_fallback})"


def _placeholders(fields: Mapping[str, FieldInfo]) -> dict[FieldInfoWithName, str]:
    return {FieldInfoWithName(name, info): translate_field_type(name, info) for name, info in fields.items()}


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


def _raise_first(error: AdapterParseError, retry: Callable[[], _T]) -> _T:
    """``retry()``; if it fails to parse too, the first ``error`` (with a note) is what is raised."""
    try:
        return retry()
    except AdapterParseError as second:
        error.add_note(f"The JSONAdapter fallback failed too: {second}")
        raise error from None


async def _araise_first(error: AdapterParseError, retry: Callable[[], Awaitable[_T]]) -> _T:
    try:
        return await retry()
    except AdapterParseError as second:
        error.add_note(f"The JSONAdapter fallback failed too: {second}")
        raise error from None
