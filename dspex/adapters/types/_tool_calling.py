"""Native function calling in the adapters: tools into the request, ``tool_calls`` out of the response.

As DSPy 3.4.1's adapters do: with ``use_native_function_calling``, a signature with a ``list[Tool]``
input and a ``ToolCalls`` output sends the tools as the request's ``tools`` (both fields leave the
prompt), and the provider's ``tool_calls`` become the ``ToolCalls`` output. Which fields a signature
has is worked out once per signature class, so signatures without tools pay one dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, get_args, get_origin

import json_repair

from dspex.adapters.types._cache import SignatureCache
from dspex.adapters.types.tool import Tool, ToolCalls
from dspex.adapters.utils import apply_output_field_defaults
from dspex.errors import AdapterParseError, ConfigurationError

if TYPE_CHECKING:
    from dspex.signatures import Signature

__all__ = [
    "TOOL_OPTIONS",
    "parse_tool_call_outputs",
    "plan_tool_calling",
    "provider_tool_call",
    "tool_call_fields",
]

# Request options only native function calling uses; without it they are dropped, as DSPy does.
TOOL_OPTIONS: tuple[str, ...] = ("tools", "tool_choice", "parallel_tool_calls")

# per signature class: (its Tool / list[Tool] input field, its ToolCalls output field), either None
_TOOL_FIELDS: SignatureCache[tuple[str | None, str | None]] = SignatureCache()


def tool_call_fields(signature: type[Signature]) -> tuple[str | None, str | None]:
    """The names of the signature's tools input and ``ToolCalls`` output (None when absent), cached."""
    return _TOOL_FIELDS.get(signature, signature.fields, _find_tool_fields)


def _find_tool_fields(signature: Any) -> tuple[str | None, str | None]:
    tools = next((n for n, f in signature.input_fields.items() if _is_tools(f.annotation)), None)
    calls = next((n for n, f in signature.output_fields.items() if f.annotation is ToolCalls), None)
    return tools, calls


def _is_tools(annotation: Any) -> bool:
    if annotation is Tool:
        return True
    return get_origin(annotation) is list and get_args(annotation)[:1] == (Tool,)


def plan_tool_calling(
    adapter: Any, lm: Any, lm_kwargs: dict[str, Any], signature: type[Signature], inputs: Mapping[str, Any]
) -> type[Signature]:
    """DSPy's request planning for tools: the signature to format; ``lm_kwargs`` changed in place.

    Without ``adapter.use_native_function_calling`` the tool options are dropped. With it, a
    signature with a ``ToolCalls`` output and an LM that supports function calling sends the tools
    as the request's ``tools`` (and the adapter's ``parallel_tool_calls`` unless the call sets it),
    and both fields leave the signature; any other signature asking for tool calls drops the options.
    """
    if not adapter.use_native_function_calling:
        for key in TOOL_OPTIONS:
            lm_kwargs.pop(key, None)
        return signature
    tools_field, calls_field = tool_call_fields(signature)
    if calls_field is None:
        return signature
    if tools_field is None:
        raise ConfigurationError(
            f"You provided an output field {calls_field} to receive the tool calls information, but did not "
            "provide any tools as the input. Please provide a list of tools as the input by adding an input "
            "field with type `list[dspy.Tool]`."
        )
    if not getattr(lm, "supports_function_calling", False):
        for key in TOOL_OPTIONS:
            lm_kwargs.pop(key, None)
        return signature
    tools = inputs.get(tools_field) or []
    tools = tools if isinstance(tools, list) else [tools]
    lm_kwargs["tools"] = [_as_tool(tool).format_as_litellm_function_call() for tool in tools]
    if adapter.parallel_tool_calls is not None and lm_kwargs.get("parallel_tool_calls") is None:
        lm_kwargs["parallel_tool_calls"] = adapter.parallel_tool_calls
    return signature.delete(calls_field).delete(tools_field)


def _as_tool(tool: Any) -> Tool:
    return tool if isinstance(tool, Tool) else Tool(tool)


def parse_tool_call_outputs(
    adapter: Any,
    processed: type[Signature],
    original: type[Signature],
    outputs: Sequence[Any],
    calls_field: str,
) -> list[dict[str, Any]]:
    """Each completion's outputs, its provider ``tool_calls`` (if any) as ``calls_field``.

    A completion with tool calls may have no text, or text that is not in the adapter's format
    (the calls are what counts): its other outputs then take their defaults. One without tool
    calls is parsed as usual (an empty text is an AdapterParseError).
    """
    values = []
    for output in outputs:
        raw_calls = output.get("tool_calls") if isinstance(output, Mapping) else None
        if not raw_calls:
            values.append(adapter.parse_completions(processed, [output])[0])
            continue
        value = _parse_beside_tool_calls(adapter, processed, output.get("text"))
        value = apply_output_field_defaults(original, value)
        for name in original.output_fields:
            value.setdefault(name, None)
        value[calls_field] = ToolCalls.from_dict_list([provider_tool_call(call) for call in raw_calls])
        if output.get("logprobs"):
            value["logprobs"] = output["logprobs"]
        values.append(value)
    return values


def _parse_beside_tool_calls(adapter: Any, signature: type[Signature], text: Any) -> dict[str, Any]:
    if not text or not signature.output_fields:
        return {}
    try:
        parsed: dict[str, Any] = adapter.parse(signature, text)
    except AdapterParseError:
        return {}
    return parsed


def provider_tool_call(call: Any) -> dict[str, Any]:
    """``{"id", "name", "args"}`` of a provider's tool call (Chat Completions or Responses shape).

    The Responses API puts ``name`` and ``arguments`` at the top and has both an item ``id`` and
    the ``call_id`` results must name: ``call_id`` wins. Arguments that are not valid JSON are repaired.
    """
    function = _get(call, "function") or {}
    arguments = _get(function, "arguments") or _get(call, "arguments") or {}
    if isinstance(arguments, str):
        arguments = json_repair.loads(arguments)
    return {
        "id": _get(call, "call_id") or _get(call, "id"),
        "name": _get(function, "name") or _get(call, "name"),
        "args": arguments if isinstance(arguments, dict) else {},
    }


def _get(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(key)
    return getattr(value, key, None)
