"""TwoStepAdapter: the main LM answers in plain prose; a second LM extracts the output fields from it.

    adapter = dspex.TwoStepAdapter(dspex.LM("openai/gpt-4o-mini"))
    dspex.configure(lm=dspex.LM("openai/o3-mini"), adapter=adapter)

Useful with reasoning models, which often do worse when asked for a structured answer. The first
prompt is DSPy 3.4.1's (a task description, then ``name: value`` turns); the extraction is a
:class:`ChatAdapter` call on ``text -> <the output fields>`` with no demos.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from dspex.adapters._render import field_descriptions
from dspex.adapters.base import Adapter, Message, SignatureLike
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.types import AdapterResult
from dspex.errors import AdapterParseError, ConfigurationError
from dspex.lm import BaseLM, LMResponse, Usage
from dspex.signatures import InputField, Signature, ensure_signature, make_signature

__all__ = ["TwoStepAdapter"]

_EXTRACT_INSTRUCTIONS = (
    "The input is a text that should contain all the necessary information to produce the fields {fields}. "
    "            Your job is to extract the fields from the text verbatim. "
    "Extract precisely the appropriate value (content) for each field."
)


class TwoStepAdapter(Adapter):
    """A free-form first call with the main LM, then field extraction with ``extraction_model``."""

    name: ClassVar[str] = "two_step"

    def __init__(self, extraction_model: BaseLM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(extraction_model, BaseLM):
            raise ConfigurationError("extraction_model must be an instance of dspex.BaseLM (e.g. a dspex.LM)")
        self.extraction_model = extraction_model

    # -- formatting -------------------------------------------------------------------------
    def format(
        self, signature: SignatureLike, demos: Sequence[Any], inputs: Mapping[str, Any]
    ) -> list[Message]:
        """The task description as the system message, the demos, then the inputs as ``name: value``."""
        sig = ensure_signature(signature)
        system = self.cached_text("system", sig, lambda: self.format_task_description(sig))
        return [
            {"role": "system", "content": system},
            *self.format_demos(sig, demos),
            {"role": "user", "content": self.format_user_message_content(sig, inputs)},
        ]

    def format_task_description(self, signature: type[Signature]) -> str:
        parts = [
            "You are a helpful assistant that can solve tasks based on user input.",
            f"As input, you will be provided with:\n{field_descriptions(signature.input_fields)}",
            f"Your outputs must contain:\n{field_descriptions(signature.output_fields)}",
            "You should lay out your outputs in detail so that your answer can be understood by "
            "another agent",
        ]
        if signature.instructions:
            parts.append(f"Specific instructions: {signature.instructions}")
        return "\n".join(parts)

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: Mapping[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        # No format reminder on the main request: the first step asks for no particular format.
        lines = [f"{name}: {inputs[name]}" for name in signature.input_fields if name in inputs]
        return "\n\n".join([prefix, *lines, suffix]).strip()

    def format_assistant_message_content(
        self,
        signature: type[Signature],
        outputs: Mapping[str, Any],
        missing_field_message: str | None = None,
    ) -> str:
        lines = [f"{name}: {outputs[name]}" for name in signature.output_fields if name in outputs]
        return "\n\n".join(lines).strip()

    # -- the second step --------------------------------------------------------------------
    def parse(self, signature: SignatureLike, completion: str) -> dict[str, Any]:
        """The output fields the extraction model reads out of the main LM's ``completion``."""
        sig = ensure_signature(signature)
        try:
            extracted = ChatAdapter()(
                self.extraction_model, {}, extractor_signature(sig), [], {"text": completion}
            )
        except AdapterParseError as exc:
            raise self._extraction_error(sig, completion, exc) from exc
        return extracted[0]

    async def aparse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        """Async :meth:`parse`."""
        try:
            extracted = await ChatAdapter().acall(
                self.extraction_model, {}, extractor_signature(signature), [], {"text": completion}
            )
        except AdapterParseError as exc:
            raise self._extraction_error(signature, completion, exc) from exc
        return extracted[0]

    def _extraction_error(
        self, signature: type[Signature], text: str, exc: AdapterParseError
    ) -> AdapterParseError:
        detail = f"Failed to parse response from the original completion: {exc}"
        return self.parse_error(signature, text, detail)

    # -- calls ------------------------------------------------------------------------------
    async def acall(
        self,
        lm: BaseLM,
        lm_kwargs: dict[str, Any],
        signature: SignatureLike,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        sig, messages, kwargs = self.prepare_call(lm, lm_kwargs, signature, demos, inputs)
        outputs = await lm.acall(messages=messages, **kwargs)
        return [await self._aextract_one(sig, output) for output in outputs]

    async def acall_result(
        self,
        lm: BaseLM,
        signature: SignatureLike,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
        *,
        config: Mapping[str, Any] | None = None,
    ) -> AdapterResult:
        """The first call through DSPy's ``lm.acall`` (usage is recorded there), then the extraction."""
        sig = ensure_signature(signature)
        outputs = await lm.acall(messages=self.format(sig, demos, inputs), **dict(config or {}))
        first = outputs[0]
        text = str(first.get("text") or "") if isinstance(first, Mapping) else str(first)
        response = LMResponse(text=text, model=str(getattr(lm, "model", "")), usage=Usage())
        return AdapterResult(
            outputs=await self._aextract_one(sig, first), response=response, adapter=self.name
        )

    async def _aextract_one(self, signature: type[Signature], output: Any) -> dict[str, Any]:
        text, logprobs = output, None
        if isinstance(output, Mapping):
            text, logprobs = output.get("text"), output.get("logprobs")
        value = await self.aparse(signature, str(text or ""))
        if logprobs is not None:
            value["logprobs"] = logprobs
        return value

    def __repr__(self) -> str:
        return f"TwoStepAdapter(extraction_model={self.extraction_model!r})"


def extractor_signature(signature: type[Signature]) -> type[Signature]:
    """``text -> <signature's output fields>``, with instructions to extract them verbatim."""
    fields: dict[str, Any] = {"text": (str, InputField())}
    fields.update({name: (spec.annotation, spec) for name, spec in signature.output_fields.items()})
    names = ", ".join(f"`{name}`" for name in signature.output_fields)
    return make_signature(fields, _EXTRACT_INSTRUCTIONS.format(fields=names))
