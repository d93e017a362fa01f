"""``PythonInterpreter``: DSPy 3.4.1's sandboxed Python, on Deno + Pyodide, offline and bounded.

The model's code runs in Pyodide (CPython on WebAssembly) inside a Deno process started with no
network, no environment, no subprocesses, read access only to the Pyodide cache (revoked once
Pyodide is loaded) and the files a caller grants, and write access only to the granted files.
The host kills the process when one execution passes its wall time, the process passes its memory
limit or the protocol breaks; ``execute`` then raises a :class:`~dspex.sandbox.errors.SandboxError`
(a ``CodeInterpreterError``) and every later call does too: create a new interpreter (or take one
from a :class:`~dspex.sandbox.pool.SandboxPool`). Output past the limit stops the code with a
:class:`~dspex.sandbox.errors.SandboxOutputError` and the session lives on.

Example::

    with PythonInterpreter(tools={"lookup": lambda key: key.upper()}) as interpreter:
        interpreter.execute("x = lookup(key='a')")
        interpreter.execute("x * 2")        # 'AA': state survives between calls
        interpreter.execute("SUBMIT(x)")    # FinalOutput({'output': 'A'})
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import keyword
import logging
import os
import subprocess
import threading
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from dspex._sync import run_sync
from dspex.primitives.code_interpreter import (
    SIMPLE_TYPES,
    CodeExecutionError,
    CodeInterpreterError,
    FinalOutput,
)
from dspex.sandbox import install
from dspex.sandbox.errors import SandboxError, SandboxOutputError
from dspex.sandbox.process import SandboxLimits, SandboxProcess
from dspex.utils.callback import BaseCallback, _Announced, active_callbacks

__all__ = ["CodeExecutionError", "CodeInterpreterError", "FinalOutput", "PythonInterpreter", "SandboxLimits"]

logger = logging.getLogger(__name__)

_MOUNT_ROOT = "/sandbox"
# JSON-RPC's "server error" code (the -32000 to -32099 range is the application's): a tool failed.
_JSONRPC_APPLICATION_ERROR = -32000


def _canonical(path: PathLike[str] | str) -> str:
    """The real path Deno's permission check compares against (symlinks resolved)."""
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def _overlaps(first: str, second: str) -> bool:
    return first == second or first.startswith(second + os.sep) or second.startswith(first + os.sep)


def _jsonable(value: Any) -> Any:
    """A JSON-ready copy of a variable: models dumped, tuples and sets as lists (sets sorted)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, BaseModel):
        return _jsonable(_dump_model(value))
    if isinstance(value, dict):
        return {key if isinstance(key, str) else str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (set, frozenset)):
        items = [_jsonable(item) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    try:
        return _jsonable(to_jsonable_python(value))
    except PydanticSerializationError:
        raise CodeInterpreterError(f"Unsupported value type: {type(value).__name__}") from None


def _dump_model(value: BaseModel) -> Any:
    try:
        return value.model_dump(mode="json")
    except PydanticSerializationError as exc:
        raise CodeInterpreterError(f"Unable to serialize {type(value).__name__} as JSON: {exc}") from exc


def _tool_value(result: Any) -> Any:
    """A tool's result as the sandbox sees it: ``None`` as ``""``, JSON values as such, else ``str``."""
    if result is None:
        return ""
    if isinstance(result, str):
        return result
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        try:
            result = dataclasses.asdict(result)
        except TypeError:
            return str(result)
    if isinstance(result, tuple) and hasattr(result, "_asdict"):
        result = result._asdict()
    try:
        value = _jsonable(result)
        json.dumps(value, allow_nan=False)
    except (CodeInterpreterError, TypeError, ValueError):
        if isinstance(result, BaseModel):
            raise
        return str(result)
    return value


def _parameters(fn: Callable[..., Any]) -> list[dict[str, Any]]:
    """A tool's parameters for the generated sandbox wrapper: names, simple types, JSON defaults."""
    try:  # string annotations (from __future__ import annotations) resolved where they can be
        signature = inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        signature = inspect.signature(fn)
    params = []
    for name, parameter in signature.parameters.items():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        spec: dict[str, Any] = {"name": name}
        if parameter.annotation in SIMPLE_TYPES:
            spec["type"] = parameter.annotation.__name__
        if parameter.default is not inspect.Parameter.empty:
            spec["default"] = _jsonable(parameter.default)
        params.append(spec)
    return params


class PythonInterpreter:
    """A stateful, sandboxed Python session (DSPy 3.4.1's ``PythonInterpreter`` arguments).

    ``enable_read_paths`` / ``enable_write_paths`` are files copied into the sandbox at
    ``/sandbox/<basename>``; written files are copied back after each execute when ``sync_files``.
    ``enable_env_vars`` names host variables to copy into the sandbox's ``os.environ`` (Deno
    itself gets no environment); ``enable_network_access`` lists hosts the code may reach (none
    by default). ``tools`` are host functions callable from the code by name; ``output_fields``
    (``[{"name", "type"?}]``) give ``SUBMIT`` its signature. ``limits`` bound each execution.
    """

    execution_instructions = (
        "Python runs in Pyodide/WebAssembly. State persists across executions, but subprocesses and "
        "native extensions are unavailable. Python standard libraries such as re, json, collections, and "
        "math are available. Host filesystem, environment, and network access require explicit permission."
    )
    callback_kind = "interpreter"

    def __init__(
        self,
        deno_command: list[str] | None = None,
        enable_read_paths: list[PathLike[str] | str] | None = None,
        enable_write_paths: list[PathLike[str] | str] | None = None,
        enable_env_vars: list[str] | None = None,
        enable_network_access: list[str] | None = None,
        sync_files: bool = True,
        tools: dict[str, Callable[..., Any]] | None = None,
        output_fields: list[dict[str, Any]] | None = None,
        callbacks: list[BaseCallback] | None = None,
        *,
        limits: SandboxLimits | None = None,
        deno_dir: PathLike[str] | str | None = None,
    ) -> None:
        if isinstance(deno_command, dict):
            raise TypeError("deno_command must be a list of strings, not a dict")
        self.enable_read_paths = list(enable_read_paths or [])
        self.enable_write_paths = list(enable_write_paths or [])
        self.enable_env_vars = [str(name).strip() for name in enable_env_vars or []]
        self.enable_network_access = [str(host) for host in enable_network_access or []]
        self.sync_files = sync_files
        self.tools: dict[str, Callable[..., Any]] = dict(tools or {})
        self.output_fields = output_fields
        self.callbacks = list(callbacks or [])
        self.limits = limits or SandboxLimits()
        self.deno_dir = Path(deno_dir) if deno_dir is not None else install.default_deno_dir()
        self._mounts = self._plan_mounts()
        self._uses_default_deno_command = not deno_command
        self.deno_command = list(deno_command) if deno_command else self._default_command()
        self._process: SandboxProcess | None = None
        self._tools_registered = False
        self._session_ended = False
        self._in_tool_call = False
        self._lock = threading.Lock()

    # -- configuration -------------------------------------------------------------------------

    def _plan_mounts(self) -> dict[str, str]:
        """``{virtual path: host real path}``; basenames must be unique inside the sandbox."""
        mounts: dict[str, str] = {}
        for path in [*self.enable_read_paths, *self.enable_write_paths]:
            virtual = f"{_MOUNT_ROOT}/{os.path.basename(os.fspath(path))}"
            host = _canonical(path)
            if mounts.get(virtual, host) != host:
                raise CodeInterpreterError("Mounted files must have unique basenames inside the sandbox.")
            mounts[virtual] = host
        return mounts

    def _default_command(self) -> list[str]:
        pyodide = _canonical(install.pyodide_dir(self.deno_dir))
        writes = [_canonical(path) for path in self.enable_write_paths]
        protected = [_canonical(self.deno_dir), _canonical(install.RUNNER_PATH.parent)]
        if any(_overlaps(path, item) for path in writes for item in protected):
            raise CodeInterpreterError("Write paths cannot overlap PythonInterpreter runtime files.")
        reads = [pyodide, *self._mounts.values()]
        command = [
            "deno", "run", "--cached-only", "--no-prompt", "--no-config", "--no-lock",
            "--node-modules-dir=none", f"--allow-read={','.join(dict.fromkeys(reads))}",
            f"--v8-flags=--max-old-space-size={self.limits.memory_mb}",
        ]  # fmt: skip
        if writes:
            command.append(f"--allow-write={','.join(writes)}")
        if self.enable_network_access:
            command.append(f"--allow-net={','.join(self.enable_network_access)}")
        return [*command, str(install.RUNNER_PATH), pyodide]

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def deno_process(self) -> subprocess.Popen[bytes] | None:
        """The running Deno process (DSPy's attribute), or None before start and after shutdown."""
        return self._process.popen if self._process is not None else None

    def start(self) -> None:
        """Start the sandbox now (else the first ``execute`` does); a no-op while it runs (the
        callbacks hear every call, as in DSPy)."""
        with self._announce("interpreter_startup", {}), self._lock:
            self._ensure_process(announce=False)

    def _ensure_process(self, announce: bool = True) -> SandboxProcess:
        if self._process is not None and self._process.dead is not None:
            self._session_ended = True
            raise self._process.dead  # the limit or crash that ended the session, again
        if self._session_ended:
            raise CodeInterpreterError(
                "PythonInterpreter session has ended; create a new interpreter for a fresh session."
            )
        if self._process is None:
            with self._announce("interpreter_startup", {}) if announce else _Announcement(None):
                self._process = self._spawn()
                self._mount_files()
        return self._process

    def _spawn(self) -> SandboxProcess:
        return self._boot(self._launch())

    def _launch(self) -> SandboxProcess:
        """Start the Deno process (Pyodide not loaded yet)."""
        command = list(self.deno_command)
        env = install.deno_env(self.deno_dir)
        if self._uses_default_deno_command:
            install.check_installed(self.deno_dir)
            command[0] = install.find_deno()
        else:
            env = {**os.environ, **env}  # a caller's own command keeps the caller's environment (DSPy)
        cwd = self.deno_dir if self.deno_dir.is_dir() else Path.cwd()
        return SandboxProcess(command, env, cwd, self.limits)

    def _boot(self, process: SandboxProcess) -> SandboxProcess:
        """Load Pyodide and the guest in ``process``; stop it if that fails."""
        try:
            process.boot({"output_limit": self.limits.output_chars, "env": self._granted_env()})
        except BaseException:
            process.close(grace_s=0)
            raise
        return process

    def _granted_env(self) -> dict[str, str]:
        return {name: os.environ[name] for name in self.enable_env_vars if name in os.environ}

    def _mount_files(self) -> None:
        writes = {_canonical(path) for path in self.enable_write_paths}
        for virtual, host in self._mounts.items():
            if not os.path.exists(host):
                if host not in writes:
                    raise FileNotFoundError(f"Cannot mount non-existent file: {host}")
                Path(host).touch()
            self._checked_request("mount", {"host_path": host, "virtual_path": virtual})

    def shutdown(self) -> None:
        """End the session and stop its process; the interpreter cannot be started again."""
        with self._announce("interpreter_shutdown", {}):
            self._session_ended = True
            process, self._process = self._process, None
            if process is not None:
                self._release(process)

    def _release(self, process: SandboxProcess) -> None:
        """Where a finished session's process goes: stopped here; a pool's lease returns it."""
        process.close()

    def __enter__(self) -> PythonInterpreter:
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()

    # -- execution -----------------------------------------------------------------------------

    def __call__(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        return self.execute(code, variables)

    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        """Run ``code``; its last expression's value, else what it printed, or :class:`FinalOutput`.

        Raises ``SyntaxError`` for code that does not parse, :class:`CodeExecutionError` for an
        error of the code (the session lives on) and :class:`CodeInterpreterError` when the
        session is lost.
        """
        if self._in_tool_call:
            raise CodeInterpreterError("PythonInterpreter cannot execute recursively from one of its tools.")
        payload = self._serialize_variables(variables or {})
        with self._announce("interpreter_execute", {"code": code, "variables": variables}) as announced:
            with self._lock:
                self._ensure_process()
                self._register_tools()
                reply = self._checked_request("execute", {"code": code, "variables": payload}, tools=True)
                self._sync_files()
            announced.result = self._result(reply)
        return announced.result

    async def aexecute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        """``execute`` in a worker thread, so an event loop keeps serving while the code runs."""
        return await asyncio.to_thread(self.execute, code, variables)

    def _serialize_variables(self, variables: dict[str, Any]) -> str:
        for name in variables:
            if not name.isidentifier() or keyword.iskeyword(name):
                raise CodeInterpreterError(f"Invalid variable name: '{name}'")
        # NaN and infinities travel as JSON extensions that the guest's json.loads reads back
        return json.dumps({name: _jsonable(value) for name, value in variables.items()})

    def _register_tools(self) -> None:
        if self._tools_registered:
            return
        for name in self.tools:
            if not name.isidentifier() or keyword.iskeyword(name):
                raise CodeInterpreterError(f"Invalid tool name: '{name}'")
        spec = {
            "tools": [{"name": name, "parameters": _parameters(fn)} for name, fn in self.tools.items()],
            "outputs": self.output_fields or [],
        }
        self._checked_request("register", spec)
        self._tools_registered = True

    def _checked_request(self, method: str, params: dict[str, Any], tools: bool = False) -> dict[str, Any]:
        """A runner request whose runner-level failure (not the code's) ends the session."""
        process = self._ensure_process()
        try:
            reply = process.request(method, params, on_tool_call=self._on_tool_call if tools else None)
        except SandboxError:
            self._session_ended = True
            raise
        if "error" in reply:
            error = reply["error"]
            self._session_ended = True
            process.close(grace_s=0)
            raise CodeInterpreterError(
                f"the sandbox failed during {method}: {error.get('type')}: {error.get('message')}"
            )
        return dict(reply["result"])

    def _sync_files(self) -> None:
        if not self.sync_files:
            return
        for path in self.enable_write_paths:
            virtual = f"{_MOUNT_ROOT}/{os.path.basename(os.fspath(path))}"
            self._checked_request("sync", {"virtual_path": virtual, "host_path": _canonical(path)})

    @staticmethod
    def _result(reply: dict[str, Any]) -> Any:
        if "final" in reply:
            return FinalOutput(reply["final"])
        if "error" not in reply:
            return reply.get("output")
        error = reply["error"]
        kind, message = str(error.get("type", "Error")), str(error.get("message", ""))
        if kind == "SyntaxError":
            raise SyntaxError(f"Invalid Python syntax. message: {message}")
        if kind == "OutputLimitError":
            raise SandboxOutputError(f"{kind}: {message}")
        raise CodeExecutionError(f"{kind}: {error.get('args') or message}")

    # -- tools ---------------------------------------------------------------------------------

    def _on_tool_call(self, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Answer one tool call from the sandbox: ``{"result": {"value"}}`` or ``{"error": ...}``."""
        self._in_tool_call = True
        try:
            value = _tool_value(self.invoke_tool(name, kwargs))
        except Exception as exc:  # the tool's failure is the code's observation, not the host's
            return {"error": {"type": type(exc).__name__, "message": str(exc)}}
        finally:
            self._in_tool_call = False
        return {"result": {"value": value}}

    def invoke_tool(self, tool_name: str, kwargs: dict[str, Any]) -> Any:
        """Call the host tool ``tool_name`` (awaiting it when it is a coroutine function)."""
        with self._announce("interpreter_tool_call", {"tool_name": tool_name, "kwargs": kwargs}) as announced:
            if tool_name not in self.tools:  # heard by the callbacks, as a failed call of the code
                raise CodeInterpreterError(f"Unknown tool: {tool_name}")
            result = self.tools[tool_name](**kwargs)
            announced.result = run_sync(result) if inspect.iscoroutine(result) else result
        return announced.result

    # -- DSPy's protocol methods ---------------------------------------------------------------

    def _handle_tool_call(self, request: dict[str, Any]) -> None:
        """Answer one ``tool_call`` request (``{"id", "params": {"name", "kwargs"}}``) through
        :meth:`_write_message`, as DSPy's interpreter does: a JSON-RPC reply whose ``error`` names
        the exception's type in ``data.type`` (and in ``type``, which the sandbox's runner reads).

        The session's own loop answers the tool calls of running code through its process; this is
        the same answer for callers that drive the protocol themselves.
        """
        params = request.get("params") or {}
        reply = self._on_tool_call(str(params.get("name")), dict(params.get("kwargs") or {}))
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request.get("id")}
        if "error" in reply:
            error = reply["error"]
            message["error"] = {
                "code": _JSONRPC_APPLICATION_ERROR,
                "message": error["message"],
                "data": {"type": error["type"]},
                "type": error["type"],
            }
        else:
            message["result"] = reply["result"]
        self._write_message(
            json.dumps(message, allow_nan=False, default=str), "while returning a tool result"
        )

    def _write_message(self, message: str, context: str) -> None:
        """Send one protocol line (a JSON object) to the running sandbox."""
        process = self._process
        if process is None or process.dead is not None:
            raise CodeInterpreterError(f"no sandbox session is running {context}")
        process.send(json.loads(message))

    # -- callbacks -----------------------------------------------------------------------------

    def _announce(self, kind: str, inputs: dict[str, Any]) -> _Announcement:
        """DSPy's ``on_interpreter_*`` hooks, for the callbacks that define them."""
        callbacks = [cb for cb in active_callbacks(self) if hasattr(cb, f"on_{kind}_start")]
        return _Announcement(_Announced(callbacks, kind, self, inputs) if callbacks else None)


class _Announcement:
    """``with`` wrapper over an optional ``_Announced``: ``result`` set inside is reported at exit."""

    def __init__(self, announced: _Announced | None) -> None:
        self._announced = announced
        self.result: Any = None

    def __enter__(self) -> _Announcement:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        if self._announced is not None:
            self._announced.result = self.result
            self._announced.__exit__(exc_type, exc, traceback)
