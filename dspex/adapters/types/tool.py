"""``dspex.Tool``, ``dspex.ToolCalls`` and ``dspex.ToolCallResults``: tool (function) calling.

A :class:`Tool` wraps a function and describes it to the LM by name, docstring and a JSON schema per
argument (read from the type hints); calling it validates the arguments against that schema first.

    def search(query: str, limit: int = 3) -> list[str]:
        \"\"\"Search the web.\"\"\"
        ...

    tool = dspex.Tool(search)
    tool.args          # {"query": {"type": "string"}, "limit": {"type": "integer", "default": 3}}
    await tool.acall(query="kafka")

A signature with a ``list[dspex.Tool]`` input and a ``dspex.ToolCalls`` output asks the LM which tools
to call; with native function calling the tools travel in the request's ``tools`` and the calls come
back in the response's ``tool_calls`` (:mod:`dspex.adapters.types._tool_calling` does that for the adapters).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar, get_origin, get_type_hints

import json_repair
import pydantic
import pydantic_core
from jsonschema import ValidationError as SchemaValidationError
from jsonschema import validate as validate_schema
from pydantic import TypeAdapter

from dspex._sync import run_in_thread
from dspex.adapters.types.base_type import Type
from dspex.adapters.types.mcp_tools import MCPToolClient, ResultMode, mcp_caller, mcp_field
from dspex.errors import ConfigurationError, InputError
from dspex.utils.callback import with_callbacks

__all__ = [
    "TOOL_CALLS_HINT",
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "convert_input_schema_to_tool_args",
]

# what the adapters' answer-format reminder says of a ToolCalls output (DSPy's words)
TOOL_CALLS_HINT = ' (must be a JSON object like {"tool_calls": [{"name": "...", "args": {...}}]})'

# JSON schema type names -> the Python type an argument is parsed to
_TYPE_MAPPING: dict[str, type] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}


class Tool(Type):
    """A function the LM may call: its name, description and a JSON schema per argument.

    Whatever is not given is read from ``func``: the name from ``__name__``, the description from the
    docstring, the schemas from the type hints and defaults (an unhinted argument takes any value).
    ``arg_desc`` adds a ``description`` to an argument's schema. Calling the tool (``tool(**kwargs)`` or
    ``await tool.acall(**kwargs)``) checks each argument against its schema (``ValueError`` if it does
    not fit) and converts it to the hinted type (a dict becomes the pydantic model the function takes).
    """

    callback_kind: ClassVar[str] = "tool"  # callbacks hear on_tool_start / on_tool_end

    func: Callable[..., Any]
    name: str | None = None
    desc: str | None = None
    args: dict[str, Any] | None = None
    arg_types: dict[str, Any] | None = None
    arg_desc: dict[str, str] | None = None
    has_kwargs: bool = False

    _parsers: dict[str, TypeAdapter[Any]] = pydantic.PrivateAttr(default_factory=dict)

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        desc: str | None = None,
        args: dict[str, Any] | None = None,
        arg_types: dict[str, Any] | None = None,
        arg_desc: dict[str, str] | None = None,
    ) -> None:
        # one mapping: the pydantic mypy plugin does not see a subclass's fields in Type.__init__
        fields: dict[str, Any] = {"func": func, "name": name, "desc": desc, "args": args}
        fields.update(arg_types=arg_types, arg_desc=arg_desc)
        super().__init__(**fields)
        self._describe(func, arg_desc)

    def _describe(self, func: Callable[..., Any], arg_desc: dict[str, str] | None) -> None:
        """Fill in what the caller left out from the function's signature, hints and docstring."""
        target = func if inspect.isfunction(func) or inspect.ismethod(func) else type(func).__call__
        parameters = inspect.signature(func).parameters
        hints = get_type_hints(target)
        args: dict[str, Any] = {}
        arg_types: dict[str, Any] = {}
        for param in parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            hint = hints.get(param.name, Any)
            arg_types[param.name] = hint
            args[param.name] = _argument_schema(hint, param.default, (arg_desc or {}).get(param.name))
        self.name = self.name or getattr(func, "__name__", type(func).__name__)
        self.desc = self.desc or getattr(func, "__doc__", None) or getattr(target, "__doc__", None) or ""
        self.args = self.args if self.args is not None else args
        self.arg_types = self.arg_types if self.arg_types is not None else arg_types
        self.has_kwargs = any(p.kind is p.VAR_KEYWORD for p in parameters.values())

    # -- calling ------------------------------------------------------------------------------

    def parse_arguments(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments for ``func``: checked against the schemas, converted to the hinted types.

        ``ValueError`` (an :class:`~dspex.errors.InputError`) naming the first argument that does not fit.
        """
        args = self.args or {}
        for key, value in kwargs.items():
            schema = args.get(key)
            if schema is None:
                if self.has_kwargs:
                    continue
                raise InputError(f"Arg {key} is not in the tool's args.")
            _check_against_schema(key, value, schema)
        return {key: self._convert(key, value) for key, value in kwargs.items()}

    def _convert(self, key: str, value: Any) -> Any:
        hint = (self.arg_types or {}).get(key, Any)
        if hint is Any:
            return value
        parser = self._parsers.get(key)
        if parser is None:  # built once per argument: TypeAdapter construction is not cheap
            parser = self._parsers[key] = TypeAdapter(hint)
        try:
            return parser.validate_python(value)
        except pydantic.ValidationError as exc:
            raise InputError(f"Arg {key} is invalid: {exc}") from exc

    def _validate_and_parse_args(self, **kwargs: Any) -> dict[str, Any]:
        """DSPy's name for :meth:`parse_arguments`."""
        return self.parse_arguments(kwargs)

    @with_callbacks
    def __call__(self, **kwargs: Any) -> Any:
        """Call the tool; an async tool only with ``allow_tool_async_sync_conversion`` set, outside a loop."""
        result = self.func(**self.parse_arguments(kwargs))
        if not inspect.iscoroutine(result):
            return result
        # configuration imports the adapters, which import this module: read the setting late (rare path)
        from dspex.configuration import current_settings

        if not current_settings().allow_tool_async_sync_conversion:
            result.close()
            raise ConfigurationError(
                "You are calling `__call__` on an async tool, please use `acall` instead or enable "
                "async-to-sync conversion with `dspex.configure(allow_tool_async_sync_conversion=True)` "
                "or `with dspex.context(allow_tool_async_sync_conversion=True):`."
            )
        return _run_outside_loop(result)

    @with_callbacks
    async def acall(self, **kwargs: Any) -> Any:
        """Call the tool: an async one is awaited, a sync one runs in a worker thread.

        DSPy runs a sync tool inline; here it goes to a thread so that a slow tool does not stall
        the other calls sharing the event loop (a worker serves many tasks at once).
        """
        parsed = self.parse_arguments(kwargs)
        if inspect.iscoroutinefunction(self.func):
            return await self.func(**parsed)
        result = await run_in_thread(self.func, **parsed)
        return await result if inspect.isawaitable(result) else result

    # -- describing ---------------------------------------------------------------------------

    def format(self) -> str:
        """The tool as a line of text for a prompt."""
        return str(self)

    def format_as_litellm_function_call(self) -> dict[str, Any]:
        """The tool as an OpenAI ``tools`` entry (arguments with a default are not required)."""
        args = self.args or {}
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.desc,
                "parameters": {
                    "type": "object",
                    "properties": args,
                    "required": [name for name, schema in args.items() if "default" not in schema],
                },
            },
        }

    @classmethod
    def from_mcp_tool(cls, session: MCPToolClient, tool: Any, *, result_mode: ResultMode = "text") -> Tool:
        """A tool that calls ``tool`` (an ``mcp.types.Tool``) through ``session``, an MCP client.

        ``session`` is anything with an async ``call_tool(name, arguments=...)``: the ``mcp``
        package's ``ClientSession`` or its ``Client``, kept open while the tool is in use. The tool's
        input schema gives the arguments (:func:`convert_input_schema_to_tool_args`); a call returns
        the result's text (one part: a string; several: a list), or with ``result_mode="structured"``
        the structured content when the server sent one. A result the server flags as an error
        raises ``RuntimeError`` with its text (an agent's observation).

            async with mcp.Client("http://127.0.0.1:8000/mcp") as client:
                listed = await client.list_tools()
                tools = [dspex.Tool.from_mcp_tool(client, tool) for tool in listed.tools]
        """
        schema = mcp_field(tool, "input_schema", "inputSchema", default={}) or {}
        args, arg_types, arg_desc = convert_input_schema_to_tool_args(schema)
        return cls(
            func=mcp_caller(session, tool.name, result_mode),
            name=tool.name,
            desc=tool.description,
            args=args,
            arg_types=arg_types,
            arg_desc=arg_desc,
        )

    @classmethod
    def from_langchain(cls, tool: Any) -> Tool:
        """A tool calling a LangChain ``BaseTool`` (through its ``ainvoke``)."""
        schema = tool.args_schema.model_json_schema() if tool.args_schema else {}
        args, arg_types, arg_desc = convert_input_schema_to_tool_args(schema)

        async def call(**arguments: Any) -> Any:
            return await tool.ainvoke(arguments)

        return cls(
            func=call,
            name=tool.name,
            desc=tool.description,
            args=args,
            arg_types=arg_types,
            arg_desc=arg_desc,
        )

    def __repr__(self) -> str:
        return f"Tool(name={self.name}, desc={self.desc}, args={self.args})"

    def __str__(self) -> str:
        # DSPy's wording, kept so that prompts listing tools match it byte for byte
        desc = f", whose description is <desc>{self.desc}</desc>.".replace("\n", "  ") if self.desc else "."
        return f"{self.name}{desc} It takes arguments {self.args}."


def _argument_schema(hint: Any, default: Any, description: str | None) -> dict[str, Any]:
    origin = get_origin(hint) or hint
    if isinstance(origin, type) and issubclass(origin, pydantic.BaseModel):
        schema = origin.model_json_schema()
    else:
        schema = TypeAdapter(hint).json_schema()
    schema = _resolve_json_schema_reference(schema)
    if default is not inspect.Parameter.empty:
        schema["default"] = _to_json_default(default)
    if description:
        schema["description"] = description
    return schema


def _check_against_schema(key: str, value: Any, schema: Mapping[str, Any]) -> None:
    if schema.get("type") in (None, "Any"):
        return  # no type to check: anything goes, as in DSPy
    try:
        # pydantic models (also nested in lists) become the JSON the schema describes
        instance = pydantic_core.to_jsonable_python(value, fallback=lambda item: item)
        validate_schema(instance=instance, schema=schema)
    except SchemaValidationError as exc:
        raise InputError(f"Arg {key} is invalid: {exc.message}") from exc


def _run_outside_loop(coroutine: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    coroutine.close()
    raise ConfigurationError(
        "You are calling `__call__` on an async tool from within a running event loop, which cannot be "
        "converted to a sync call, even with `allow_tool_async_sync_conversion` enabled. Please use "
        "`await tool.acall(...)` instead."
    )


def _to_json_default(value: Any) -> Any:
    """A parameter default in its JSON form (an Enum member as its value, a Decimal as a number)."""
    if isinstance(value, Decimal):
        return float(value)
    return pydantic_core.to_jsonable_python(value, fallback=lambda item: item)


def _resolve_json_schema_reference(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with every ``$ref`` replaced by its definition, and ``$defs`` dropped."""
    defs = schema.get("$defs")
    if defs is None:
        return schema

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].split("/")[-1]])
            return {key: resolve(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def convert_input_schema_to_tool_args(
    schema: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """A tool's ``(args, arg_types, arg_desc)`` from a JSON schema of its input object (MCP, LangChain).

    A required argument's description ends in ``" (Required)"``; one without a description says so.
    """
    args: dict[str, Any] = {}
    arg_types: dict[str, Any] = {}
    arg_desc: dict[str, str] = {}
    required = set(schema.get("required", ()))
    defs = schema.get("$defs") or {}
    for name, prop in (schema.get("properties") or {}).items():
        if defs:
            prop = _resolve_json_schema_reference({"$defs": defs, **prop})
        args[name] = prop
        arg_types[name] = _TYPE_MAPPING.get(prop.get("type"), Any)
        arg_desc[name] = prop.get("description", "No description provided.")
        if name in required:
            arg_desc[name] += " (Required)"
    return args, arg_types, arg_desc


# -- tool calls ---------------------------------------------------------------------------------


class ToolCalls(Type):
    """The tools the LM chose to call, each with its arguments (and the provider's call ``id``).

    Accepts DSPy's shape (``{"tool_calls": [{"name": ..., "args": {...}}]}``), a bare list of calls,
    one call, or the provider's shape (``{"function": {"name": ..., "arguments": "<json>"}}``).
    ``tool_call_results`` may carry the results along (kept in history, never shown to the LM).
    """

    class ToolCall(Type):
        """One call: the tool's ``name`` and its ``args``; ``id`` is the provider's call id, if any."""

        id: str | None = None
        name: str
        args: dict[str, Any] = pydantic.Field(json_schema_extra={"additionalProperties": True})

        @classmethod
        def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
            return _schema_without(super().__get_pydantic_json_schema__(core_schema, handler), handler, "id")

        def format(self) -> dict[str, Any]:  # type: ignore[override]
            """The call as the LM writes it (without the id)."""
            return {"name": self.name, "args": self.args}

        def execute(self, functions: Mapping[str, Any] | Sequence[Tool] | None = None) -> Any:
            """Run the call with the function of that name and return what it returns.

            ``functions`` maps names to functions, or lists :class:`Tool` objects; when it is None the
            caller's local then global names are searched (DSPy does this; pass ``functions`` in new code).
            ``ValueError`` if there is no such function; ``RuntimeError`` wrapping what the function raised.
            """
            func = _find_function(self.name, functions, inspect.currentframe())
            if func is None:
                raise InputError(
                    f"Tool function '{self.name}' not found. Please pass the tool functions to the "
                    "`execute` method."
                )
            try:
                return func(**(self.args or {}))
            except Exception as exc:  # re-raised with the tool's name, the original as the cause
                raise RuntimeError(f"Error executing tool '{self.name}': {exc}") from exc

    tool_calls: list[ToolCall]
    tool_call_results: Any | None = None

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        return _schema_without(
            super().__get_pydantic_json_schema__(core_schema, handler), handler, "tool_call_results"
        )

    @classmethod
    def from_dict_list(cls, tool_calls_dicts: Sequence[Mapping[str, Any]]) -> ToolCalls:
        """From a list of ``{"name": ..., "args": {...}}`` dicts (or provider-shaped ones)."""
        return cls(tool_calls=[cls.ToolCall(**_normalize_call(item)) for item in tool_calls_dicts])

    @classmethod
    def description(cls) -> str:
        """What the adapters tell the LM about this field's format."""
        return (
            "Tool calls must be a JSON object with `tool_calls`, a list of calls. "
            "Each call must include `name` and `args`. "
            'Example: {"tool_calls": [{"name": "search", "args": {"query": "cats"}}]}'
        )

    def format(self) -> dict[str, Any]:  # type: ignore[override]
        """The calls as the LM writes them."""
        return {"tool_calls": [call.format() for call in self.tool_calls]}

    @pydantic.model_serializer()
    def serialize_model(self) -> Any:
        """The formatted calls, plus the results (as JSON) when they are carried along."""
        data: dict[str, Any] = self.format()
        if self.tool_call_results is not None:
            results = self.tool_call_results
            data["tool_call_results"] = TypeAdapter(type(results)).dump_python(results, mode="json")
        return data

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any) -> Any:
        """Accept the shapes listed in the class docstring; ``ValueError`` for anything else."""
        if isinstance(data, cls):
            return data
        if isinstance(data, list) and all(isinstance(item, dict) and _is_call(item) for item in data):
            return {"tool_calls": [_normalize_call(item) for item in data]}
        if isinstance(data, dict):
            if isinstance(data.get("tool_calls"), list):
                calls = [_normalize_call(i) if isinstance(i, dict) else i for i in data["tool_calls"]]
                normalized: dict[str, Any] = {"tool_calls": calls}
                if "tool_call_results" in data:
                    normalized["tool_call_results"] = data["tool_call_results"]
                return normalized
            if "tool_calls" not in data and _is_call(data):
                return {"tool_calls": [_normalize_call(data)]}
        raise ValueError(f"Received invalid value for `dspex.ToolCalls`: {data}")


class ToolCallResults(pydantic.BaseModel):
    """What the tool calls returned, each tied to its call by ``call_id`` and ``name``."""

    class ToolCallResult(pydantic.BaseModel):
        """One call's result; ``is_error`` when ``value`` is the error the tool raised."""

        call_id: str | None = None
        name: str
        value: Any
        is_error: bool = False

    tool_call_results: list[ToolCallResult]

    @classmethod
    def from_tool_calls_and_values(
        cls,
        tool_calls: Sequence[ToolCalls.ToolCall] | ToolCalls,
        values: Sequence[Any],
        is_errors: Sequence[bool] | None = None,
    ) -> ToolCallResults:
        """Pair each call with its value (and error flag); ``ValueError`` when the lengths differ."""
        calls = tool_calls.tool_calls if isinstance(tool_calls, ToolCalls) else list(tool_calls)
        if len(calls) != len(values):
            raise InputError("`tool_calls` and `values` must have the same length.")
        errors = [False] * len(calls) if is_errors is None else list(is_errors)
        if len(errors) != len(calls):
            raise InputError("`is_errors` must have the same length as `tool_calls` when provided.")
        return cls(
            tool_call_results=[
                cls.ToolCallResult(call_id=call.id, name=call.name, value=value, is_error=error)
                for call, value, error in zip(calls, values, errors, strict=True)
            ]
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any) -> Any:
        """Accept a list of results, ``{"tool_call_results": [...]}`` or one result dict."""
        if isinstance(data, cls):
            return data
        if isinstance(data, list):
            return {"tool_call_results": data}
        if isinstance(data, dict):
            if "tool_call_results" in data:
                return data
            if {"name", "value"} <= data.keys():
                return {"tool_call_results": [data]}
        raise ValueError(f"Received invalid value for `dspex.ToolCallResults`: {data}")


def _schema_without(schema: dict[str, Any], handler: Any, field: str) -> dict[str, Any]:
    """A model's JSON schema without ``field`` (an internal one the LM should not be asked for).

    The class docstring (pydantic's ``description``) is left out too: it is written for programmers.
    """
    resolved = handler.resolve_ref_schema(schema)
    resolved.pop("description", None)
    properties = resolved.get("properties")
    if isinstance(properties, dict):
        properties.pop(field, None)
    required = resolved.get("required")
    if isinstance(required, list):
        resolved["required"] = [name for name in required if name != field]
    return schema


def _is_call(data: Mapping[str, Any]) -> bool:
    return ("name" in data and ("args" in data or "arguments" in data)) or "function" in data


def _normalize_call(data: Any) -> dict[str, Any]:
    """``{"id", "name", "args"}`` from DSPy's shape or the provider's (arguments as a JSON string)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"Received invalid tool call value for `dspex.ToolCalls`: {data}")
    if "function" in data:
        function = data.get("function") or {}
        if not isinstance(function, Mapping):
            raise ValueError(f"Received invalid function value for `dspex.ToolCalls`: {function}")
        arguments = function.get("arguments", {})
        name = function.get("name") or data.get("name")
    else:
        arguments = data.get("args", data.get("arguments", {}))
        name = data.get("name")
    if isinstance(arguments, str):
        arguments = json_repair.loads(arguments)
    if not isinstance(arguments, dict):
        arguments = {}
    return {"id": data.get("id") or data.get("call_id"), "name": name, "args": arguments}


def _find_function(name: str, functions: Any, frame: Any) -> Any:
    if functions is None:
        # DSPy looks the name up where execute() was called; done here once, on request only
        caller = frame.f_back if frame is not None else None
        try:
            if caller is None:
                return None
            return caller.f_locals.get(name) or caller.f_globals.get(name)
        finally:
            del frame, caller
    if isinstance(functions, Mapping):
        return functions.get(name)
    return next((tool.func for tool in functions if getattr(tool, "name", None) == name), None)
