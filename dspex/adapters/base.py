"""The adapter base: turns (signature, demos, inputs) into chat messages and LM text back into outputs.

The message layout is DSPy's: one system message (field list, structure, objective), each demo as a
user/assistant pair, then the current inputs as the last user message. Subclasses decide how the
structure is described, how answers look, and how they are parsed.
"""

from __future__ import annotations

import logging
import textwrap
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from dspex.adapters._render import annotation_name, field_descriptions, format_value
from dspex.adapters._values import FieldValueError, allows_none, parse_field_value
from dspex.adapters.types import AdapterResult
from dspex.errors import AdapterParseError, ConfigurationError
from dspex.signatures import FieldSpec, Signature, ensure_signature

if TYPE_CHECKING:
    from dspex.lm import LM

__all__ = ["Adapter", "Message", "SignatureLike"]

logger = logging.getLogger(__name__)

Message = dict[str, Any]
SignatureLike = type[Signature] | str

INCOMPLETE_DEMO_PREFIX = (
    "This is an example of the task, though some input or output fields are not supplied."
)
_MISSING_IN_INCOMPLETE = "Not supplied for this particular example. "
_MISSING_IN_COMPLETE = "Not supplied for this conversation history message. "
_PREVIEW_CHARS = 300


class Adapter:
    """Base class of the adapters. Adapters hold no per-call state: one instance serves every task.

    Subclasses implement :meth:`field_structure`, :meth:`output_requirements`,
    :meth:`assistant_content` and :meth:`parse`; :meth:`request_options` adds request parameters.
    """

    name: ClassVar[str] = "base"

    # -- per-signature texts ----------------------------------------------------------------
    def _per_signature(self, what: str, signature: type[Signature], build: Callable[[], str]) -> str:
        """``build()`` once per signature class (the system message and the output reminder are
        the same for every call of a predictor). Signatures are immutable (``with_*`` make new
        classes); the guard on the fields and instructions objects covers code that swaps them."""
        texts = self.__dict__.get("_texts")
        if texts is None:
            texts = self.__dict__["_texts"] = weakref.WeakKeyDictionary()
        guard = (signature.instructions, signature.input_fields, signature.output_fields)
        per_kind: dict[str, tuple[tuple[Any, ...], str]] = texts.setdefault(signature, {})
        cached = per_kind.get(what)
        if cached is not None and all(a is b for a, b in zip(cached[0], guard, strict=True)):
            return cached[1]
        text = build()
        per_kind[what] = (guard, text)
        return text

    # -- formatting -------------------------------------------------------------------------
    def format(
        self, signature: SignatureLike, demos: Sequence[Any], inputs: Mapping[str, Any]
    ) -> list[Message]:
        """The OpenAI-style messages for one call: system, demo pairs, then the current inputs."""
        sig = ensure_signature(signature)
        system = self._per_signature("system", sig, lambda: self.system_message(sig))
        messages: list[Message] = [{"role": "system", "content": system}]
        messages.extend(self.format_demos(sig, demos))
        content = self.user_content(sig, inputs, main_request=True)
        if content:
            messages.append({"role": "user", "content": content})
        return messages

    def system_message(self, signature: type[Signature]) -> str:
        """Field list, then the structure of messages, then the objective (the instructions)."""
        return (
            f"{self.field_description(signature)}\n"
            f"{self.field_structure(signature)}\n"
            f"{self.task_description(signature)}"
        )

    def field_description(self, signature: type[Signature]) -> str:
        return (
            f"Your input fields are:\n{field_descriptions(signature.input_fields)}\n"
            f"Your output fields are:\n{field_descriptions(signature.output_fields)}"
        )

    def task_description(self, signature: type[Signature]) -> str:
        lines = textwrap.dedent(signature.instructions).splitlines()
        objective = "".join(f"\n{' ' * 8}{line}" for line in lines)
        return f"In adhering to this structure, your objective is: {objective}"

    def field_structure(self, signature: type[Signature]) -> str:
        raise NotImplementedError

    def output_requirements(self, signature: type[Signature]) -> str:
        raise NotImplementedError

    def assistant_content(
        self, signature: type[Signature], outputs: Mapping[str, Any], missing: str | None = None
    ) -> str:
        raise NotImplementedError

    def user_content(
        self,
        signature: type[Signature],
        values: Mapping[str, Any],
        *,
        prefix: str = "",
        main_request: bool = False,
    ) -> str:
        """The input fields present in ``values`` as ``[[ ## name ## ]]`` sections, and for the
        current request (``main_request``) the reminder of the output format."""
        parts = [prefix]
        parts += [
            section(spec, values[name]) for name, spec in signature.input_fields.items() if name in values
        ]
        if main_request:
            parts.append(
                self._per_signature("requirements", signature, lambda: self.output_requirements(signature))
            )
        return "\n\n".join(parts).strip()

    def format_demos(self, signature: type[Signature], demos: Sequence[Any]) -> list[Message]:
        """Demos as user/assistant pairs, DSPy's way: incomplete demos first, with a note, then complete ones.

        A demo is complete when every field has a non-None value; one with at least one input and
        one output (but not all) is incomplete; any other demo is left out.
        """
        complete, incomplete = [], []
        for index, demo in enumerate(demos):
            values = demo_values(demo, index)
            if all(values.get(name) is not None for name in signature.fields):
                complete.append(values)
            elif _has_any(values, signature.input_fields) and _has_any(values, signature.output_fields):
                incomplete.append(values)
        messages: list[Message] = []
        for values in incomplete:
            messages += self._demo_pair(signature, values, INCOMPLETE_DEMO_PREFIX, _MISSING_IN_INCOMPLETE)
        for values in complete:
            messages += self._demo_pair(signature, values, "", _MISSING_IN_COMPLETE)
        return messages

    def _demo_pair(
        self, signature: type[Signature], values: Mapping[str, Any], prefix: str, missing: str
    ) -> list[Message]:
        return [
            {"role": "user", "content": self.user_content(signature, values, prefix=prefix)},
            {"role": "assistant", "content": self.assistant_content(signature, values, missing)},
        ]

    # -- parsing ----------------------------------------------------------------------------
    def parse(self, signature: SignatureLike, text: str) -> dict[str, Any]:
        """The typed output values in ``text``; AdapterParseError (with ``raw_text``) when it cannot."""
        raise NotImplementedError

    def request_options(self, signature: SignatureLike) -> dict[str, Any]:
        """Extra request parameters this adapter needs (e.g. ``response_format``); none by default."""
        return {}

    def typed_outputs(
        self, signature: type[Signature], found: Mapping[str, Any], text: str
    ) -> dict[str, Any]:
        """Validate each output in ``found``; an absent field whose type allows None becomes None."""
        outputs: dict[str, Any] = {}
        for name, spec in signature.output_fields.items():
            if name in found:
                outputs[name] = self._typed(spec, found[name], text)
            elif allows_none(spec.annotation):
                outputs[name] = None
        missing = [name for name in signature.output_fields if name not in outputs]
        if missing:
            names = ", ".join(f"`{name}`" for name in missing)
            raise self.parse_error(
                f"the LM output has no {names} (signature {signature.signature_string!r})", text
            )
        return outputs

    def _typed(self, spec: FieldSpec, value: Any, text: str) -> Any:
        try:
            return parse_field_value(spec, value)
        except FieldValueError as exc:
            shown = value if isinstance(value, str) else repr(value)
            kind = annotation_name(spec.annotation)
            message = f"field `{spec.name}` value {_preview(shown)!r} is not a valid {kind}: {exc}"
            raise self.parse_error(message, text, field=spec.name) from exc

    def parse_error(self, message: str, text: str, *, field: str | None = None) -> AdapterParseError:
        preview = f"; LM output starts: {_preview(text)!r}" if text else "; the LM output is empty"
        return AdapterParseError(
            f"{type(self).__name__}: {message}{preview}", raw_text=text, adapter=self.name, field=field
        )

    # -- calling ----------------------------------------------------------------------------
    async def acall(
        self,
        lm: LM,
        signature: SignatureLike,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
        *,
        config: Mapping[str, Any] | None = None,
    ) -> AdapterResult:
        """Format, call ``lm.acomplete`` (this adapter's request options, then ``config`` on top), parse."""
        sig = ensure_signature(signature)
        messages = self.format(sig, demos, inputs)
        request = {**self.request_options(sig), **(config or {})}
        response = await lm.acomplete(messages, **request)
        return AdapterResult(outputs=self.parse(sig, response.text), response=response, adapter=self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __getstate__(self) -> dict[str, Any]:
        # The per-signature texts are a cache (of weak references): copies and pickles start empty.
        state = dict(self.__dict__)
        state.pop("_texts", None)
        return state


def section(spec: FieldSpec, value: Any) -> str:
    """One ``[[ ## name ## ]]`` section with its formatted value."""
    return f"[[ ## {spec.name} ## ]]\n{format_value(spec.annotation, value)}"


def demo_values(demo: Any, index: int = 0) -> dict[str, Any]:
    """A demo's fields as a dict: a Mapping, or an object with ``to_dict()`` or ``items()`` (an Example)."""
    if isinstance(demo, Mapping):
        return dict(demo)
    to_dict = getattr(demo, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    items = getattr(demo, "items", None)
    if callable(items):
        return dict(items())
    raise ConfigurationError(f"demo #{index} is a {type(demo).__name__}; demos must be mappings or Examples")


def _has_any(values: Mapping[str, Any], names: Mapping[str, Any]) -> bool:
    return any(name in values for name in names)


def _preview(text: str) -> str:
    return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "..."
