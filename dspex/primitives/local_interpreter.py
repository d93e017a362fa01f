"""``LocalInterpreter``: model-written Python in a persistent local CPython process (DSPy 3.4.1).

NOT A SANDBOX. The code runs as the host user, in a child process started with
``sys.executable -I`` (isolated mode: ``PYTHON*`` variables, the user site directory and the
current directory are not on the import path). It can read and write the user's files, read the
whole environment the host process has (API keys included), open network connections and start
processes. The child only keeps the code away from the host's memory, its stdout/stderr and its
lifetime (a timeout kills the child's whole process group). Use it for code you would run
yourself; use :class:`~dspex.primitives.python_interpreter.PythonInterpreter` (Deno + Pyodide)
for anything else.

Cluster workers never use it: a saved program carries no interpreter factory (``RLM``,
``ProgramOfThought`` and ``CodeAct`` are rebuilt with the sandbox default), and a predictor worker
runs code only through its own sandbox pool (:mod:`dspex.sandbox.worker`).

One session per instance: names defined by one ``execute`` are seen by the next. Host ``tools``
(sync or async callables, JSON-compatible arguments and results) are global functions of the
code; ``SUBMIT(...)`` ends the run with a :class:`~dspex.primitives.code_interpreter.FinalOutput`.
Otherwise ``execute`` returns the value of the code's last expression when it has one that is not
None, else what the code printed (stdout and stderr together), else None.

    with LocalInterpreter(tools={"lookup": lookup}) as repl:
        repl.execute("x = lookup('a')")
        repl.execute("x * 2")
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import json
import keyword
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from dspex.errors import CodeExecutionError, CodeInterpreterError, ConfigurationError
from dspex.primitives.code_interpreter import FinalOutput
from dspex.utils.callback import BaseCallback, with_callbacks

__all__ = ["LocalInterpreter"]

_WORKER_SCRIPT = Path(__file__).with_name("_local_worker.py")
# Seconds a fresh worker has to say it is ready (a loaded 2-core machine needs more than DSPy's 10).
_STARTUP_SECONDS = 30.0
# Globals of the session that tools and variables may not take.
_OWNED_NAMES = frozenset({"SUBMIT", "__builtins__"})


def _plain_name(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


def _bad_names(names: Any, taken: frozenset[str] | set[str] = _OWNED_NAMES) -> list[Any]:
    return [name for name in names if not _plain_name(name) or name in taken]


def _json_problem(value: Any) -> str | None:
    """Why ``value`` cannot cross the process boundary as JSON, or None when it can."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def _check_tools(tools: Mapping[str, Any]) -> None:
    bad = _bad_names(tools)
    if bad:
        raise ConfigurationError(
            f"LocalInterpreter tool names must be Python identifiers other than keywords, SUBMIT "
            f"and __builtins__; invalid: {bad!r}"
        )
    not_callable = [name for name, tool in tools.items() if not callable(tool)]
    if not_callable:
        raise ConfigurationError(f"LocalInterpreter tools must be callables; not callable: {not_callable!r}")


def _check_output_fields(fields: list[dict[str, Any]] | None) -> None:
    if fields is None:
        return
    if not all(isinstance(field, Mapping) for field in fields):
        raise ConfigurationError("LocalInterpreter output_fields must be a list of dicts with a 'name'")
    names = [field.get("name") for field in fields]
    bad = [name for name in names if not _plain_name(name)]
    if bad:
        raise ConfigurationError(
            f"LocalInterpreter output field names must be Python identifiers; invalid: {bad!r}"
        )
    repeated = sorted({str(name) for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigurationError(
            f"LocalInterpreter output field names must be unique; repeated: {repeated!r}"
        )
    problem = _json_problem(fields)
    if problem is not None:
        raise ConfigurationError(f"LocalInterpreter output_fields must be JSON-compatible: {problem}")


def _resolve_awaitable(awaitable: Any) -> Any:
    """The result of an async tool, from a thread that may or may not run an event loop."""

    async def wait() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    # This thread's loop is busy running our caller: a helper thread gets a loop of its own.
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(wait())
        except BaseException as exc:  # handed back to the waiting caller below
            box["error"] = exc

    helper = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
    helper.start()
    helper.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class _Worker:
    """One child process: the pipe to it and a thread turning its stdout into a queue of lines."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        # bytes: a line, None: the worker closed its stdout, an exception: re-raise in execute()
        self.inbox: queue.Queue[bytes | BaseException | None] = queue.Queue()
        self.killed = False
        self._send_lock = threading.Lock()
        threading.Thread(target=self._pump, name="local-interpreter-pump", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.inbox.put(line)
        self.inbox.put(None)

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, allow_nan=False, separators=(",", ":")).encode() + b"\n"
        assert self.process.stdin is not None
        with self._send_lock:
            if self.killed:
                return  # a tool finished after the session ended: nobody is listening
            self.process.stdin.write(line)
            self.process.stdin.flush()

    def kill(self) -> None:
        """End the worker and everything it started (its process group)."""
        with self._send_lock:
            self.killed = True
        if os.name == "posix":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()


class LocalInterpreter:
    """Python in a persistent local subprocess: DSPy 3.4.1's ``LocalInterpreter``. Not a sandbox.

    ``tools``: host callables the code calls by name (JSON-compatible arguments and results; an
    async tool is awaited). ``output_fields``: ``[{"name": ...}, ...]`` for a typed ``SUBMIT``
    (without them ``SUBMIT`` takes one value, returned as ``{"output": value}``).
    ``execution_timeout``: seconds one ``execute`` may take, tool calls included; past it the
    worker is killed and the session ends (a host tool still running finishes on its daemon
    thread, its result discarded). ``callbacks``: this instance's callback handlers.
    """

    execution_instructions = (
        "Python runs in a persistent local CPython subprocess. Variables, imports and functions persist "
        "between executions; values passed in or returned must be JSON-compatible. Host tools and SUBMIT "
        "are global functions. Every thread the code starts must finish before the code returns (use "
        "executors as context managers), or the session ends."
    )
    callback_kind = "interpreter"

    def __init__(
        self,
        tools: dict[str, Callable[..., Any]] | None = None,
        output_fields: list[dict[str, Any]] | None = None,
        *,
        execution_timeout: float | None = None,
        callbacks: list[BaseCallback] | None = None,
    ) -> None:
        if tools is not None and not isinstance(tools, Mapping):
            raise ConfigurationError(
                f"LocalInterpreter tools must be a dict of name -> callable, not {type(tools).__name__}"
            )
        if execution_timeout is not None and (
            isinstance(execution_timeout, bool)
            or not isinstance(execution_timeout, int | float)
            or not execution_timeout > 0
        ):
            raise ConfigurationError(
                f"LocalInterpreter execution_timeout must be a positive number of seconds or None, "
                f"not {execution_timeout!r}"
            )
        self.tools: dict[str, Callable[..., Any]] = dict(tools or {})
        _check_tools(self.tools)
        fields = (
            None
            if output_fields is None
            else [dict(field) if isinstance(field, Mapping) else field for field in output_fields]
        )
        _check_output_fields(fields)
        self.output_fields = fields
        self.execution_timeout = execution_timeout
        self.callbacks = list(callbacks or [])
        self._worker: _Worker | None = None
        self._ended = False
        self._running = threading.Lock()  # one execute at a time: the session has one namespace

    def __repr__(self) -> str:
        state = "ended" if self._ended else "running" if self._worker is not None else "not started"
        return f"LocalInterpreter(tools={sorted(self.tools)}, {state})"

    # -- lifecycle ----------------------------------------------------------------------------

    @with_callbacks
    def start(self) -> None:
        """Start the worker now (else the first ``execute`` does); a no-op while it runs."""
        if self._ended:
            raise CodeInterpreterError(
                "LocalInterpreter session has ended; create a new LocalInterpreter for a fresh session"
            )
        if self._worker is not None:
            return
        # Spawned here, on a real instance, and nowhere reachable by import path alone: a saved
        # program may name any dspex object, and a bare spawning function would be one.
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", str(_WORKER_SCRIPT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # the worker sends the code's output in its replies
                start_new_session=os.name == "posix",  # its own process group, killed as one
            )
        except OSError as exc:
            raise CodeInterpreterError(f"LocalInterpreter could not start {sys.executable}: {exc}") from exc
        self._worker = _Worker(process)
        greeting = self._next_message(
            time.monotonic() + _STARTUP_SECONDS,
            f"the worker did not start within {_STARTUP_SECONDS:g} seconds",
        )
        if greeting.get("type") != "ready":
            self._end_with(f"the worker's first message was not 'ready': {greeting!r}")

    @with_callbacks
    def shutdown(self) -> None:
        """Kill the worker and drop the session's state; calling it again does nothing."""
        self._close()

    def _close(self) -> None:
        if self._ended:
            return
        self._ended = True
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.kill()

    def __enter__(self) -> LocalInterpreter:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()

    def __call__(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        return self.execute(code, variables)

    def _end_with(self, problem: str, cause: BaseException | None = None) -> NoReturn:
        """The session cannot go on: kill the worker and raise (later calls raise too)."""
        self._close()
        raise CodeInterpreterError(f"LocalInterpreter: {problem}") from cause

    # -- running code -------------------------------------------------------------------------

    @with_callbacks
    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        """Run ``code`` in the session, after binding ``variables`` (JSON-compatible) as globals.

        Returns a :class:`FinalOutput` when the code called ``SUBMIT``, else the last expression's
        value (when not None), else the captured output or None. Raises ``SyntaxError`` for code
        that does not parse, :class:`CodeExecutionError` for an exception of the code (a failed
        tool included), :class:`CodeInterpreterError` for bad arguments, a timeout or a dead worker,
        :class:`~dspex.errors.ConfigurationError` (a ``ValueError``) for tools or output fields
        changed to invalid ones since construction.
        """
        if not self._running.acquire(blocking=False):
            raise CodeInterpreterError("LocalInterpreter is already running an execute() call")
        try:
            request = self._run_request(code, {} if variables is None else variables)
            if self._worker is None:
                self.start()
            return self._outcome(self._exchange(request))
        finally:
            self._running.release()

    def _run_request(self, code: Any, variables: Any) -> dict[str, Any]:
        """The ``run`` message for the worker, after checking everything it carries."""
        # A module (RLM) may have changed these since construction; a bad one is a ValueError, as in DSPy.
        _check_tools(self.tools)
        _check_output_fields(self.output_fields)
        if not isinstance(code, str):
            raise CodeInterpreterError(f"code must be a string, not {type(code).__name__}")
        if not isinstance(variables, dict):
            raise CodeInterpreterError(f"variables must be a dict, not {type(variables).__name__}")
        bad = _bad_names(variables, _OWNED_NAMES | set(self.tools))
        if bad:
            raise CodeInterpreterError(
                "variable names must be Python identifiers other than keywords, SUBMIT, __builtins__ "
                f"and the tool names; invalid: {bad!r}"
            )
        problem = _json_problem(variables)
        if problem is not None:
            raise CodeInterpreterError(f"variables must be JSON-compatible: {problem}")
        return {
            "type": "run",
            "code": code,
            "variables": variables,
            "tools": list(self.tools),
            "output_fields": self.output_fields,
        }

    def _exchange(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one run, serve the tool calls it makes, and return its outcome message."""
        worker = self._worker
        assert worker is not None
        deadline = None if self.execution_timeout is None else time.monotonic() + self.execution_timeout
        overdue = (
            "the worker stopped answering"
            if self.execution_timeout is None
            else f"the execution exceeded its timeout of {self.execution_timeout:g} s; the session ended"
        )
        try:
            worker.send(request)
        except OSError as exc:
            self._end_with(f"could not send the code to the worker ({exc})", exc)
        tool_threads: list[threading.Thread] = []
        message = self._next_message(deadline, overdue)
        while message.get("type") == "tool_call":
            tool_threads.append(self._serve_tool_call(worker, message))
            message = self._next_message(deadline, overdue)
        for thread in tool_threads:  # the worker answered, so these are finishing their replies
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self._end_with(overdue)
        return message

    def _next_message(self, deadline: float | None, overdue: str) -> dict[str, Any]:
        worker = self._worker
        if worker is None:
            self._end_with("the session ended while waiting for the worker")
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            item = worker.inbox.get(timeout=wait)
        except queue.Empty:
            self._end_with(overdue)
        if item is None:
            self._end_with("the worker process exited unexpectedly")
        if isinstance(item, BaseException):  # an interrupt raised in a tool: the caller's to handle
            self._close()
            raise item
        try:
            message = json.loads(item)
        except ValueError as exc:
            self._end_with(f"the worker sent a line that is not JSON: {item[:200]!r}", exc)
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._end_with(f"the worker sent a message without a type: {message!r}")
        return message

    def _outcome(self, message: dict[str, Any]) -> Any:
        kind = message["type"]
        if kind == "value":
            value = message.get("value")
            return value if value is not None else (message.get("stdout") or None)
        if kind == "submitted":
            return FinalOutput(message.get("value"))
        if kind == "code_error":
            raise CodeExecutionError(str(message.get("error")))
        if kind == "syntax_error":
            raise SyntaxError(message.get("error"))
        if kind == "fatal":
            self._end_with(f"the session ended: {message.get('error')}")
        self._end_with(f"the worker sent an unknown reply: {message!r}")

    # -- host tools ---------------------------------------------------------------------------

    @with_callbacks
    def invoke_tool(self, tool_name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Call host tool ``tool_name`` (awaiting an async one) and return its result."""
        tool = self.tools.get(tool_name)
        if tool is None:
            raise CodeInterpreterError(f"unknown tool {tool_name!r}; the tools are {sorted(self.tools)}")
        result = tool(*args, **kwargs)
        return _resolve_awaitable(result) if inspect.isawaitable(result) else result

    def _serve_tool_call(self, worker: _Worker, call: dict[str, Any]) -> threading.Thread:
        """Answer one tool call on its own thread, so the deadline is kept while the tool runs."""

        def answer() -> None:
            try:
                value = self.invoke_tool(
                    str(call.get("name")), call.get("args") or [], call.get("kwargs") or {}
                )
                problem = _json_problem(value)
                if problem is not None:
                    raise TypeError(
                        f"tool {call.get('name')!r} returned a value that is not JSON-compatible: {problem}"
                    )
                reply = {"type": "tool_done", "id": call.get("id"), "value": value}
            except Exception as exc:
                reply = {"type": "tool_failed", "id": call.get("id"), "error": f"{type(exc).__name__}: {exc}"}
            except BaseException as exc:
                worker.inbox.put(exc)  # the code waits for this reply forever: wake execute() instead
                return
            with contextlib.suppress(OSError, ValueError):  # the worker is gone: nothing to answer
                worker.send(reply)

        # the caller's context (settings, active callbacks) goes with the tool
        thread = threading.Thread(
            target=contextvars.copy_context().run, args=(answer,), name="local-interpreter-tool", daemon=True
        )
        thread.start()
        return thread
