"""The adapter base: turns (signature, demos, inputs) into chat messages and LM text back into outputs.

The message layout is DSPy's: one system message (field list, structure, objective), each demo as a
user/assistant pair, then the current inputs as the last user message. Subclasses decide how the
structure is described, how answers look, and how they are parsed.

An adapter is called two ways:

- DSPy's: ``adapter(lm, lm_kwargs, signature, demos, inputs)`` (or ``await adapter.acall(...)``)
  calls ``lm(messages=..., **lm_kwargs)`` and returns one output dict per completion;
- dspex's hot path: ``await adapter.acall_result(lm, signature, demos, inputs, config=...)`` calls
  ``lm.acomplete`` once and returns an :class:`AdapterResult` (outputs, response, adapter name).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import textwrap
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from dspex.adapters._values import FieldValueError, parse_field_value
from dspex.adapters.types import AdapterResult
from dspex.adapters.types._tool_calling import parse_tool_call_outputs, plan_tool_calling, tool_call_fields
from dspex.adapters.types.base_type import expand_custom_types
from dspex.adapters.types.history import (
    format_conversation_history,
    history_field_name,
    signature_without_history,
)
from dspex.adapters.types.native import (
    DEFAULT_NATIVE_RESPONSE_TYPES,
    adapt_to_native_types,
    complete_native_outputs,
)
from dspex.adapters.utils import apply_output_field_defaults
from dspex.errors import AdapterParseError, ConfigurationError
from dspex.lm.base import call_lm
from dspex.lm.samples import call_lm_samples
from dspex.signatures import FieldSpec, Signature, ensure_signature
from dspex.utils.callback import with_callbacks

if TYPE_CHECKING:
    from dspex.lm import BaseLM

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
_ANNOUNCED_METHODS = {"format": "adapter_format", "parse": "adapter_parse"}


def _changes_single_call_only(cls: type[Adapter]) -> bool:
    """Whether ``cls`` (or a base below the one defining its ``acall_results``) overrides
    :meth:`Adapter.acall_result`: its samples then go through that single call, one by one."""

    def owner(name: str) -> int:
        return next(depth for depth, base in enumerate(cls.__mro__) if name in vars(base))

    return owner("acall_result") < owner("acall_results")


class Adapter:
    """Base class of the adapters. Adapters hold no per-call state: one instance serves every task.

    Subclasses implement the ``format_*`` methods DSPy's adapters have and :meth:`parse`;
    :meth:`request_options` adds request parameters (JSONAdapter's ``response_format``).
    ``callbacks``, ``use_native_function_calling``, ``native_response_types`` and
    ``parallel_tool_calls`` are DSPy's constructor arguments, kept on the instance.
    """

    name: ClassVar[str] = "base"
    use_native_function_calling: bool = False
    parallel_tool_calls: bool | None = None

    def __init__(
        self,
        callbacks: list[Any] | None = None,
        use_native_function_calling: bool = False,
        native_response_types: list[type] | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> None:
        self.callbacks: list[Any] = list(callbacks or [])
        self.use_native_function_calling = use_native_function_calling
        self.native_response_types: list[type] = list(native_response_types or DEFAULT_NATIVE_RESPONSE_TYPES)
        self.parallel_tool_calls = parallel_tool_calls

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # As DSPy: callbacks hear every adapter's format() and parse() (on_adapter_format_*,
        # on_adapter_parse_*), each override announced once however it reaches its base's.
        for method, kind in _ANNOUNCED_METHODS.items():
            if method in cls.__dict__:
                setattr(cls, method, with_callbacks(cls.__dict__[method], kind=kind, outermost_only=True))

    # -- DSPy's call ------------------------------------------------------------------------
    def __call__(
        self,
        lm: BaseLM,
        lm_kwargs: dict[str, Any],
        signature: SignatureLike,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """Format, call ``lm(messages=..., **lm_kwargs)``, parse: one output dict per completion."""
        original = ensure_signature(signature)
        sig, messages, kwargs = self.prepare_call(lm, lm_kwargs, original, demos, inputs)
        return self._call_postprocess(sig, original, lm(messages=messages, **kwargs), lm, kwargs)

    async def acall(
        self,
        lm: BaseLM,
        lm_kwargs: dict[str, Any],
        signature: SignatureLike,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """Async :meth:`__call__` (``await lm.acall(messages=..., **lm_kwargs)``)."""
        original = ensure_signature(signature)
        sig, messages, kwargs = self.prepare_call(lm, lm_kwargs, original, demos, inputs)
        return self._call_postprocess(sig, original, await lm.acall(messages=messages, **kwargs), lm, kwargs)

    def prepare_call(
        self,
        lm: Any,
        lm_kwargs: Mapping[str, Any],
        signature: SignatureLike,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
    ) -> tuple[type[Signature], list[Message], dict[str, Any]]:
        """The signature, the messages and the request options of one DSPy-style call."""
        sig = ensure_signature(signature)
        kwargs = dict(lm_kwargs)
        sig = plan_tool_calling(self, lm, kwargs, sig, inputs)  # tools into the request, or dropped
        sig = adapt_to_native_types(sig, self.native_response_types, lm, kwargs)  # Reasoning, Citations
        kwargs.update(self.request_options(sig, lm))
        if kwargs.get("parallel_tool_calls") is not None:
            kwargs.setdefault("tool_choice", "auto")
        return sig, self.format(sig, demos, inputs), kwargs

    def _call_postprocess(
        self,
        processed_signature: type[Signature],
        original_signature: type[Signature],
        outputs: Sequence[Any],
        lm: Any,
        lm_kwargs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """DSPy's step: parse against the signature sent, then complete to the one asked for."""
        original, calls_field = original_signature, tool_call_fields(original_signature)[1]
        if calls_field is None:
            values = self.parse_completions(processed_signature, outputs)
        else:  # the provider's tool_calls become the ToolCalls output
            values = parse_tool_call_outputs(self, processed_signature, original, outputs, calls_field)
        native = self.native_response_types
        return [
            complete_native_outputs(original_signature, processed_signature, native, output, value)
            for output, value in zip(outputs, values, strict=True)
        ]

    def parse_completions(self, signature: type[Signature], outputs: Sequence[Any]) -> list[dict[str, Any]]:
        """Each completion (a text, or a dict with ``text`` and maybe ``logprobs``) parsed into outputs."""
        values = []
        for output in outputs:
            text, logprobs = output, None
            if isinstance(output, Mapping):
                text, logprobs = output.get("text"), output.get("logprobs")
            if not text:
                detail = "The LM returned an empty or null response."
                raise self.parse_error(signature, str(output), detail)
            value = self.parse(signature, text)
            for name in signature.output_fields:
                value.setdefault(name, None)
            if logprobs:
                value["logprobs"] = logprobs
            values.append(value)
        return values

    # -- dspex's hot path -------------------------------------------------------------------
    async def acall_result(
        self,
        lm: BaseLM,
        signature: SignatureLike,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
        *,
        config: Mapping[str, Any] | None = None,
    ) -> AdapterResult:
        """Format, call the LM once (this adapter's request options, then ``config`` on top), parse.

        The call goes through :func:`dspex.lm.base.call_lm`: callbacks, history, and a DSPy-style
        LM's own ``__call__`` when it overrides it."""
        sig = ensure_signature(signature)
        if tool_call_fields(sig)[1] is not None:
            return await self._acall_result_with_tools(lm, sig, demos, inputs, config)
        messages = self.format(sig, demos, inputs)
        request = {**self.request_options(sig), **(config or {})}
        response = await call_lm(lm, messages, request)
        return AdapterResult(outputs=self.parse(sig, response.text), response=response, adapter=self.name)

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
        """Several samples of one call (a predictor's ``n``): format once, one LM call of one request
        per config (callbacks hear it as one call, with ``announced`` as its options), parse each.

        A subclass that changes :meth:`acall_result` only, and a signature with ``ToolCalls``, get
        one :meth:`acall_result` per config instead."""
        sig = ensure_signature(signature)
        if tool_call_fields(sig)[1] is not None or _changes_single_call_only(type(self)):
            calls = (self.acall_result(lm, sig, demos, inputs, config=config) for config in configs)
            return list(await asyncio.gather(*calls))
        messages = self.format(sig, demos, inputs)
        options = self.request_options(sig)
        requests = [{**options, **config} for config in configs]
        responses = await call_lm_samples(lm, messages, requests, {**options, **announced})
        return [
            AdapterResult(outputs=self.parse(sig, response.text), response=response, adapter=self.name)
            for response in responses
        ]

    async def _acall_result_with_tools(
        self,
        lm: BaseLM,
        sig: type[Signature],
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
        config: Mapping[str, Any] | None,
    ) -> AdapterResult:
        """:meth:`acall_result` for a signature with a ``ToolCalls`` output (DSPy's native tool calling)."""
        request = dict(config or {})
        processed = plan_tool_calling(self, lm, request, sig, inputs)
        processed = adapt_to_native_types(processed, self.native_response_types, lm, request)  # Reasoning
        request = {**self.request_options(processed), **request}
        if request.get("parallel_tool_calls") is not None:
            request.setdefault("tool_choice", "auto")
        response = await call_lm(lm, self.format(processed, demos, inputs), request)
        output = {"text": response.text, "tool_calls": response.tool_calls}
        outputs = self._call_postprocess(processed, sig, [output], lm, request)[0]
        return AdapterResult(outputs=outputs, response=response, adapter=self.name)

    def request_options(self, signature: SignatureLike, lm: Any = None) -> dict[str, Any]:
        """Extra request parameters this adapter needs (e.g. ``response_format``); none by default.

        ``lm`` is given on DSPy-style calls, where what the LM declares it supports decides.
        """
        return {}

    # -- formatting -------------------------------------------------------------------------
    @functools.partial(with_callbacks, kind="adapter_format", outermost_only=True)
    def format(
        self, signature: SignatureLike, demos: Sequence[Any], inputs: Mapping[str, Any]
    ) -> list[Message]:
        """The OpenAI-style messages for one call: system, demo pairs, then the current inputs."""
        sig = ensure_signature(signature)
        system = self.cached_text("system", sig, lambda: self.format_system_message(sig))
        messages: list[Message] = [{"role": "system", "content": system}]
        messages.extend(self.format_demos(sig, demos))
        history = history_field_name(sig)  # looked up once per signature
        if history is not None:  # earlier turns, then the request without the history field
            inputs, sig = dict(inputs), signature_without_history(sig)
            messages.extend(self.format_conversation_history(sig, history, inputs))
        content = self.format_user_message_content(sig, inputs, main_request=True)
        if content:
            messages.append({"role": "user", "content": content})
        return expand_custom_types(messages)  # Image/Audio/File... values become content parts

    def format_conversation_history(
        self, signature: type[Signature], history_field_name: str, inputs: dict[str, Any]
    ) -> list[Message]:
        """The ``History`` input as user/assistant turns (removed from ``inputs``); DSPy's hook."""
        return format_conversation_history(self, signature, history_field_name, inputs)

    def format_system_message(self, signature: type[Signature]) -> str:
        """Field list, then the structure of messages, then the objective (the instructions)."""
        return (
            f"{self.format_field_description(signature)}\n"
            f"{self.format_field_structure(signature)}\n"
            f"{self.format_task_description(signature)}"
        )

    def format_field_description(self, signature: type[Signature]) -> str:
        """The input and output fields, with their types and descriptions."""
        raise NotImplementedError

    def format_field_structure(self, signature: type[Signature]) -> str:
        """How inputs are given and how the answer must be laid out."""
        raise NotImplementedError

    def format_task_description(self, signature: type[Signature]) -> str:
        """The objective: the signature's instructions."""
        raise NotImplementedError

    def format_user_message_content(
        self,
        signature: type[Signature],
        inputs: Mapping[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        """A user turn: the inputs present in ``inputs`` (and for the current request, a format reminder)."""
        raise NotImplementedError

    def format_assistant_message_content(
        self,
        signature: type[Signature],
        outputs: Mapping[str, Any],
        missing_field_message: str | None = None,
    ) -> str:
        """An assistant turn: the outputs, each absent one as ``missing_field_message``."""
        raise NotImplementedError

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
            {"role": "user", "content": self.format_user_message_content(signature, values, prefix=prefix)},
            {
                "role": "assistant",
                "content": self.format_assistant_message_content(signature, values, missing),
            },
        ]

    def cached_text(self, what: str, signature: type[Signature], build: Callable[[], str]) -> str:
        """``build()`` once per signature class (the system message and the output reminder are
        the same for every call of a predictor). Signatures are immutable (``with_*`` make new
        classes); the guard on the fields and instructions objects covers code that swaps them."""
        texts = self.__dict__.get("_texts")
        if texts is None:
            texts = self.__dict__["_texts"] = weakref.WeakKeyDictionary()
        per_kind: dict[str, tuple[tuple[Any, ...], str]] | None = texts.get(signature)
        if per_kind is None:
            per_kind = texts[signature] = {}
        cached = per_kind.get(what)
        guard = (signature.instructions, signature.input_fields, signature.output_fields)
        if cached is not None:
            known = cached[0]
            if known[0] is guard[0] and known[1] is guard[1] and known[2] is guard[2]:
                return cached[1]
        text = build()
        per_kind[what] = (guard, text)
        return text

    # -- parsing ----------------------------------------------------------------------------
    @functools.partial(with_callbacks, kind="adapter_parse", outermost_only=True)
    def parse(self, signature: type[Signature], completion: str) -> dict[str, Any]:
        """The typed output values in ``completion``; AdapterParseError (with the raw text) when it cannot."""
        raise NotImplementedError

    def typed_outputs(
        self, signature: type[Signature], found: Mapping[str, Any], text: str
    ) -> dict[str, Any]:
        """Each output in ``found`` validated; a missing optional output gets its default (or None).

        A missing required output is a parse error.
        """
        typed = {
            name: self.typed_value(signature, spec, found[name], text)
            for name, spec in _present(signature, found)
        }
        outputs = apply_output_field_defaults(signature, typed)
        if outputs.keys() != signature.output_fields.keys():
            raise self.parse_error(signature, text, parsed=outputs)
        return outputs

    def typed_value(self, signature: type[Signature], spec: FieldSpec, value: Any, text: str) -> Any:
        """One output value as its field's type; a parse error naming the field when it is not one."""
        try:
            return parse_field_value(spec, value)
        except FieldValueError as exc:
            shown = value if isinstance(value, str) else repr(value)
            detail = f"Failed to parse field {spec.name} with value {_preview(shown)!r}: {exc}"
            raise self.parse_error(signature, text, detail, field=spec.name) from exc

    def parse_error(
        self,
        signature: type[Signature],
        text: str,
        detail: str = "",
        *,
        field: str | None = None,
        parsed: Mapping[str, Any] | None = None,
    ) -> AdapterParseError:
        """An AdapterParseError in DSPy's wording ("Adapter ChatAdapter failed to parse the LM response")."""
        adapter = type(self).__name__
        lines = [detail] if detail else []
        lines.append(f"Adapter {adapter} failed to parse the LM response.")
        lines.append(f"LM Response: {_preview(text)!r}" if text else "LM Response: (empty)")
        lines.append(
            f"Expected to find output fields in the LM response: [{', '.join(signature.output_fields)}]"
        )
        if parsed is not None:
            lines.append(f"Actual output fields parsed from the LM response: [{', '.join(parsed)}]")
        return AdapterParseError(
            "\n\n".join(lines),
            raw_text=text,
            adapter=adapter,
            field=field,
            signature=signature,
            parsed_result=dict(parsed) if parsed is not None else None,
        )

    def format_finetune_data(
        self,
        signature: type[Signature],
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
    ) -> dict[str, list[Any]]:
        """One call as OpenAI fine-tuning data: ``{"messages": [...format(), assistant answer]}``."""
        sig = ensure_signature(signature)
        answer = {"role": "assistant", "content": self.format_assistant_message_content(sig, outputs)}
        return {"messages": [*self.format(sig, demos, inputs), answer]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __getstate__(self) -> dict[str, Any]:
        # The per-signature texts are a cache (of weak references): copies and pickles start empty.
        state = dict(self.__dict__)
        state.pop("_texts", None)
        return state


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


def task_objective(signature: type[Signature]) -> str:
    """DSPy's objective line: the instructions, dedented, each line indented by eight spaces."""
    lines = textwrap.dedent(signature.instructions).splitlines()
    objective = "".join(f"\n{' ' * 8}{line}" for line in lines)
    return f"In adhering to this structure, your objective is: {objective}"


def _present(signature: type[Signature], found: Mapping[str, Any]) -> list[tuple[str, FieldSpec]]:
    return [(name, spec) for name, spec in signature.output_fields.items() if name in found]


def _has_any(values: Mapping[str, Any], names: Mapping[str, Any]) -> bool:
    return any(name in values for name in names)


def _preview(text: str) -> str:
    return text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "..."
