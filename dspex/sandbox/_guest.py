"""The Python half of the sandbox: runs INSIDE Pyodide, never imported on the host.

``runner.js`` executes this file's source in a namespace of its own and calls the functions below.
The code the model writes runs in a separate ``__main__`` namespace (``_USER``), so it cannot
replace these functions by assigning to a global of the same name. Everything crosses the
JavaScript boundary as JSON text: one conversion, no proxies to leak or free.

Replies are JSON objects: ``{"output": ...}``, ``{"final": ...}`` (the code called ``SUBMIT``) or
``{"error": {"type", "message", "args"}}``.
"""

from __future__ import annotations

import builtins
import importlib
import io
import json
import os
import shutil
import sys
from typing import Any

_USER: dict[str, Any] = {}
_LIMITS = {"output": 8 * 1024 * 1024}
_TOOL_CALL: list[Any] = []  # the runner's JS bridge, set by init()
_BOOT: dict[str, Any] = {}  # builtins and module names after init, restored by reset()
_SIMPLE = {"str", "int", "float", "bool", "list", "dict", "NoneType"}


class OutputLimitError(Exception):
    """The code printed more than the sandbox passes back."""


class _Submitted(BaseException):
    """Raised by SUBMIT: ends the code like an exception no ``except Exception`` catches."""


class _BoundedWriter(io.TextIOBase):
    """sys.stdout/stderr for one execution: keeps up to the limit, then stops the code once."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit
        self.exceeded = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.exceeded:
            return len(text)  # the code caught the first error: drop the rest quietly
        self.size += len(text)
        if self.size > self.limit:
            self.exceeded = True
            raise OutputLimitError(f"output exceeded the sandbox limit of {self.limit} characters")
        self.parts.append(text)
        return len(text)

    def getvalue(self) -> str:
        return "".join(self.parts)


def _fresh_namespace() -> dict[str, Any]:
    return {"__name__": "__main__", "__builtins__": builtins}


def init(config_json: str, tool_call: Any) -> None:
    """Set the limits, the granted environment variables and the tool bridge; start a namespace."""
    config = json.loads(config_json)
    _LIMITS["output"] = int(config["output_limit"])
    for key, value in config.get("env", {}).items():
        os.environ[key] = value
    _TOOL_CALL[:] = [tool_call]
    # imported before the snapshot so that reset() never drops them
    importlib.import_module("pyodide.code")
    importlib.import_module("pyodide.ffi")
    _BOOT["builtins"] = dict(vars(builtins))
    _BOOT["modules"] = set(sys.modules)
    reset()


def reset() -> None:
    """Forget the session: variables, tools, SUBMIT, files, new modules, patched builtins.

    A pooled process serves consecutive sessions; this undoes what one session's code is likely
    to leave behind. A module imported at boot and mutated in place stays mutated: a pool with
    ``max_uses=1`` gives every session a fresh process instead.
    """
    _USER.clear()
    _USER.update(_fresh_namespace())
    _define_submit([])
    current = vars(builtins)
    for name in [name for name in current if name not in _BOOT["builtins"]]:
        del current[name]
    current.update(_BOOT["builtins"])
    for name in set(sys.modules) - _BOOT["modules"]:
        del sys.modules[name]
    for folder in ("/sandbox", "/tmp"):
        shutil.rmtree(folder, ignore_errors=True)
    os.makedirs("/tmp", exist_ok=True)


def _jsonable(value: Any) -> Any:
    """JSON-safe copy of a result: tuples and sets become lists, other objects their repr."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value  # NaN and infinities pass: the host's json.loads reads them back
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (set, frozenset)):
        items = [_jsonable(item) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return repr(value)


def _signature(params: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """``a: str, b: int = _d['b']`` for generated wrappers, and the defaults it refers to."""
    parts, defaults = [], {}
    for param in params:
        part = param["name"]
        if param.get("type") in _SIMPLE:
            part += ": " + ("type(None)" if param["type"] == "NoneType" else param["type"])
        if "default" in param:
            defaults[param["name"]] = param["default"]
            part += f" = _defaults[{param['name']!r}]"
        parts.append(part)
    return ", ".join(parts), defaults


def _tool_wrapper(name: str, params: list[dict[str, Any]]) -> Any:
    """A function named like the host tool, with its signature, that calls it over the bridge."""
    signature, defaults = _signature(params)
    names = ", ".join(f"{p['name']!r}: {p['name']}" for p in params)
    source = f"def {name}({signature}):\n    return _call({name!r}, {{{names}}})\n"
    scope: dict[str, Any] = {"_defaults": defaults, "_call": _call_tool}
    exec(source, scope)
    return scope[name]


def _call_tool(name: str, kwargs: dict[str, Any]) -> Any:
    from pyodide.ffi import run_sync

    reply = json.loads(run_sync(_TOOL_CALL[0](name, json.dumps(kwargs, default=repr))))
    if "error" in reply:
        raise RuntimeError(f"{reply['error']['type']}: {reply['error']['message']}")
    return reply["value"]


def _define_submit(outputs: list[dict[str, Any]]) -> None:
    """SUBMIT(...) with the output fields' signature, or SUBMIT(output) without fields."""
    fields = outputs or [{"name": "output"}]
    signature, _ = _signature(fields)
    names = ", ".join(f"{f['name']!r}: {f['name']}" for f in fields)
    source = f"def SUBMIT({signature}):\n    raise _Submitted({{{names}}})\n"
    scope: dict[str, Any] = {"_Submitted": _Submitted}
    exec(source, scope)
    _USER["SUBMIT"] = scope["SUBMIT"]


def register(spec_json: str) -> str:
    """Define the host tools and SUBMIT in the user namespace; returns their names."""
    spec = json.loads(spec_json)
    for tool in spec.get("tools", []):
        _USER[tool["name"]] = _tool_wrapper(tool["name"], tool.get("parameters", []))
    _define_submit(spec.get("outputs") or [])
    return json.dumps({"tools": [tool["name"] for tool in spec.get("tools", [])]})


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, SyntaxError):
        return {"type": "SyntaxError", "message": str(exc), "args": []}
    return {"type": type(exc).__name__, "message": str(exc), "args": _jsonable(list(exc.args))}


async def run(code: str, variables_json: str) -> str:
    """Run ``code`` in the session namespace; the reply as JSON text."""
    from pyodide.code import eval_code_async

    _USER.update(json.loads(variables_json))
    out = _BoundedWriter(_LIMITS["output"])
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = out
    try:
        result = await eval_code_async(code, _USER, filename="<sandbox>")
    except _Submitted as submitted:
        return json.dumps({"final": _jsonable(submitted.args[0])})
    except BaseException as exc:  # the model's code may raise anything, SystemExit too
        if out.exceeded:  # whatever it raised after the limit, the limit is the story
            limit = OutputLimitError(f"output exceeded the sandbox limit of {out.limit} characters")
            return json.dumps({"error": _error(limit)})
        return json.dumps({"error": _error(exc)})
    finally:
        sys.stdout, sys.stderr = saved
    if out.exceeded:  # the code caught the OutputLimitError and went on
        return json.dumps({"error": _error(OutputLimitError(f"output exceeded {out.limit} characters"))})
    return _reply_output(result, out)


def _reply_output(result: Any, out: _BoundedWriter) -> str:
    """The value of the last expression if any, else what the code printed (both bounded)."""
    if result is None:
        return json.dumps({"output": out.getvalue()})
    reply = json.dumps({"output": _jsonable(result)})
    if len(reply) > _LIMITS["output"] + 64:
        return json.dumps({"error": _error(OutputLimitError("the result exceeded the output limit"))})
    return reply
