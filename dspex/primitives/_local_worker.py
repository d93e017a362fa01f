"""The child side of :class:`~dspex.primitives.local_interpreter.LocalInterpreter`.

Run as a script (``python -I _local_worker.py``), never imported for use: importing it does
nothing, and :func:`serve` refuses to run unless this file is the process's ``__main__`` (a dspex
program may name any ``dspex.*`` object by import path, and serving would take over the
importing process's standard streams).

Protocol: one JSON object per line. The host writes requests (``run``, tool replies) to stdin;
the worker writes on a private copy of the original stdout (``ready``, ``tool_call``, and one
outcome per ``run``). File descriptors 1 and 2 point at /dev/null between runs and at a capture
file during one, so nothing the code or a library prints can corrupt the protocol channel.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import itertools
import json
import keyword
import os
import queue
import sys
import tempfile
import threading
from typing import Any, BinaryIO, TextIO

FILENAME = "<local-interpreter>"
# Globals of the session that tools and variables may not replace.
OWNED_NAMES = frozenset({"SUBMIT", "__builtins__"})


class _Submitted(BaseException):
    """Raised by SUBMIT; a BaseException so ``except Exception`` in the code cannot swallow it."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__()
        self.payload = payload


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _as_json_value(value: Any) -> Any:
    """``value`` itself when it survives JSON, else its repr (the host gets something readable)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _is_plain_name(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


class _Channel:
    """Reads the host's lines on a thread: tool replies go to the waiting call, the rest queue up."""

    def __init__(self, incoming: BinaryIO, outgoing: TextIO) -> None:
        self._incoming = incoming
        self._outgoing = outgoing
        self._write_lock = threading.Lock()
        self._waiting: dict[int, queue.Queue[dict[str, Any] | None]] = {}
        self._waiting_lock = threading.Lock()
        self._call_ids = itertools.count(1)
        self.requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read_loop, name="local-interpreter-reader", daemon=True)
        self.reader.start()

    def write(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, allow_nan=False, separators=(",", ":"))
        with self._write_lock:
            self._outgoing.write(line + "\n")
            self._outgoing.flush()

    def call_tool(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Ask the host to run tool ``name``; block until it answers."""
        call_id = next(self._call_ids)
        reply_box: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=1)
        with self._waiting_lock:
            self._waiting[call_id] = reply_box
        try:
            try:
                self.write({"type": "tool_call", "id": call_id, "name": name, "args": args, "kwargs": kwargs})
            except (TypeError, ValueError) as exc:
                raise TypeError(f"arguments of tool {name!r} must be JSON-compatible: {exc}") from None
            reply = reply_box.get()
        finally:
            with self._waiting_lock:
                self._waiting.pop(call_id, None)
        if reply is None:
            raise EOFError("the host closed the interpreter while a tool call was waiting")
        if reply["type"] == "tool_failed":
            raise RuntimeError(reply.get("error"))
        return reply.get("value")

    def _read_loop(self) -> None:
        try:
            for raw in self._incoming:
                message = json.loads(raw)
                if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                    raise ValueError("every message must be a JSON object with a 'type'")
                if message["type"] in ("tool_done", "tool_failed"):
                    self._deliver_reply(message)
                else:
                    self.requests.put(message)
        except Exception as exc:  # a broken host: report it as the next request
            self.requests.put({"type": "broken", "error": _describe(exc)})
        else:
            self.requests.put(None)
        with self._waiting_lock:
            waiting = list(self._waiting.values())
        for reply_box in waiting:
            reply_box.put(None)

    def _deliver_reply(self, message: dict[str, Any]) -> None:
        with self._waiting_lock:
            reply_box = self._waiting.get(message.get("id"))  # type: ignore[arg-type]
        if reply_box is None:
            raise ValueError(f"a tool reply for no pending call: {message.get('id')!r}")
        reply_box.put(message)


class _Capture:
    """Points fds 1 and 2 (and ``sys.stdout``/``sys.stderr``) at a temporary file for one run."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self._streams = (stdout, stderr)
        self.text = ""

    def __enter__(self) -> _Capture:
        # Code may have rebound sys.stdout in an earlier run; output goes to the real streams.
        sys.stdout, sys.stderr = self._streams
        self._flush()
        self._file = tempfile.TemporaryFile()
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *_: Any) -> None:
        self._flush()
        sys.stdout, sys.stderr = self._streams
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", errors="replace").rstrip("\n")
        self._file.close()

    def _flush(self) -> None:
        for stream in (sys.stdout, sys.stderr, *self._streams):
            with contextlib.suppress(Exception):  # a stream the code replaced or closed
                stream.flush()


class _Session:
    """The persistent namespace and the rules of one run."""

    def __init__(self, channel: _Channel, stdout: TextIO, stderr: TextIO) -> None:
        self._channel = channel
        self._stdout, self._stderr = stdout, stderr
        self._threads_at_start = set(threading.enumerate())
        self.namespace: dict[str, Any] = {}
        self._tool_names: list[str] = []
        self._output_names: list[str] | None = None

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        self._install_globals(request.get("tools", []), request.get("output_fields"))
        variables = request.get("variables", {})
        clashes = sorted(set(variables) & (OWNED_NAMES | set(self._tool_names)))
        if clashes:
            raise ValueError(f"variables would replace the interpreter's globals: {clashes}")
        self.namespace.update(variables)
        with _Capture(self._stdout, self._stderr) as captured:
            outcome = self._evaluate(request.get("code", ""))
        outcome["stdout"] = captured.text
        leaked = [t.name for t in threading.enumerate() if t not in self._threads_at_start and t.is_alive()]
        if leaked:
            return {"type": "fatal", "error": f"the code left threads running after it returned: {leaked}"}
        return outcome

    def _evaluate(self, code: str) -> dict[str, Any]:
        try:
            module = ast.parse(code, filename=FILENAME, mode="exec")
        except SyntaxError as exc:
            return {"type": "syntax_error", "error": str(exc)}
        tail = module.body.pop() if module.body and isinstance(module.body[-1], ast.Expr) else None
        assert tail is None or isinstance(tail, ast.Expr)
        try:
            exec(compile(module, FILENAME, "exec"), self.namespace)
            value = None
            if tail is not None:
                value = eval(compile(ast.Expression(tail.value), FILENAME, "eval"), self.namespace)
        except _Submitted as submitted:
            return {"type": "submitted", "value": _as_json_value(submitted.payload)}
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the code's own errors
            return {"type": "code_error", "error": _describe(exc)}
        return {"type": "value", "value": _as_json_value(value)}

    def _install_globals(self, tool_names: list[str], output_fields: list[dict[str, Any]] | None) -> None:
        bad = [name for name in tool_names if not _is_plain_name(name) or name in OWNED_NAMES]
        if bad:
            raise ValueError(f"invalid tool names: {bad}")
        output_names = None if output_fields is None else [field.get("name") for field in output_fields]
        if output_names is not None and (
            not all(_is_plain_name(name) for name in output_names)
            or len(set(output_names)) != len(output_names)
        ):
            raise ValueError(f"invalid output field names: {output_names}")
        for stale in self._tool_names:  # a tool the host no longer offers must not stay callable
            self.namespace.pop(stale, None)
        self._tool_names = list(tool_names)
        self._output_names = output_names  # type: ignore[assignment]
        for name in tool_names:
            self.namespace[name] = self._tool_proxy(name)
        self.namespace["__builtins__"] = dict(vars(builtins))  # fresh: code may have edited the old one
        self.namespace["SUBMIT"] = self._submit

    def _tool_proxy(self, name: str) -> Any:
        def call_host_tool(*args: Any, **kwargs: Any) -> Any:
            return self._channel.call_tool(name, list(args), kwargs)

        call_host_tool.__name__ = call_host_tool.__qualname__ = name
        return call_host_tool

    def _submit(self, *args: Any, **kwargs: Any) -> None:
        names = self._output_names
        if names is None:
            if len(args) != 1 or kwargs:
                raise TypeError("SUBMIT takes exactly one value when no output fields are configured")
            raise _Submitted({"output": args[0]})
        if args and kwargs:
            raise TypeError("SUBMIT takes either positional or keyword values, not both")
        if len(args) > len(names):
            raise TypeError(f"SUBMIT got {len(args)} values for the output fields {names}")
        values = dict(zip(names, args, strict=False)) if args else dict(kwargs)
        if set(values) != set(names):
            missing = sorted(set(names) - set(values))
            unexpected = sorted(set(values) - set(names))
            raise TypeError(
                f"SUBMIT needs the output fields {names}; missing {missing}, unexpected {unexpected}"
            )
        raise _Submitted(values)


def serve() -> None:
    """The worker's main loop: announce readiness, then answer ``run`` requests until stdin closes."""
    if __name__ != "__main__":
        raise RuntimeError("the local interpreter worker only runs as its own process's script")
    protocol_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.set_inheritable(protocol_out.fileno(), False)  # subprocesses of the code must not write on it
    stdout, stderr = sys.stdout, sys.stderr
    stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # keeps prints and errors in order
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    channel = _Channel(sys.stdin.buffer, protocol_out)
    session = _Session(channel, stdout, stderr)
    channel.write({"type": "ready"})
    while True:
        request = channel.requests.get()
        if request is None:
            return
        if request["type"] != "run":
            channel.write({"type": "fatal", "error": f"unexpected request {request!r}"})
            return
        try:
            outcome = session.run(request)
        except Exception as exc:
            outcome = {"type": "fatal", "error": _describe(exc)}
        channel.write(outcome)
        if outcome["type"] == "fatal":
            return


if __name__ == "__main__":
    serve()
    os._exit(0)  # threads the code left behind must not keep the process alive
