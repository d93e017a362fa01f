"""What an ``RLM``'s code can call on the host: ``llm_query``, ``llm_query_batched``, the user's tools.

The interpreter calls these synchronously from the thread that runs ``execute``; each one goes
back to the event loop with :func:`~dspex._sync.run_sync`, so a sub-LM query is an ordinary dspex
LM call (``BaseLM.acall``: rate limited, retried, counted in usage and priced) and a batch is
``asyncio.gather`` over its prompts, not a thread per prompt.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import keyword
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex._sync import run_in_thread, run_sync
from dspex.adapters.types.tool import Tool
from dspex.configuration import current_settings
from dspex.errors import ConfigurationError, LMError
from dspex.lm import BaseLM, LMResponse

__all__ = [
    "FACTORY_KEYWORD",
    "RESERVED_RESULT_NAMES",
    "RESERVED_SANDBOX_NAMES",
    "LLMCallBudget",
    "check_namespace",
    "interpreter_tool",
    "make_llm_tools",
    "normalize_tools",
    "query_lm",
]

# Names the REPL defines for the code; neither a tool nor an input may take them.
RESERVED_SANDBOX_NAMES = frozenset({"llm_query", "llm_query_batched", "SUBMIT", "print"})
# Fields RLM adds to its result.
RESERVED_RESULT_NAMES = frozenset({"trajectory", "final_reasoning"})
# The call-time keyword of RLM.aforward, so not an input name.
FACTORY_KEYWORD = "interpreter_factory"
_NO_LM_MESSAGE = "No LM configured. Use dspy.configure(lm=...) or pass sub_lm to RLM."
DEFAULT_BATCH_CONCURRENCY = 8


class LLMCallBudget:
    """The ceiling on sub-LM calls for one RLM call, shared by every path the code can reach.

    Thread safe: the interpreter may call tools from several threads at once.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def reserve(self, n: int = 1) -> None:
        """Count ``n`` more calls, or raise ``RuntimeError`` (shown to the code) past the limit."""
        with self._lock:
            if self._used + n > self._limit:
                raise RuntimeError(
                    f"LLM call limit exceeded: {self._used} + {n} > {self._limit}. "
                    "Use Python code for aggregation instead of making more LLM calls."
                )
            self._used += n


# -- the sub-LM --------------------------------------------------------------------------------


async def query_lm(lm: Any, prompt: str) -> str:
    """The text of one answer of ``lm`` (else the configured LM) to ``prompt``.

    A :class:`~dspex.BaseLM` answers through ``acall``; any other callable (DSPy allows one) is
    called with the prompt in a worker thread. ``ConfigurationError`` when there is no LM.
    """
    target = lm if lm is not None else current_settings().lm
    if target is None:
        raise ConfigurationError(_NO_LM_MESSAGE)
    if isinstance(target, BaseLM):
        response: Any = await target.acall(prompt)
    else:
        response = await run_in_thread(target, prompt)
    return _response_text(response)


def _response_text(response: Any) -> str:
    if isinstance(response, LMResponse):
        text: Any = response.text
    elif isinstance(response, list) and response:
        first = response[0]
        text = first.get("text") if isinstance(first, Mapping) else first
    else:
        raise TypeError(
            "Sub-LM must return dspy.LMResponse or a non-empty list of text outputs, "
            f"got {type(response).__name__}."
        )
    if not isinstance(text, str):
        raise TypeError(f"Sub-LM response must contain text, got {type(text).__name__}.")
    return text


def make_llm_tools(
    lm: Any, budget: LLMCallBudget, concurrency: int = DEFAULT_BATCH_CONCURRENCY
) -> dict[str, Callable[..., Any]]:
    """``llm_query`` and ``llm_query_batched`` over ``lm`` (None: the configured LM at call time)."""

    def llm_query(prompt: str) -> str:
        """Ask the sub-LM one prompt; its answer text."""
        if not prompt:
            raise ValueError("prompt cannot be empty")
        budget.reserve(1)
        return run_sync(query_lm(lm, prompt))

    def llm_query_batched(prompts: list[str]) -> list[str]:
        """Ask the sub-LM every prompt concurrently; the answers in order.

        An LM failure (or a missing LM) becomes that prompt's ``"[ERROR] ..."`` answer, so one
        bad prompt does not lose the others; any other exception is a bug and propagates.
        """
        if not prompts:
            return []
        budget.reserve(len(prompts))
        return run_sync(_query_all(lm, list(prompts), concurrency))

    return {"llm_query": llm_query, "llm_query_batched": llm_query_batched}


async def _query_all(lm: Any, prompts: list[str], concurrency: int) -> list[str]:
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(prompt: str) -> str:
        async with gate:
            try:
                return await query_lm(lm, prompt)
            except (LMError, ConfigurationError) as exc:
                return f"[ERROR] {exc}"

    return list(await asyncio.gather(*(one(prompt) for prompt in prompts)))


# -- the user's tools --------------------------------------------------------------------------


def normalize_tools(tools: Sequence[Any] | None) -> dict[str, Tool]:
    """The tools by name: each a :class:`~dspex.Tool` or a callable to wrap in one."""
    if not tools:
        return {}
    if isinstance(tools, Mapping):
        raise TypeError(
            "tools must be a list, not a dict. Change tools={'name': func} to tools=[func] "
            "(tool names are inferred from function names, or use dspy.Tool(func, name='custom_name'))"
        )
    normalized: dict[str, Tool] = {}
    for item in tools:
        tool = _as_tool(item)
        name = tool.name or ""
        if name in normalized:
            raise ConfigurationError(f"Duplicate tool name '{name}'")
        normalized[name] = tool
    return normalized


def _as_tool(item: Any) -> Tool:
    if isinstance(item, Tool):
        return item
    if not callable(item):
        raise TypeError(f"Tool {item!r} must be callable, got {type(item).__name__}")
    return Tool(item)


def check_namespace(
    tools: Mapping[str, Tool], input_names: Sequence[str], output_names: Sequence[str]
) -> None:
    """ConfigurationError when a tool, input or output name collides with what RLM owns or another name."""
    for name in tools:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ConfigurationError(
                f"Invalid tool name '{name}': must be a valid Python identifier and not a keyword"
            )
        if name in RESERVED_SANDBOX_NAMES:
            raise ConfigurationError(f"Tool name '{name}' conflicts with built-in sandbox function")
    if FACTORY_KEYWORD in input_names:
        raise ConfigurationError(
            f"'{FACTORY_KEYWORD}' is reserved for RLM runtime configuration, not a signature input."
        )
    _refuse_overlap(
        input_names, RESERVED_SANDBOX_NAMES, "Input fields conflict with built-in sandbox functions"
    )
    _refuse_overlap(input_names, tools.keys(), "Input fields conflict with user tools")
    _refuse_overlap(output_names, RESERVED_RESULT_NAMES, "Output fields conflict with RLM result metadata")


def _refuse_overlap(names: Sequence[str], taken: Any, message: str) -> None:
    clashes = sorted(set(names) & set(taken))
    if clashes:
        raise ConfigurationError(f"{message}: {clashes}")


def interpreter_tool(tool: Tool) -> Callable[..., Any]:
    """``tool`` as the interpreter calls it: synchronously, by keyword or position.

    The call goes through ``tool.acall`` on the event loop, so argument checking, callbacks and
    async functions work as for any dspex tool call. The wrapper keeps the function's name and
    signature, which interpreters read to describe the tool to the code.
    """
    signature = _signature_of(tool.func)

    def invoke(*args: Any, **kwargs: Any) -> Any:
        arguments = _keyword_arguments(signature, args, kwargs)
        return run_sync(tool.acall(**arguments))

    functools.update_wrapper(invoke, tool.func)
    if signature is not None:
        invoke.__signature__ = signature  # type: ignore[attr-defined]
    return invoke


def _signature_of(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # some builtins have none: such a tool takes keywords only
        return None


def _keyword_arguments(
    signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The call's arguments by name (a ``TypeError`` for arguments the function cannot take)."""
    if signature is None:
        if args:
            raise TypeError("this tool takes keyword arguments only")
        return kwargs
    bound = signature.bind(*args, **kwargs)
    arguments: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise TypeError(f"tool arguments are passed by name; *{name} cannot take {value!r}")
        else:
            arguments[name] = value
    return arguments
